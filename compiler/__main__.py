"""`python -m lfc` runs the CLI."""

from lfc.cli import main

main()
