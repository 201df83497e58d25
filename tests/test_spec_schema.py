"""The spec models themselves: described, frozen, strict; the tiny model is reproducible."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from lfc.schemas.spec import Spec
from lfc.validate import _models_in


def _all_models() -> list[type[BaseModel]]:
    seen: list[type[BaseModel]] = []
    todo: list[type[BaseModel]] = [Spec]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.append(model)
        for info in model.model_fields.values():
            todo.extend(_models_in(info.annotation))
    return seen


@pytest.mark.parametrize("model", _all_models(), ids=lambda m: m.__name__)
def test_every_field_is_described_and_models_are_strict(model: type[BaseModel]) -> None:
    assert model.model_config.get("frozen") is True
    assert model.model_config.get("extra") == "forbid"
    for name, info in model.model_fields.items():
        assert info.description, f"{model.__name__}.{name} has no description"


def test_spec_is_immutable() -> None:
    spec = Spec.model_validate(
        {
            "lfc": 1,
            "model": {"name_or_path": "m"},
            "template": "chatml",
            "data": {"datasets": [{"path": "a.json", "format": "alpaca"}]},
        }
    )
    with pytest.raises(ValidationError):
        spec.model.name_or_path = "other"  # type: ignore[misc]


def test_tiny_model_is_deterministic(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from lfc.tiny_model import build_tiny_model

    digests = []
    for name in ("a", "b"):
        out = build_tiny_model(tmp_path / name)
        digests.append(
            {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}
        )
    assert digests[0] == digests[1]
    assert {"model.safetensors", "tokenizer.json", "config.json"} <= set(digests[0])
