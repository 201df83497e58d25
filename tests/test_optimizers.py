"""GaLore, APOLLO and BAdam end to end on the tiny model: 2 steps each, on the CPU.

What is checked is what each optimizer must do, computed from the base model's own modules:
GaLore and APOLLO keep the Adam moments of every target matrix in its rank-r projection (the
shorter side replaced by the rank), the other parameters at full size; BAdam changes only the
active block's weights and keeps Adam state for that block alone.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from lfc.pipeline import compile_file
from lfc.writer import write_project

from conftest import EXAMPLES, write_variant
from project_env import run

torch = pytest.importorskip("torch")
safetensors = pytest.importorskip("safetensors.torch")
pytest.importorskip("galore_torch")
pytest.importorskip("apollo_torch")
pytest.importorskip("badam")

LAUNCH = ["-m", "accelerate.commands.launch", "--config_file", "accelerate/single.yaml"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _trained(
    tmp_path: Path, model: Path, optimizer: dict, steps: int = 2, save_steps: int | None = None
) -> Path:
    """A full fine-tuning project with `optimizer`, trained `steps` steps; its outputs folder."""
    train = yaml.safe_load((EXAMPLES / "quickstart.yaml").read_text())["train"]
    sections = {"adapter": {"kind": "full"}, "train": {**train, "optimizer": optimizer}}
    project = tmp_path / "run"
    write_project(compile_file(write_variant(tmp_path, sections, model=model)).files, project)
    ruff = str(Path(sys.executable).with_name("ruff"))
    for check in (["check", "--isolated", "."], ["format", "--isolated", "--check", "."]):
        run([ruff, *check], project, ENV)
    run([sys.executable, "data.py"], project, ENV)
    flags = ["--max_steps", str(steps), "--save_steps", str(save_steps or steps)]
    run([sys.executable, *LAUNCH, "train.py", *flags], project, ENV)
    outputs = project / "outputs"
    log = json.loads((outputs / f"checkpoint-{steps}" / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in log["log_history"] if "loss" in entry]
    assert len(losses) == steps and all(math.isfinite(loss) for loss in losses)
    return outputs


def _weights(folder: Path) -> dict:
    return safetensors.load_file(folder / "model.safetensors")


def _linear_weights(model_dir: Path, names: tuple[str, ...] | None) -> list[str]:
    """Weight names of the nn.Linear modules whose name ends in one of `names` (None: all)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return [
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and (names is None or name.rsplit(".", 1)[-1] in names)
    ]


def _projected(shape: torch.Size, rank: int) -> tuple[int, int]:
    """GaLore's std projection: the shorter side of an (out, in) matrix becomes the rank."""
    rows, columns = shape
    return (rows, rank) if rows >= columns else (rank, columns)


def _moments(outputs: Path, steps: int) -> tuple[list[dict], dict]:
    """The checkpoint's optimizer param groups and per-parameter state."""
    state = torch.load(outputs / f"checkpoint-{steps}" / "optimizer.pt", weights_only=False)
    return state["param_groups"], state["state"]


def _check_low_rank_state(outputs: Path, base: Path, targets: list[str], rank: int) -> None:
    groups, state = _moments(outputs, 2)
    base_weights = _weights(base)
    low_rank = [g for g in groups if "rank" in g]
    assert len(low_rank) == 1 and low_rank[0]["rank"] == rank
    # transformers lists the target weights in the model's order, in the group with the rank.
    assert len(low_rank[0]["params"]) == len(targets)
    for index, name in zip(low_rank[0]["params"], targets, strict=True):
        expected = _projected(base_weights[name].shape, rank)
        assert tuple(state[index]["exp_avg"].shape) == expected, name
        assert tuple(state[index]["exp_avg_sq"].shape) == expected, name
    full = [index for group in groups if "rank" not in group for index in group["params"]]
    sizes = sorted(state[index]["exp_avg"].numel() for index in full)
    others = sorted(w.numel() for n, w in base_weights.items() if n not in targets)
    assert sizes == others  # every other parameter has full-size moments


