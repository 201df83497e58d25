"""GPU kernels and methods: flash-attn, Liger, LoftQ and pre-quantized bases (Unsloth:
tests/test_unsloth.py).

No GPU here. For the options that compile (flash_attention_2 and Liger on pins.target
cuda13.0) these tests check the exact lines the project gets, that its pins are the recorded
pip resolution, and that the generated code lints and compiles; `nox -s gpu`
(tests/gpu/run_gpu_checks.py) trains them on a CUDA machine, and
test_gpu_checks_compile_what_they_train compiles each of its specs here. The options refused
at compile time are checked by the bad-spec corpus (cases 280-29x, 310-319). LoftQ
(adapter.init: loftq on a 4-bit QLoRA base) compiles for cuda13.0 only: peft computes it on
CUDA. Pre-quantized GPTQ/AWQ bases compile for cuda13.0 only, with an adapter export (peft
cannot merge into their layers).
"""

from __future__ import annotations

import py_compile
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_cuda_target import _hadolint

from lfc.errors import SpecError
from lfc.pins import training_pins
from lfc.pipeline import compile_file
from lfc.verify import verify_project
from lfc.writer import write_project

from conftest import FIXTURES, write_variant

GPU = {"pins": {"target": "cuda13.0"}}
BF16_MODEL = {"name_or_path": "../tiny-llama", "dtype": "bfloat16"}
TRAIN = {"learning_rate": 1.0e-3, "max_steps": 2, "batch_size": 2, "logging_steps": 1}


