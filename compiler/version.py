"""The compiler version, recorded in every lock file."""

__version__ = "0.1.0"
