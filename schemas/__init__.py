"""The lfc spec models (Pydantic v2) and their JSON Schema."""

from lfc.schemas.spec import SPEC_VERSION, Spec

__all__ = ["SPEC_VERSION", "Spec"]
