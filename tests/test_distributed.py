"""Distributed and fault-tolerant training on the CPU: 2 ranks (gloo), crash and resume, seeds.

Losses are read from trainer_state.json at full precision. Two ranks with batch 2 see the same
samples per step as one process with batch 4, and TRL normalises the loss by the token count
across ranks, so the curves agree up to float32 reduction order (tolerance 1e-4 relative).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lfc.errors import SpecError
from lfc.pipeline import compile_file
from lfc.writer import write_project

from conftest import EXAMPLES

pytest.importorskip("trl")

LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _project(tmp: Path, tiny_model: Path, distributed: str, *, extra: str = "") -> Path:
    spec_dir = tmp / "spec"
    if not spec_dir.exists():
        shutil.copytree(EXAMPLES / "data", spec_dir / "data")
    text = (EXAMPLES / "quickstart.yaml").read_text()
    text = text.replace("  batch_size: 4\n", "  batch_size: 2\n")
    text += f"distributed: {distributed}\n{extra}"
    (spec_dir / "spec.yaml").write_text(text)
    if not (tmp / "tiny-llama").exists():
        shutil.copytree(tiny_model, tmp / "tiny-llama")
    project = tmp / "run"
    write_project(compile_file(spec_dir / "spec.yaml").files, project, force=True)
    return project


def _run(args: list[str], cwd: Path) -> str:
    result = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


def _losses(output: Path) -> list[float]:
    saved = [p for p in output.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    checkpoint = max(saved, key=lambda p: int(p.name.split("-")[1]))
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def _close(a: list[float], b: list[float], tolerance: float = 1e-4) -> bool:
    if len(a) != len(b):
        return False
    return all(abs(x - y) <= tolerance * abs(y) for x, y in zip(a, b, strict=True))


@pytest.fixture
def processed(tmp_path: Path, tiny_model: Path) -> Path:
    project = _project(tmp_path, tiny_model, "ddp")
    _run([sys.executable, "data.py"], project)
    return project


def test_two_ddp_ranks_match_one_process_with_the_same_global_batch(processed: Path) -> None:
    steps = ["--max_steps", "4", "--save_steps", "4"]
    _run([*LAUNCH, "accelerate/ddp.yaml", "train.py", *steps, "--output_dir", "ddp"], processed)
    single = ["--per_device_train_batch_size", "4", "--output_dir", "single"]
    _run([*LAUNCH, "accelerate/single.yaml", "train.py", *steps, *single], processed)
    ddp, one = _losses(processed / "ddp"), _losses(processed / "single")
    assert len(ddp) == 4 and _close(ddp, one), (ddp, one)
    record = json.loads((processed / "ddp" / "lfc_run.json").read_text())
    assert record["settings"]["training"]["per_device_train_batch_size"] == 2
    assert record["packages"]["trl"] == "1.16.0"


def test_fsdp2_shards_over_two_cpu_ranks(tmp_path: Path, tiny_model: Path) -> None:
    project = _project(tmp_path, tiny_model, "{kind: fsdp, num_processes: 2}")
    assert "fsdp_version: 2" in (project / "accelerate" / "fsdp.yaml").read_text()
    _run([sys.executable, "data.py"], project)
    steps = ["--max_steps", "3", "--save_steps", "3"]
    _run([*LAUNCH, "accelerate/fsdp.yaml", "train.py", *steps, "--output_dir", "fsdp"], project)
    single = ["--per_device_train_batch_size", "4", "--output_dir", "single"]
    _run([*LAUNCH, "accelerate/single.yaml", "train.py", *steps, *single], project)
    assert (project / "fsdp" / "adapter_model.safetensors").is_file()
    assert _close(_losses(project / "fsdp"), _losses(project / "single"))


def test_same_seed_same_loss_curve(processed: Path) -> None:
    for name in ("first", "second"):
        args = ["--max_steps", "3", "--save_steps", "3", "--output_dir", name]
        _run([*LAUNCH, "accelerate/single.yaml", "train.py", *args], processed)
    assert _losses(processed / "first") == _losses(processed / "second")


def test_killed_run_resumes_from_the_last_complete_checkpoint(processed: Path) -> None:
    args = ["--max_steps", "6", "--save_steps", "1", "--save_total_limit", "10"]
    straight = [*LAUNCH, "accelerate/single.yaml", "train.py", *args]
    _run([*straight, "--output_dir", "straight"], processed)
    expected = _losses(processed / "straight")

    command = [*straight, "--output_dir", "crashed"]
    process = subprocess.Popen(
        command,
        cwd=processed,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    output = processed / "crashed"
    deadline = time.monotonic() + 600
    while not (output / "checkpoint-3" / "trainer_state.json").exists():
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint-3"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (output / "checkpoint-6").exists()
    # What a crash during saving leaves: a newer checkpoint without its trainer_state.json.
    (output / "checkpoint-99").mkdir()
    (output / "checkpoint-99" / "model.safetensors").write_bytes(b"half")

    resumed = _run(command, processed)  # the same command, nothing added
    assert "resuming from crashed/checkpoint-" in resumed
    assert "checkpoint-99" not in resumed.split("resuming from")[1].splitlines()[0]
    state = json.loads((output / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    assert _close(_losses(output), expected, 1e-5), (_losses(output), expected)


def test_auto_resume_off_starts_over(processed: Path) -> None:
    args = ["--max_steps", "2", "--save_steps", "1", "--output_dir", "again"]
    run = [*LAUNCH, "accelerate/single.yaml", "train.py", *args]
    _run(run, processed)
    out = _run([*run, "--max_steps", "3", "--auto_resume", "false"], processed)
    assert "resuming from" not in out
    assert out.count("{'loss': ") == 3  # all three steps ran again


@pytest.mark.parametrize(
    ("distributed", "pins", "expected"),
    [
        ("deepspeed", "", "DeepSpeed needs CUDA GPUs, but pins.target is cpu"),
        ("{kind: ddp, num_machines: 2}", "", "multi-node training needs a GPU pin set"),
    ],
)
def test_impossible_combinations_are_compile_errors(
    distributed: str, pins: str, expected: str, tmp_path: Path
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "lfc: 1\nmodel: {name_or_path: m}\ntemplate: llama3\n"
        "data: {datasets: [{path: d.json, format: alpaca}]}\n"
        f"distributed: {distributed}\n{pins}"
    )
    (tmp_path / "d.json").write_text("[]")
    with pytest.raises(SpecError) as info:
        compile_file(spec)
    assert expected in str(info.value)


def test_launch_script_needs_rank_and_address(tmp_path: Path, tiny_model: Path) -> None:
    project = _project(tmp_path, tiny_model, "ddp")
    env = {k: v for k, v in ENV.items() if k not in ("MACHINE_RANK", "MAIN_ADDR")}
    result = subprocess.run(
        ["bash", "launch.sh"], cwd=project, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0 and "set MACHINE_RANK" in result.stderr
    sbatch = (project / "slurm.sbatch").read_text()
    assert "#SBATCH --nodes=1" in sbatch and "bash launch.sh" in sbatch
    assert subprocess.run(["bash", "-n", "slurm.sbatch"], cwd=project).returncode == 0
