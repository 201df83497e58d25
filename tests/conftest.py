"""Shared fixtures: the example specs, a tiny local model, and compiled projects."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from lfc.pipeline import compile_file
from lfc.writer import write_project

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def example_specs() -> list[Path]:
    return sorted(EXAMPLES.glob("*.yaml"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with a BPE tokenizer, built once per test session."""
    pytest.importorskip("transformers")
    from lfc.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


def compile_example(name: str, out: Path, model: Path | None = None) -> Path:
    """Compile examples/NAME.yaml into `out`, pointing it at `model` if given."""
    spec_path = EXAMPLES / f"{name}.yaml"
    if model is not None:
        # The examples name the model relative to the project (../tiny-llama): put it there.
        target = out.parent / "tiny-llama"
        if not target.exists():
            shutil.copytree(model, target)
    write_project(compile_file(spec_path).files, out)
    return out


def write_variant(
    folder: Path, sections: dict, example: str = "quickstart", model: Path | None = None
) -> Path:
    """examples/EXAMPLE.yaml with some top-level sections replaced, as `folder`/spec.yaml.

    The example data is linked beside it, and `model` as ../tiny-llama's stand-in `tiny-llama`
    (the examples name the model relative to the project folder `folder`/run).
    """
    spec = yaml.safe_load((EXAMPLES / f"{example}.yaml").read_text())
    spec.update(sections)
    if not (folder / "data").exists():
        (folder / "data").symlink_to(EXAMPLES / "data")
    if model is not None and not (folder / "tiny-llama").exists():
        (folder / "tiny-llama").symlink_to(model)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path
