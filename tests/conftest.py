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


def write_media_spec(
    folder: Path, model: Path, plugin: str, rows: str, columns: dict, /, **sections: dict
) -> Path:
    """A spec training `model` (linked as ../tiny-PLUGIN) with the PLUGIN plugin and template on
    tests/fixtures/mllm/ROWS (copied into `folder`/mllm), 2 LoRA steps; `sections` replace."""
    if not (folder / "mllm").exists():
        shutil.copytree(FIXTURES / "mllm", folder / "mllm")
    link = f"tiny-{plugin.replace('_', '-')}"
    (folder / link).symlink_to(model)
    spec = {
        "lfc": 1,
        "model": {"name_or_path": f"../{link}", "multimodal": {"plugin": plugin}},
        "template": plugin,
        "adapter": {"kind": "lora", "rank": 4},
        "data": {
            "datasets": [
                {
                    "path": f"mllm/{rows}",
                    "format": "sharegpt",
                    "media_dir": "mllm",
                    "columns": columns,
                }
            ],
            "cutoff_len": 512,
        },
        "train": {"max_steps": 2, "learning_rate": 0.01, "logging_steps": 1},
        **sections,
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path