def test_galore_projects_the_target_moments(tmp_path: Path, tiny_model: Path) -> None:
    optimizer = {"kind": "galore", "rank": 4, "target": ["q_proj", "down_proj"]}
    outputs = _trained(tmp_path, tiny_model, optimizer)
    targets = _linear_weights(tiny_model, ("q_proj", "down_proj"))
    assert targets  # q_proj is square, down_proj wide: both projection sides are exercised
    _check_low_rank_state(outputs, tiny_model, targets, rank=4)
    trained, base = _weights(outputs), _weights(tiny_model)
    for name in targets:
        assert not torch.equal(trained[name], base[name]), name


def test_apollo_all_linear_projects_every_linear_weight(tmp_path: Path, tiny_model: Path) -> None:
    optimizer = {"kind": "apollo", "rank": 2, "scale_type": "tensor", "proj": "random"}
    outputs = _trained(tmp_path, tiny_model, optimizer)
    targets = _linear_weights(tiny_model, None)  # all-linear: the output head too
    assert "lm_head.weight" in targets
    _check_low_rank_state(outputs, tiny_model, targets, rank=2)


def test_layerwise_galore_steps_every_parameter(tmp_path: Path, tiny_model: Path) -> None:
    """Layer-wise: each parameter steps in its gradient hook; every weight still moves."""
    optimizer = {"kind": "galore", "rank": 4, "layerwise": True}
    outputs = _trained(tmp_path, tiny_model, optimizer)
    trained, base = _weights(outputs), _weights(tiny_model)
    assert trained.keys() == base.keys()
    for name in base:
        assert not torch.equal(trained[name], base[name]), name


def test_badam_changes_only_the_active_block(tmp_path: Path, tiny_model: Path) -> None:
    """start_block 1, four steps per block: after 2 steps only layer 1 has trained."""
    optimizer = {
        "kind": "badam",
        "switch_mode": "ascending",
        "start_block": 1,
        "switch_interval": 4,
    }
    outputs = _trained(tmp_path, tiny_model, optimizer)
    trained, base = _weights(outputs), _weights(tiny_model)
    assert trained.keys() == base.keys()
    block = [name for name in base if name.startswith("model.layers.1.")]
    assert block and len(block) < len(base)
    for name, weight in base.items():
        changed = not torch.equal(trained[name], weight)
        assert changed == (name in block), name
    # Adam state exists for the active block's parameters only.
    _, state = _moments(outputs, 2)
    assert sorted(s["exp_avg"].numel() for s in state.values()) == sorted(
        base[name].numel() for name in block
    )


def test_badam_resumes_on_the_block_it_stopped_on(tmp_path: Path, tiny_model: Path) -> None:
    """A run resumed from checkpoint-2 ends with the same weights as one that never stopped.

    Ascending from block 0, two steps per block (badam switches after its first step, then
    every two): step 1 trains layer 0, steps 2-3 layer 1, step 4 layer 0 again. BlockOptimizer
    alone restarts its schedule at start_block on resume, gives the saved Adam state of layer 1
    to layer 0, and takes step 3 at the first step's learning rate (cosine schedule).
    """
    optimizer = {
        "kind": "badam",
        "switch_mode": "ascending",
        "start_block": 0,
        "switch_interval": 2,
    }
    outputs = _trained(tmp_path, tiny_model, optimizer, steps=4, save_steps=2)
    project = outputs.parent
    resumed = project / "resumed"
    (resumed / "checkpoint-2").parent.mkdir()
    shutil.copytree(outputs / "checkpoint-2", resumed / "checkpoint-2")
    flags = ["--max_steps", "4", "--save_steps", "2", "--output_dir", "resumed"]
    flags += ["--resume_from_checkpoint", "resumed/checkpoint-2"]
    run([sys.executable, *LAUNCH, "train.py", *flags], project, ENV)

    base, first = _weights(tiny_model), _weights(outputs / "checkpoint-2")
    straight, again = _weights(outputs), _weights(resumed)
    for layer in (0, 1):  # both blocks trained before the checkpoint
        name = f"model.layers.{layer}.mlp.down_proj.weight"
        assert not torch.equal(first[name], base[name]), name
    for name, weight in straight.items():
        torch.testing.assert_close(again[name], weight, rtol=1e-5, atol=1e-6, msg=name)
