"""`model.loader: unsloth`: Unsloth's FastLanguageModel loads the model and adds LoRA.

No GPU here, and unsloth does not run its kernels without one. These tests check the exact
lines the project gets, that its pins are the recorded pip resolution of the Unsloth set
(tests/fixtures/cuda/resolution_unsloth_py3.12.txt), that the code lints and compiles, and
that every stage Unsloth takes compiles. `nox -s gpu` (tests/gpu/run_gpu_checks.py) trains it
on a CUDA machine. The combinations it refuses are bad-spec corpus cases 294 and 340-349.

The Unsloth set pins older transformers (5.17.0), trl (1.15.0) and datasets (4.8.5) than the
tested cpu set: test_config_parses_with_the_unsloth_set parses the generated config.yaml with
the generated config.py in a venv of those versions (without unsloth). Building that venv
takes minutes, so it runs only when LFC_UNSLOTH_STACK_PYTHON names its python (see
tests/fixtures/cuda/README.md).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_kernels import _pins, _project, _resolution

from lfc.errors import SpecError
from lfc.pins import training_pins
from lfc.pipeline import compile_file

from conftest import EXAMPLES, write_variant

GPU = {"pins": {"target": "cuda13.0"}}
UNSLOTH = {"name_or_path": "../tiny-llama", "dtype": "bfloat16", "loader": "unsloth"}
RESOLUTION = "resolution_unsloth_py3.12.txt"
EXTRAS = "resolution_unsloth_extras_py3.12.txt"  # with tensorboard and deepspeed

FIRST_LINES = """\"\"\"Tokenizer, base model and LoRA adapter of this project.

Imported by data.py, train.py, chat.py and export.py; not run on its own.
Unsloth's FastLanguageModel loads the model for training and adds the LoRA adapter;
chat.py and export.py load the trained weights with transformers + peft.
\"\"\"

from pathlib import Path

import torch
from peft import PeftModel
"""

LOAD = """    # Here, not at the top: data.py, chat.py and export.py run without Unsloth. train.py
    # imports unsloth before anything else, as Unsloth needs to patch transformers.
    from unsloth import FastLanguageModel

    model, _ = FastLanguageModel.from_pretrained(
        model_name=args.model_name_or_path,
        max_seq_length=max_seq_length,
        dtype=None if args.dtype == "auto" else getattr(torch, args.dtype),
        load_in_4bit=False,
        revision=args.model_revision,
        trust_remote_code=trust_remote_code,
    )
    return model
"""

ADD_LORA = """    from unsloth import FastLanguageModel  # as in load_unsloth_model

    targets = args.lora_target_modules
    return FastLanguageModel.get_peft_model(
        model,
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        use_gradient_checkpointing="unsloth" if gradient_checkpointing else False,
        random_state=seed,
    )
"""

TRAIN_SETUP = """    model = load_unsloth_model(
        args.model,
        args.data.cutoff_len,
        trust_remote_code=args.trust_remote_code,
    )
    model = add_lora(
        model, args.lora, args.training.gradient_checkpointing, args.training.seed
    )
