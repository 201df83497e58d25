"""GPU checks: compile, install and really train 2 steps with each GPU-only option.

Run with `nox -s gpu` (not part of CI) on a Linux x86_64 machine with an NVIDIA GPU that runs
CUDA 13.0 and Python 3.12 (the cuda13.0 pin set). Without a GPU it says so and exits 0.

Each check compiles examples/quickstart.yaml with `pins.target: cuda13.0`, its option and
`train.max_steps: 2` (DeepSpeed ZeRO-2 with one process), installs the project's own requirements.txt into one shared venv
(the pins are the same set, so later checks only add their extras), runs data.py and
train.py through accelerate, and checks the adapter was saved. The LoftQ check first runs
loftq_start.py in its project (LoftQ's start beats the 4-bit base alone) and then checks that
the saved adapter was rewritten for the full-precision base (twice the rank). The GPTQ check first
quantizes the tiny model with gptqmodel (gptq_quantize.py, in the venv), trains LoRA on it and
runs export.py, which must save the adapter and no merged model; the AQLM check does the same
with aqlm_quantize.py (aqlm's layers, codes fitted by k-means). The Unsloth check trains LoRA
through Unsloth's FastLanguageModel in a venv of its own: its pin set has older transformers,
trl and datasets, which would replace the shared venv's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CUDA = {"pins": {"target": "cuda13.0"}}
TRAIN = {"learning_rate": 1.0e-3, "max_steps": 2, "batch_size": 2, "logging_steps": 1}
BF16 = {"name_or_path": "../tiny-llama", "dtype": "bfloat16"}

# name -> spec sections (on top of quickstart); each trains 2 steps on the GPU.
TRAINED: dict[str, dict] = {
    "lora-bf16": {"model": BF16},
    "flash-attention-2": {"model": {**BF16, "attn_implementation": "flash_attention_2"}},
    "liger-kernel": {"model": BF16, "train": {**TRAIN, "liger_kernel": True}},
    "qlora-4bit": {"model": {**BF16, "quantization": {"bits": 4}}},
    "qlora-8bit": {"model": {**BF16, "quantization": {"bits": 8}}},
    "loftq-qlora-4bit": {
        "model": {**BF16, "quantization": {"bits": 4}},
        "adapter": {"kind": "lora", "rank": 8, "alpha": 8, "init": "loftq"},
    },
    "deepspeed-zero2": {
        "model": BF16,
        "distributed": {"kind": "deepspeed", "zero_stage": 2, "num_processes": 1},
    },
    # gptq_quantize.py makes ../tiny-llama-gptq first (in the venv, once gptqmodel is in it);
    # the modules are named: peft's all-linear finds no gptqmodel layer.
    "gptq-base": {
        "model": {"name_or_path": "../tiny-llama-gptq", "dtype": "float16", "prequantized": "gptq"},
        "adapter": {"kind": "lora", "rank": 8, "alpha": 16, "target": ["q_proj", "v_proj"]},
        "serve": {"lora_adapter": True},
    },
    # aqlm_quantize.py makes ../tiny-llama-aqlm first.
    "aqlm-base": {
        "model": {"name_or_path": "../tiny-llama-aqlm", "dtype": "float16", "prequantized": "aqlm"},
        "adapter": {"kind": "lora", "rank": 8, "alpha": 16, "target": ["q_proj", "v_proj"]},
    },
    # Last, in its own venv (OWN_VENV): Unsloth's pins are not the shared venv's set.
    "unsloth": {"model": {**BF16, "loader": "unsloth"}},
}
OWN_VENV = {"unsloth"}


def _gpu() -> str | None:
    """The GPUs nvidia-smi lists, or None (torch is not imported: it may not be installed)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    result = subprocess.run([smi, "-L"], capture_output=True, text=True)
    listed = result.stdout.strip()
    return listed if result.returncode == 0 and listed.startswith("GPU") else None