def _project(tmp_path: Path, sections: dict) -> tuple[Path, dict[str, str]]:
    """Compile quickstart with `sections` on cuda13.0, write it, lint and byte-compile it."""
    files = compile_file(write_variant(tmp_path, {**GPU, **sections})).files
    project = tmp_path / "run"
    write_project(files, project)
    ruff = str(Path(sys.executable).with_name("ruff"))
    for check in (["check", "--isolated", "."], ["format", "--isolated", "--check", "."]):
        result = subprocess.run([ruff, *check], cwd=project, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    for script in project.glob("*.py"):
        py_compile.compile(str(script), doraise=True)
    texts = {name: data.decode() for name, data in files.items() if not name.startswith("data/")}
    return project, texts


def _pins(requirements: str) -> dict[str, str]:
    lines = (line for line in requirements.splitlines() if line and not line.startswith("#"))
    return dict(line.split("==") for line in lines)


def _resolution(name: str) -> dict[str, str]:
    lines = (FIXTURES / "cuda" / name).read_text().splitlines()
    return dict(line.split("==") for line in lines if "==" in line)


def test_flash_attention_2_is_configured_pinned_and_built_after_torch(tmp_path: Path) -> None:
    model = {"name_or_path": "../tiny-llama", "dtype": "bfloat16"}
    _, files = _project(tmp_path, {"model": {**model, "attn_implementation": "flash_attention_2"}})
    config = yaml.safe_load(files["config.yaml"])
    assert config["attn_implementation"] == "flash_attention_2" and config["dtype"] == "bfloat16"
    pins = _pins(files["requirements.txt"])
    assert pins["flash-attn"] == "2.8.3.post2" and "liger-kernel" not in pins
    dockerfile = files["Dockerfile"]
    torch_first = "uv pip install --no-cache torch==2.13.0 \\\n"
    build = "uv pip install --no-cache --no-build-isolation-package flash-attn -r requirements.txt"
    assert torch_first in dockerfile and build in dockerfile
    assert dockerfile.index(torch_first) < dockerfile.index(build)
    (tmp_path / "image").mkdir()
    (tmp_path / "image" / "Dockerfile").write_text(dockerfile)
    _hadolint(tmp_path / "image" / "Dockerfile")
    (tmp_path / "sdpa").mkdir()
    plain = compile_file(write_variant(tmp_path / "sdpa", {**GPU, "model": model})).files
    assert "flash-attn" not in plain["requirements.txt"].decode()
    assert "no-build-isolation" not in plain["Dockerfile"].decode()


def test_liger_kernel_is_a_training_argument_pinned_from_the_recorded_resolution(
    tmp_path: Path,
) -> None:
    _, files = _project(tmp_path, {"train": {**TRAIN, "liger_kernel": True}})
    config = yaml.safe_load(files["config.yaml"])
    assert config["use_liger_kernel"] is True
    pins = _pins(files["requirements.txt"])
    resolved = _resolution("resolution_kernels_py3.12.txt")
    assert pins["liger-kernel"] == "0.8.5"
    for name, version in pins.items():
        assert resolved[re.sub(r"[-_.]+", "-", name).lower()] == version, name
    (tmp_path / "off").mkdir()
    plain = compile_file(write_variant(tmp_path / "off", {**GPU, "train": TRAIN})).files
    assert "liger" not in plain["requirements.txt"].decode()
    assert "use_liger_kernel" not in plain["config.yaml"].decode()


def test_transformers_reads_use_liger_kernel_from_its_training_arguments() -> None:
    """The key config.yaml writes is a field of the installed TrainingArguments (so of TRL's
    configs, which extend it): a renamed field would make TrlParser refuse config.yaml."""
    from dataclasses import fields

    from transformers import TrainingArguments

    names = {field.name for field in fields(TrainingArguments)}
    assert "use_liger_kernel" in names and "attn_implementation" not in names


# peft's all-linear finds no gptqmodel layer (refused, corpus 358): the modules are named.
PREQUANTIZED = {
    "serve": {"lora_adapter": True},
    "adapter": {"kind": "lora", "rank": 8, "alpha": 16, "target": ["q_proj", "v_proj"]},
}


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_prequantized_base_exports_and_serves_the_adapter_beside_the_base(
    tmp_path: Path, method: str
) -> None:
    """peft cannot merge into GPTQ/AWQ layers: export.py saves the adapter (not merged),
    chat.py/serve.py put the exported adapter on the base, vLLM serves base + adapter, and
    gptqmodel (+ optimum for GPTQ) is pinned from the recorded resolution."""
    model = {"name_or_path": "../tiny-llama", "prequantized": method}
    project, files = _project(tmp_path, {"model": model, **PREQUANTIZED})
    assert verify_project(project) == []  # its normalized spec passes the rules again
    export = files["export.py"]
    assert "model = PeftModel.from_pretrained(model, str(trained))\n" in export
    assert (
        "        model.save_pretrained(folder)\n        generation.save_pretrained(folder)\n"
        in (export)
    )
    assert "merge_and_unload" not in export and "export_dtype" not in export
    inference = files["model.py"]
    assert "adapter = str(exported) if exported.is_dir() else args.training.output_dir\n" in (
        inference
    )
    assert "load_model(args.model, args.export.export_dir, trust)" not in inference
    serve = files["serve_vllm.sh"]
    assert "    --enable-lora \\\n" in serve and "exec vllm serve ../tiny-llama \\\n" in serve
    assert "Modelfile" not in files
    assert yaml.safe_load(files["spec.yaml"])["export"]["ollama"] is False
    # No merge, so none of the merged export's settings: not in config.yaml, nor config.py.
    config = yaml.safe_load(files["config.yaml"])
    assert not {"export_dtype", "export_max_shard_size", "export_extra_adapters"} & set(config)
    assert "export_dtype" not in files["config.py"]
    pins = _pins(files["requirements.txt"])
    resolved = _resolution(f"resolution_{method}_py3.12.txt")
    assert pins["gptqmodel"] == "7.6.0" and ("optimum" in pins) == (method == "gptq")
    for name, version in pins.items():
        assert resolved[re.sub(r"[-_.]+", "-", name).lower()] == version, name
    (tmp_path / "plain").mkdir()
    plain = compile_file(write_variant(tmp_path / "plain", {**GPU, "model": BF16_MODEL})).files
    requirements = plain["requirements.txt"].decode()
    assert "gptqmodel" not in requirements and "optimum" not in requirements
    assert "merge_and_unload()" in plain["export.py"].decode()


def test_gptqmodel_resolution_keeps_the_cuda_set() -> None:
    """gptqmodel 7.6.0 pins numpy==2.2.6, so its resolution differs from the base set there
    and only adds packages otherwise: the training pins stay the cuda13.0 set's."""
    base = _resolution("resolution_py3.12.txt")
    for method in ("gptq", "awq"):
        resolved = _resolution(f"resolution_{method}_py3.12.txt")
        changed = {name for name, version in base.items() if resolved.get(name) != version}
        assert changed == {"numpy"}, method
    for name, version in training_pins("cuda13.0", ("gptq",)).packages.items():
        assert _resolution("resolution_gptq_py3.12.txt")[name] == version


LOFTQ = {
    "model": {"name_or_path": "../tiny-llama", "dtype": "bfloat16", "quantization": {"bits": 4}},
    "adapter": {"kind": "lora", "rank": 8, "alpha": 8, "init": "loftq"},
    "train": TRAIN,
}


def test_loftq_fits_the_adapters_once_they_exist_and_saves_them_for_the_original_base(
    tmp_path: Path,
) -> None:
    """train.py runs peft's replace_lora_weights_loftq on the model the trainer wrapped, on the
    base model's own safetensors, then saves that start so the trained adapter is rewritten
    for the full-precision base that chat.py and export.py load."""
    _, texts = _project(tmp_path, LOFTQ)
    train, model = texts["train.py"], texts["model.py"]
    order = ["SFTTrainer(", "fit_loftq(trainer.model, args.model)", "save_initial_adapter(trainer)"]
    order += ["trainer.train(", "save_as_plain_lora(trainer, initial)"]
    positions = [train.index(line) for line in order]
    assert positions == sorted(positions)
    assert "from peft import LoraConfig, PeftModel, replace_lora_weights_loftq\n" in model
    assert "replace_lora_weights_loftq(model, model_path=source)" in model
    assert "snapshot_download(\n            source, revision=args.model_revision" in model
    # peft's other LoftQ path (init_lora_weights="loftq") would replace the base weights.
    assert "init_lora_weights" not in model and "lora_init" not in texts["config.yaml"]
    assert "bnb_4bit_quant_type" in model  # the adapters sit on bitsandbytes 4-bit layers
    (tmp_path / "plain").mkdir()
    plain = _project(tmp_path / "plain", {**LOFTQ, "adapter": {"kind": "lora"}})[1]
    assert "loftq" not in plain["model.py"] + plain["train.py"]
    assert "initial_adapter" not in plain["model.py"]


def test_loftq_refusal_on_cpu_is_what_peft_does_there(tiny_model: Path, tmp_path: Path) -> None:
    """pins.target cpu refuses init loftq because peft's LoftQ computes on CUDA: the real call
    on a 4-bit tiny model fails here (if peft learns CPU, this fails and the rule can go)."""
    import torch
    from peft import LoraConfig, get_peft_model, replace_lora_weights_loftq
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(
        tiny_model, quantization_config=quantization, device_map="cpu"
    )
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=8, target_modules="all-linear"))
    with pytest.raises(AssertionError, match="Torch not compiled with CUDA enabled"):
        replace_lora_weights_loftq(model, model_path=str(tiny_model))
    with pytest.raises(SpecError, match=r"adapter\.init: .*CUDA \(or XPU\) device only"):
        compile_file(write_variant(tmp_path, {**LOFTQ, "pins": {"target": "cpu"}}))


