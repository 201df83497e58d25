"""Check, at compile time, a local model's `quantization_config` against model.prequantized.

Reading config.json is I/O at the edge; `quantization_problem` itself is pure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lfc.errors import Problem, SpecError
from lfc.schemas.spec import Spec

# The quant_method names transformers writes that model.prequantized knows.
PREQUANTIZED_METHODS = ("gptq", "awq", "hqq", "eetq", "aqlm")


def local_quantization(folder: Path) -> dict[str, Any] | None:
    """`quantization_config` of `folder/config.json` ({} when it has none); None if unreadable."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    quantization = config.get("quantization_config") if isinstance(config, dict) else None
    return quantization if isinstance(quantization, dict) else {}


def quantization_problem(spec: Spec, path: str, quantization: dict[str, Any]) -> str | None:
    """What is wrong with model.prequantized for a model whose config holds `quantization`."""
    method = str(quantization.get("quant_method", "")).lower() or None
    prequantized = spec.model.prequantized
    if prequantized is None:
        if method in PREQUANTIZED_METHODS:
            return f"{path} is {method}-quantized (config.json): set model.prequantized: {method}"
        return None
    if method != prequantized:
        found = f"a {method} quantization_config" if method else "no quantization_config"
        return f"model.prequantized is {prequantized}, but {path}/config.json has {found}"
    if prequantized == "aqlm" and spec.pins.target == "cpu":
        if quantization.get("nbits_per_codebook") == 8:
            return (
                f"{path} has 8-bit AQLM codebooks, which aqlm 1.1.7 multiplies on the CPU with "
                "a numba kernel whose output is a view, and peft 0.21.2 adds LoRA's output to it "
                "in place, which autograd refuses: train it on pins.target cuda13.0"
            )
    return None


def check_local_quantization(
    spec: Spec, project: Path, where: tuple[str, tuple[int, int] | None]
) -> None:
    """Raise if a local model's quantization does not match model.prequantized (the problem is
    placed at model.prequantized when the spec sets it, else at model.name_or_path)."""
    path = spec.model.name_or_path
    quantization = local_quantization(Path(os.path.normpath(Path(project).absolute() / path)))
    if quantization is None:
        return  # a hub id, or a folder not there yet
    message = quantization_problem(spec, path, quantization)
    if message is not None:
        source, position = where
        line, column = position if position else (None, None)
        key = "model.prequantized" if spec.model.prequantized else "model.name_or_path"
        raise SpecError([Problem(source, line, column, key, message)])
