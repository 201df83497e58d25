"""lfc: compile a fine-tuning spec into a standalone, pinned training project.

The pipeline: `read_spec_file` (YAML with positions) -> `validate_spec` (Pydantic) ->
`compile_project` (pure render to bytes) -> `write_project` (atomic) / `verify_project`.
Importing lfc never imports torch or transformers.
"""

from lfc.version import __version__

__all__ = ["__version__"]