def test_gpu_checks_skip_cleanly_without_a_gpu(tmp_path: Path) -> None:
    """`nox -s gpu` on a machine without nvidia-smi: a clear message and exit status 0."""
    script = Path(__file__).parent / "gpu" / "run_gpu_checks.py"
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}  # no nvidia-smi on this PATH
    result = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "GPU checks skipped: no CUDA GPU (nvidia-smi is missing or lists none)."
    )
    noxfile = (Path(__file__).parents[1] / "noxfile.py").read_text()
    assert 'nox.options.sessions = ["tests", "lint"]' in noxfile and "def gpu(" in noxfile


def test_gpu_checks_compile_what_they_train(tiny_model: Path, tmp_path: Path) -> None:
    """Every spec run_gpu_checks.py trains compiles here (its specs, as it writes them), so a
    GPU run never starts with one lfc refuses."""
    sys.path.insert(0, str(Path(__file__).parent / "gpu"))
    try:
        import run_gpu_checks
    finally:
        sys.path.pop(0)
    (tmp_path / "tiny-llama").symlink_to(tiny_model)
    (tmp_path / "tiny-llama-gptq").symlink_to(tiny_model)  # a stand-in: compiling reads no weights
    for name, sections in run_gpu_checks.TRAINED.items():
        files = compile_file(run_gpu_checks._spec(tmp_path / name, sections)).files
        assert b"max_steps: 2\n" in files["config.yaml"], name
    assert "unsloth" in run_gpu_checks.TRAINED and run_gpu_checks.OWN_VENV == {"unsloth"}