"""


def _variant(folder: Path, example: str, sections: dict) -> Path:
    """examples/EXAMPLE.yaml with `sections`, beside the example data and reward functions."""
    (folder / "rewards").symlink_to(EXAMPLES / "rewards")
    return write_variant(folder, sections, example)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_unsloth_loads_and_adds_lora_with_the_unsloth_pins(tmp_path: Path) -> None:
    _, files = _project(tmp_path, {"model": UNSLOTH})
    model = files["model.py"]
    assert model.startswith(FIRST_LINES)
    assert LOAD in model and ADD_LORA in model
    assert "LoraConfig" not in model and "def lora_config" not in model
    # chat.py and export.py load the saved adapter with transformers + peft.
    assert "model = PeftModel.from_pretrained(model, args.training.output_dir)\n" in model
    train = files["train.py"]
    first = "# Unsloth first: importing it patches transformers, peft and trl for its kernels.\n"
    first += "import unsloth  # noqa: F401  # isort: skip\n\nimport hashlib\n"
    assert first in train and train.index(first) < train.index("from trl import")
    assert TRAIN_SETUP in train and "peft_config" not in train
    assert "from model import CHAT_TEMPLATE, add_lora, load_tokenizer, load_unsloth_model\n" in (
        train
    )
    config = yaml.safe_load(files["config.yaml"])
    # transformers 5.17 has gradient_checkpointing only (5.24 renamed it).
    assert "gradient_checkpointing" in config and "activation_checkpointing" not in config
    assert "attn_implementation" in config  # chat.py and export.py load with transformers
    pins = _pins(files["requirements.txt"])
    resolved = _resolution(RESOLUTION)
    assert {name: pins[name] for name in ("transformers", "trl", "datasets", "torch")} == {
        "transformers": "5.17.0",
        "trl": "1.15.0",
        "datasets": "4.8.5",
        "torch": "2.13.0",
    }
    assert pins["unsloth"] == pins["unsloth-zoo"] == "2026.10.9"
    for name, version in pins.items():
        assert resolved[_normal(name)] == version, name
    lock = yaml.safe_load(files["lfc.lock.json"])
    assert lock["pins"]["training"] == pins
    assert "Loader unsloth: unsloth 2026.10.9 and unsloth-zoo 2026.10.9" in lock["pins"]["reason"]
    (tmp_path / "plain").mkdir()
    transformers = {key: value for key, value in UNSLOTH.items() if key != "loader"}
    plain = compile_file(write_variant(tmp_path / "plain", {**GPU, "model": transformers})).files
    assert "unsloth" not in plain["requirements.txt"].decode()
    assert "unsloth" not in plain["model.py"].decode()


def test_unsloth_resolution_differs_from_the_cuda_set_only_where_unsloth_bounds_it() -> None:
    """The recorded resolution keeps every package of the cuda13.0 set that unsloth does not
    bound, and the pins of the set are those of the resolution."""
    base = _resolution("resolution_py3.12.txt")
    resolved = _resolution(RESOLUTION)
    training = training_pins("cuda13.0", (), loader="unsloth").packages
    for name, version in training.items():
        assert resolved[_normal(name)] == version, name
    kept = set(training_pins("cuda13.0", ()).packages) - {"transformers", "trl", "datasets"}
    assert all(resolved[name] == base[name] for name in kept)
    extras = _resolution(EXTRAS)  # + tensorboard and deepspeed: only packages added
    assert all(extras[name] == version for name, version in resolved.items())
    assert extras["deepspeed"] == training_pins("cuda13.0", ("deepspeed",)).packages["deepspeed"]


def test_unsloth_options_reach_get_peft_model_and_from_pretrained(tmp_path: Path) -> None:
    adapter = {
        "kind": "lora",
        "rank": 8,
        "alpha": 16,
        "target": ["q_proj", "v_proj"],
        "dora": True,
        "rslora": True,
        "init": "gaussian",
        "bias": "lora_only",
        "modules_to_save": ["lm_head"],
    }
    model = {**UNSLOTH, "quantization": {"bits": 4}}
    _, files = _project(tmp_path, {"model": model, "adapter": adapter})
    text = files["model.py"]
    for line in (
        "        use_dora=args.lora_use_dora,\n",
        "        use_rslora=args.lora_use_rslora,\n",
        "        init_lora_weights=args.lora_init,\n",
        "        bias=args.lora_bias,\n",
        "        modules_to_save=args.lora_modules_to_save,\n",
        "        load_in_4bit=False,  # the bitsandbytes config below says 4 or 8 bits\n"
        "        quantization_config=quantization,\n",
    ):
        assert line in text
    assert "        quantization_config(args.quantization),\n" in files["train.py"]
    assert "    quantization: BitsAndBytesConfig,\n" in text


def test_unsloth_full_fine_tuning_uses_its_full_finetuning_path(tmp_path: Path) -> None:
    _, files = _project(tmp_path, {"model": UNSLOTH, "adapter": {"kind": "full"}})
    model = files["model.py"]
    assert (
        "        full_finetuning=True,\n"
        '        use_gradient_checkpointing="unsloth" if gradient_checkpointing else False,\n'
    ) in model
    assert "get_peft_model" not in model and "from peft" not in model
    assert "        args.training.gradient_checkpointing,\n" in files["train.py"]


@pytest.mark.parametrize("example", ["pt-text", "dpo", "kto", "orpo", "simpo", "grpo"])
@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_unsloth_compiles_for_every_stage_it_takes(
    tmp_path: Path, example: str, adapter: str
) -> None:
    spec = yaml.safe_load((EXAMPLES / f"{example}.yaml").read_text())
    sections = {**GPU, "model": {**spec["model"], "loader": "unsloth", "dtype": "bfloat16"}}
    if adapter == "full":
        sections["adapter"] = {"kind": "full"}
    files = compile_file(_variant(tmp_path, example, sections)).files
    train = files["train.py"].decode()
    assert "import unsloth  # noqa: F401  # isort: skip\n" in train
    assert "peft_config" not in train and "load_unsloth_model(" in train
    # A full DPO/KTO run still loads its frozen reference model with transformers.
    reference = "ref_model=load_model(" in train
    assert reference == (adapter == "full" and example in ("dpo", "kto"))
    project = tmp_path / "run"
    project.mkdir()
    for name, data in files.items():
        if name.endswith(".py") and "/" not in name:
            (project / name).write_bytes(data)
    ruff = str(Path(sys.executable).with_name("ruff"))
    result = subprocess.run(
        [ruff, "check", "--isolated", "."], cwd=project, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    "distributed",
    [
        {"kind": "ddp", "num_processes": 2},
        {"kind": "fsdp", "num_processes": 2},
        {"kind": "deepspeed", "zero_stage": 3, "num_processes": 2},
    ],
    ids=lambda d: d["kind"],
)
def test_unsloth_compiles_with_every_distributed_kind(tmp_path: Path, distributed: dict) -> None:
    """unsloth 2026.10.9's source handles DDP (models/_ddp_defaults.py), accelerate's FSDP2
    launch (fsdp2_launch.py, loader_utils.fsdp2_requested) and DeepSpeed ZeRO
    (loader_utils.deepspeed_zero3_device_map): lfc's launch configs compile with it."""
    _, files = _project(tmp_path, {"model": UNSLOTH, "distributed": distributed})
    kind = distributed["kind"]
    assert f"accelerate/{kind}.yaml" in files
    pins = _pins(files["requirements.txt"])
    resolved = _resolution(RESOLUTION if kind != "deepspeed" else EXTRAS)
    assert ("deepspeed" in pins) == (kind == "deepspeed")
    for name, version in pins.items():
        assert resolved[_normal(name)] == version, name


