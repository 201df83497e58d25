"""Every training stage, end to end on the tiny model: data.py, a few steps, the artefact, resume.

The stage examples (examples/<stage>.yaml) are compiled as users would; PPO runs in a fresh
virtualenv holding only its project's requirements.txt, which pins trl 1.12.0.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import compile_example
from project_env import clean_env, project_venv, run

pytest.importorskip("trl")

LAUNCH = ["-m", "accelerate.commands.launch", "--config_file", "accelerate/single.yaml"]


def _run(args: list[str], cwd: Path, **extra_env: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **extra_env}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


def _losses(checkpoint: Path) -> list[float]:
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


# (example, the loss-like value logged, files the final output folder must hold)
STAGES = [
    ("pt-text", ["adapter_model.safetensors"]),
    ("sft-mix-tools", ["adapter_model.safetensors"]),
    ("rm", ["model.safetensors"]),
    ("dpo", ["adapter_model.safetensors"]),
    ("kto", ["adapter_model.safetensors"]),
    ("orpo", ["adapter_model.safetensors"]),
    ("simpo", ["adapter_model.safetensors"]),
    ("grpo", ["adapter_model.safetensors"]),
]


@pytest.mark.parametrize(("example", "artefacts"), STAGES, ids=[s[0] for s in STAGES])
def test_stage_trains_saves_and_resumes(
    example: str, artefacts: list[str], tmp_path: Path, tiny_model: Path
) -> None:
    project = compile_example(example, tmp_path / "run", tiny_model)
    _run([sys.executable, "data.py"], project)
    steps = ["--save_steps", "1", "--logging_steps", "1"]
    _run([sys.executable, *LAUNCH, "train.py", "--max_steps", "2", *steps], project)
    outputs = project / "outputs"
    for name in artefacts:
        assert (outputs / name).is_file(), sorted(p.name for p in outputs.iterdir())
    losses = _losses(outputs / "checkpoint-2")
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses), losses
    if example == "rm":
        config = json.loads((outputs / "config.json").read_text())
        assert config["architectures"] == ["LlamaForSequenceClassification"]

    resumed = _run(
        [
            sys.executable,
            *LAUNCH,
            "train.py",
            "--max_steps",
            "3",
            *steps,
            "--resume_from_checkpoint",
            "last",
        ],
        project,
    )
    state = json.loads((outputs / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    # The first two steps came from the checkpoint: only step 3 ran (and logged) again.
    assert resumed.count("{'loss': ") == 1, resumed[-3000:]
    assert _losses(outputs / "checkpoint-3")[:2] == losses


def test_resume_without_checkpoint_says_so(tmp_path: Path, tiny_model: Path) -> None:
    project = compile_example("dpo", tmp_path / "run", tiny_model)
    _run([sys.executable, "data.py"], project)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "train.py", "--resume_from_checkpoint", "last"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "resume_from_checkpoint last: no checkpoint in outputs/" in result.stderr


def test_ppo_pins_its_own_trl_and_trains_against_an_rm_project(
    tmp_path: Path, tiny_model: Path
) -> None:
    """rm project -> reward model; the ppo project points at it and runs in its own venv."""
    rm_project = compile_example("rm", tmp_path / "rm-run", tiny_model)
    _run([sys.executable, "data.py"], rm_project)
    _run([sys.executable, *LAUNCH, "train.py", "--max_steps", "2"], rm_project)

    project = compile_example("ppo", tmp_path / "run", tiny_model)
    requirements = (project / "requirements.txt").read_text()
    assert "trl==1.12.0" in requirements.splitlines()
    lock = json.loads((project / "lfc.lock.json").read_text())
    assert lock["pins"]["training"]["trl"] == "1.12.0"
    assert "Stage ppo: PPO was removed from TRL in 1.13" in lock["pins"]["reason"]

    python = project_venv(project / "requirements.txt", tmp_path / "venv")
    env = clean_env(python.parent)
    run([str(python), "data.py"], project, env)
    out = run([str(python), *LAUNCH, "train.py", "--total_episodes", "8"], project, env)
    assert "objective/kl" in out and "objective/scores" in out
    saved = project / "outputs"
    assert (saved / "model.safetensors").is_file()
    config = json.loads((saved / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
