"""A pre-quantized AQLM base (`model.prequantized: aqlm`), end to end on the CPU.

The tiny model is quantized here to a real AQLM checkpoint (tests/gpu/aqlm_quantize.py: aqlm's
QuantizedLinear layers, codes fitted by k-means, not AQLM's calibration), whose config names the
unquantized weights as AQLM's checkpoints do (`lm_head.weight`). The compiled project loads it
(model.py gives transformers 5.24 that list as module names), trains LoRA 2 steps on the frozen
AQLM layers, and exports the adapter (peft cannot merge into AQLM layers); chat.py answers with
the base + the exported adapter. vLLM 0.33 cannot load AQLM, so the project has no vLLM files.
The cuda13.0 project is compiled and checked: pins from the recorded resolution, lint.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import pytest
from test_kernels import _pins, _project, _resolution

from lfc.pipeline import compile_file
from lfc.verify import verify_project
from lfc.writer import write_project

from conftest import write_variant
from project_env import run

torch = pytest.importorskip("torch")
pytest.importorskip("aqlm")
safetensors = pytest.importorskip("safetensors.torch")

LAUNCH = ["-m", "accelerate.commands.launch", "--config_file", "accelerate/single.yaml"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
TARGETS = ["q_proj", "v_proj", "down_proj"]
RANK = 8
AQLM = {
    "model": {"name_or_path": "../tiny-llama-aqlm", "prequantized": "aqlm"},
    "adapter": {"kind": "lora", "rank": RANK, "alpha": 16, "target": TARGETS},
    "train": {"learning_rate": 1.0e-3, "max_steps": 2, "batch_size": 2, "logging_steps": 1},
}
VLLM_FILES = {"serve_vllm.sh", "requirements-serve.txt", "Dockerfile.serve"}


def _quantizer():
    path = Path(__file__).with_name("gpu") / "aqlm_quantize.py"
    spec = importlib.util.spec_from_file_location("aqlm_quantize", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def aqlm_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("aqlm") / "tiny-llama-aqlm"
    _quantizer().quantize(str(tiny_model), str(target))
    return target


def _lora_size(model: Path) -> int:
    """r x (in + out) for every targeted linear of the full-precision model, from its modules."""
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    return sum(
        RANK * (module.in_features + module.out_features)
        for name, module in base.named_modules()
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in TARGETS
    )


def test_aqlm_base_trains_lora_and_exports_the_adapter(
    tmp_path: Path, tiny_model: Path, aqlm_model: Path
) -> None:
    (tmp_path / "tiny-llama-aqlm").symlink_to(aqlm_model)
    files = compile_file(write_variant(tmp_path, AQLM)).files
    project = tmp_path / "run"
    write_project(files, project)
    assert not VLLM_FILES & set(files) and "serving" not in json.loads(files["lfc.lock.json"])
    ruff = str(Path(sys.executable).with_name("ruff"))
    for check in (["check", "--isolated", "."], ["format", "--isolated", "--check", "."]):
        run([ruff, *check], project, ENV)

    run([sys.executable, "data.py"], project, ENV)
    run([sys.executable, *LAUNCH, "train.py"], project, ENV)
    trained = project / "outputs"
    saved = safetensors.load_file(trained / "adapter_model.safetensors")
    assert sum(t.numel() for t in saved.values()) == _lora_size(tiny_model)
    state = json.loads((trained / "checkpoint-2" / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)

    run([sys.executable, "export.py"], project, ENV)
    exported = project / "exported"
    assert (exported / "adapter_model.safetensors").is_file()
    assert not list(exported.glob("model*.safetensors"))  # no merged model
    assert safetensors.load_file(exported / "adapter_model.safetensors").keys() == saved.keys()
    chat = [sys.executable, "chat.py", "--prompt", "Hi", "--chat_max_new_tokens", "4"]
    reply = run(chat, project, ENV)
    assert "[chat] model: ../tiny-llama-aqlm + adapter exported/" in reply
    assert verify_project(project) == []

    # The exported adapter on the AQLM base, loaded here without the project's code: every
    # targeted layer is peft's AQLM LoRA layer, and the trained B matrices change the logits.
    from aqlm import QuantizedLinear
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(aqlm_model)
    config.quantization_config["linear_weights_not_to_quantize"] = ["model.embed_tokens", "lm_head"]
    base = AutoModelForCausalLM.from_pretrained(aqlm_model, config=config).eval()
    assert not isinstance(base.lm_head, QuantizedLinear)
    ids = torch.arange(3, 40).unsqueeze(0)
    with torch.no_grad():
        plain = base(input_ids=ids).logits
        model = PeftModel.from_pretrained(base, str(exported)).eval()
        adapted = model(input_ids=ids).logits
    wrapped = [m for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in TARGETS]
    assert wrapped and all(type(m).__name__ == "AqlmLoraLinear" for m in wrapped)
    assert torch.isfinite(adapted).all() and not torch.allclose(plain, adapted)


def test_aqlm_project_on_cuda_pins_the_recorded_resolution(tmp_path: Path) -> None:
    """cuda13.0: aqlm 1.1.7 with ninja (its CUDA kernels build at first use) from the recorded
    pip resolution; model.py's exact workaround lines; no vLLM files."""
    project, files = _project(tmp_path, AQLM)
    assert verify_project(project) == []
    pins = _pins(files["requirements.txt"])
    assert pins["aqlm"] == "1.1.7" and pins["ninja"] == "1.13.2"
    assert "gptqmodel" not in pins and "numba" not in pins
    resolved = _resolution("resolution_aqlm_py3.12.txt")
    for name, version in pins.items():
        assert resolved[name] == version, name
    assert not VLLM_FILES & set(files)
    model = files["model.py"]
    assert (
        '    unquantized = config.quantization_config.get("linear_weights_not_to_quantize") or []\n'
        '    config.quantization_config["linear_weights_not_to_quantize"] = [\n'
        '        name.removesuffix(".weight") for name in unquantized\n'
        "    ]\n"
    ) in model
    assert "model = PeftModel.from_pretrained(model, str(trained))\n" in files["export.py"]
    readme = files["README.md"]
    assert "serve_vllm.sh" not in readme and "vLLM 0.33.0 has no AQLM quantization method" in readme
    (tmp_path / "plain").mkdir()
    plain = write_variant(tmp_path / "plain", {"pins": {"target": "cuda13.0"}})
    assert "config = AutoConfig" not in compile_file(plain).files["model.py"].decode()