def _run(cmd: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        result = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
    if result.returncode:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n{tail}")


def _spec(folder: Path, sections: dict) -> Path:
    spec = yaml.safe_load((EXAMPLES / "quickstart.yaml").read_text())
    spec.update({"train": TRAIN, **CUDA, **sections})
    folder.mkdir(parents=True)
    (folder / "data").symlink_to(EXAMPLES / "data")
    (folder / "tiny-llama").symlink_to(folder.parent / "tiny-llama")
    for method in ("gptq", "aqlm"):
        (folder / f"tiny-llama-{method}").symlink_to(folder.parent / f"tiny-llama-{method}")
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _train(name: str, sections: dict, work: Path, venv: Path) -> str:
    folder = work / name
    log = work / f"{name}.log"
    lfc = [sys.executable, "-m", "lfc"]
    _run([*lfc, "compile", str(_spec(folder, sections)), "-o", str(folder / "run")], work, log)
    project = folder / "run"
    python = str(venv / "bin" / "python")
    requirements = str(project / "requirements.txt")
    if "flash-attn" in (project / "requirements.txt").read_text():
        # The Dockerfile's order: torch is in the venv already (an earlier check installed the
        # set) and flash-attn builds against it, with the build tools a bare venv lacks.
        tools = ["setuptools", "wheel", "packaging", "ninja", "psutil"]
        _run([python, "-m", "pip", "install", *tools], work, log)
        isolation = "--no-build-isolation"
        _run([python, "-m", "pip", "install", isolation, "-r", requirements], work, log)
    else:
        _run([python, "-m", "pip", "install", "-r", requirements], work, log)
    prequantized = sections["model"].get("prequantized")
    if prequantized and not (work / f"tiny-llama-{prequantized}").is_dir():
        quantize = str(Path(__file__).with_name(f"{prequantized}_quantize.py"))
        tiny = [str(work / "tiny-llama"), str(work / f"tiny-llama-{prequantized}")]
        _run([python, quantize, *tiny], work, log)
    _run([python, "data.py"], project, log)
    loftq = sections.get("adapter", {}).get("init") == "loftq"
    if loftq:  # the project's own model.py and config.py, imported from its folder
        start = str(Path(__file__).with_name("loftq_start.py"))
        _run([python, start], project, log, env={**os.environ, "PYTHONPATH": str(project)})
    kind = sections.get("distributed", {}).get("kind", "single")
    launch = [python, "-m", "accelerate.commands.launch", "--config_file"]
    _run([*launch, f"accelerate/{kind}.yaml", "train.py"], project, log)
    saved = project / "outputs" / "adapter_model.safetensors"
    if not saved.is_file():
        raise RuntimeError(f"train.py finished without saving {saved}")
    if loftq:
        rank = json.loads((saved.parent / "adapter_config.json").read_text())["r"]
        if rank != 2 * sections["adapter"]["rank"]:
            raise RuntimeError(f"the LoftQ adapter was saved at rank {rank}, not rewritten")
        lines = log.read_text().splitlines()
        start_line = next(line for line in lines if line.startswith("layers with B = 0"))
        return f"{start_line}; trained 2 steps, saved {saved.name} at rank {rank}"
    if prequantized:  # the export is the adapter: peft cannot merge into GPTQ/AQLM layers
        _run([python, "export.py"], project, log)
        exported = project / "exported"
        if not (exported / "adapter_model.safetensors").is_file() or any(
            exported.glob("model*.safetensors")
        ):
            raise RuntimeError(f"{exported}/ should hold the adapter and no merged model")
        return f"quantized the tiny model, trained 2 steps, exported the adapter to {exported}/"
    return f"trained 2 steps, saved {saved.name}"


def main() -> int:
    gpus = _gpu()
    if gpus is None:
        print("GPU checks skipped: no CUDA GPU (nvidia-smi is missing or lists none).")
        return 0
    print(gpus)
    work = Path(tempfile.mkdtemp(prefix="lfc-gpu-"))
    env_python = shutil.which("python3.12") or sys.executable
    venv = work / "venv"
    subprocess.run([env_python, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [sys.executable, "-m", "lfc", "tiny-model", str(work / "tiny-llama")], check=True
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    failures = 0
    for name, sections in TRAINED.items():
        start = time.monotonic()
        try:
            if name in OWN_VENV:
                venv = work / f"venv-{name}"
                subprocess.run([env_python, "-m", "venv", str(venv)], check=True)
            outcome = _train(name, sections, work, venv)
        except RuntimeError as error:
            failures += 1
            outcome = f"FAILED: {error}"
        print(f"{name}: {outcome} ({time.monotonic() - start:.0f} s)", flush=True)
    print(f"logs and projects: {work}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
