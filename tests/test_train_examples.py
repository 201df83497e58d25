"""Train the freeze and full examples a few steps in this environment and check what changed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import compile_example

safetensors_torch = pytest.importorskip("safetensors.torch")
pytest.importorskip("trl")


def _run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


def _train(project: Path, *extra: str) -> None:
    _run([sys.executable, "data.py"], project)
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        "accelerate/single.yaml",
    ]
    _run([*launch, "train.py", *extra], project)


def test_freeze_trains_only_the_last_layer_and_head(tmp_path: Path, tiny_model: Path) -> None:
    project = compile_example("qwen-sharegpt-freeze", tmp_path / "run", tiny_model)
    _train(project)
    before = safetensors_torch.load_file(tiny_model / "model.safetensors")
    after = safetensors_torch.load_file(project / "checkpoints" / "model.safetensors")
    changed = {name for name in before if not before[name].equal(after[name])}
    trainable = {name for name in before if name.startswith(("model.layers.1.", "lm_head"))}
    # Norm weights get tiny or no gradients in 4 steps; every matrix of the trainable set moves.
    assert {n for n in trainable if before[n].dim() == 2} <= changed
    assert changed <= trainable
    assert (project / "data" / "processed" / "dataset" / "validation").is_dir()


def test_full_fine_tuning_logs_to_tensorboard(tmp_path: Path, tiny_model: Path) -> None:
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    project = compile_example("chatml-openai-full", tmp_path / "run", tiny_model)
    _train(project, "--max_steps", "3")
    before = safetensors_torch.load_file(tiny_model / "model.safetensors")
    after = safetensors_torch.load_file(project / "outputs" / "model.safetensors")
    assert all(not before[n].equal(after[n]) for n in before if before[n].dim() == 2)
    (run_dir,) = (project / "outputs" / "runs").iterdir()
    events = event_accumulator.EventAccumulator(str(run_dir))
    events.Reload()
    losses = [event.value for event in events.Scalars("train/loss")]
    assert len(losses) == 3 and all(loss > 0 for loss in losses)