@pytest.mark.parametrize(
    ("package", "bound"),
    [("transformers", "5.17.0"), ("trl", "1.15.0"), ("datasets", "5.0.0")],
)
def test_unsloth_cpu_refusal_cites_the_cpu_pins_above_its_bounds(package: str, bound: str) -> None:
    """unsloth 2026.10.9's metadata: transformers<=5.17.0, trl<=1.15.0, datasets<5.0.0; the
    cpu set (the tested one) is above each bound, as the cpu refusal says."""
    from packaging.version import Version

    assert Version(training_pins("cpu", ()).packages[package]) > Version(bound)
    spec = {
        "lfc": 1,
        "model": {"name_or_path": "m", "loader": "unsloth"},
        "template": "llama3",
        "data": {"datasets": [{"path": "d.json", "format": "alpaca"}]},
    }
    from lfc.schemas.spec import Spec

    with pytest.raises(ValueError, match=re.escape(f"{package}<")):
        Spec.model_validate(spec)


def test_unsloth_stage_refusal(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="stage rm trains a sequence classifier"):
        compile_file(
            write_variant(tmp_path, {**GPU, "model": {**UNSLOTH, "name_or_path": "m"}}, "rm")
        )


STACK = os.environ.get("LFC_UNSLOTH_STACK_PYTHON")

# Run in the Unsloth set's venv, in a generated project: parse config.yaml as train.py does
# (unknown keys raise), and import every transformers/trl/peft/datasets name the project uses.
PROBE = """
import ast, importlib, sys
from pathlib import Path
from config import parse_args, parse_data_args
# transformers 5.17 refuses bf16 without a GPU unless told it runs on the CPU.
args = parse_args(["--use_cpu", "true"])
parse_data_args([])
names = 0
for script in sorted(Path(".").glob("*.py")):
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in (
            "transformers", "trl", "peft", "datasets", "accelerate"
        ):
            module = importlib.import_module(node.module)
            for alias in node.names:
                getattr(module, alias.name)
                names += 1
print(type(args.training).__name__, names)
"""


@pytest.mark.skipif(STACK is None, reason="set LFC_UNSLOTH_STACK_PYTHON (a venv of the set)")
@pytest.mark.parametrize("example", ["quickstart", "pt-text", "dpo", "kto", "orpo", "grpo", "fsdp"])
def test_config_parses_with_the_unsloth_set(tmp_path: Path, example: str) -> None:
    sections = {"distributed": {"kind": "fsdp", "num_processes": 2}} if example == "fsdp" else {}
    example = "quickstart" if example == "fsdp" else example
    spec = yaml.safe_load((EXAMPLES / f"{example}.yaml").read_text())
    model = {**spec["model"], "loader": "unsloth", "dtype": "bfloat16"}
    files = compile_file(_variant(tmp_path, example, {**GPU, **sections, "model": model})).files
    project = tmp_path / "run"
    for name, data in files.items():
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    env = {**os.environ, "PYTHONPATH": str(project)}
    result = subprocess.run(
        [str(STACK), "-c", PROBE], cwd=project, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[0].endswith("Config")