def test_cpu_aqlm_pin_is_the_installed_aqlm() -> None:
    """The cpu set's aqlm extra is aqlm alone, the version installed with the set here (pip
    check clean): codebooks other than 8-bit multiply in plain torch on the CPU; 8-bit ones
    need numba and cannot train there anyway (refused for a local model, see below)."""
    from importlib.metadata import version

    from lfc.pins import training_pins

    cpu = training_pins("cpu", ("aqlm",)).packages
    assert set(cpu) - set(training_pins("cpu", ()).packages) == {"aqlm"}
    assert cpu["aqlm"] == version("aqlm") == "1.1.7"


@pytest.mark.parametrize(
    ("prequantized", "quantization", "message"),
    [
        (None, {"quant_method": "aqlm"}, "model.name_or_path: ../m is aqlm-quantized"),
        ("aqlm", {"quant_method": "gptq"}, "but ../m/config.json has a gptq quantization_config"),
        ("gptq", None, "model.prequantized: model.prequantized is gptq, but ../m/config.json has"),
        ("aqlm", {"quant_method": "aqlm", "nbits_per_codebook": 8}, "has 8-bit AQLM codebooks"),
    ],
)
def test_local_model_quantization_is_checked_at_compile_time(
    tmp_path: Path, prequantized: str | None, quantization: dict | None, message: str
) -> None:
    """`lfc compile` reads a local model's config.json: its quant_method must be
    model.prequantized; 8-bit AQLM codebooks cannot train on the cpu target (see
    test_prequantized_formats.py for why)."""
    from lfc.errors import SpecError

    (tmp_path / "m").mkdir()
    config = {"model_type": "llama"}
    if quantization is not None:
        config["quantization_config"] = quantization
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    model = {"name_or_path": "../m", "prequantized": prequantized}
    adapter = AQLM["adapter"] if prequantized else {"kind": "lora"}
    serve = {"serve": {"lora_adapter": True}} if prequantized == "gptq" else {}
    pins = {"pins": {"target": "cuda13.0"}} if prequantized == "gptq" else {}
    spec = write_variant(tmp_path, {"model": model, "adapter": adapter, **serve, **pins})
    with pytest.raises(SpecError, match=message):
        compile_file(spec, tmp_path / "run")
