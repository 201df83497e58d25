"""Fine-tuning methods end to end on the tiny model: each trains, saves and reloads for real.

Every expected size is computed from the base model's own modules, not from PEFT: LoRA adds
r x (in + out) per target linear, modules_to_save a full copy of the module, biases their
length. Runs are 2-3 steps on the CPU; what is checked is what the method must change.
"""

from __future__ import annotations

import json
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
pytest.importorskip("peft")
safetensors = pytest.importorskip("safetensors.torch")

LAUNCH = ["-m", "accelerate.commands.launch", "--config_file", "accelerate/single.yaml"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _project(tmp_path: Path, model: Path, sections: dict) -> Path:
    quickstart = yaml.safe_load((EXAMPLES / "quickstart.yaml").read_text())
    merged = {
        key: value if "kind" in value else {**quickstart.get(key, {}), **value}
        for key, value in sections.items()
    }
    project = tmp_path / "run"
    write_project(compile_file(write_variant(tmp_path, merged, model=model)).files, project)
    ruff = str(Path(sys.executable).with_name("ruff"))
    for check in (["check", "--isolated", "."], ["format", "--isolated", "--check", "."]):
        run([ruff, *check], project, ENV)
    return project


def _train(project: Path, *flags: str) -> None:
    run([sys.executable, "data.py"], project, ENV)
    run([sys.executable, *LAUNCH, "train.py", *flags], project, ENV)


def _linears(model) -> list:
    return [
        module
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name != "lm_head"
    ]


def _base(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def _logits(model, vocab: int) -> torch.Tensor:
    ids = torch.arange(3, 40).remainder(vocab).unsqueeze(0)
    with torch.no_grad():
        return model(input_ids=ids).logits


def _saved_numel(folder: Path) -> int:
    saved = safetensors.load_file(folder / "adapter_model.safetensors")
    return sum(t.numel() for t in saved.values())


def test_pissa_with_lora_plus(tmp_path: Path, tiny_model: Path) -> None:
    """PiSSA trains against a residual base; the saved adapter is rewritten for the original.

    The trained model is rebuilt independently (PiSSA init on the original base, then the final
    checkpoint's weights) and must give the same logits as original base + saved adapter.
    """
    adapter = {"rank": 4, "init": "pissa", "loraplus_lr_ratio": 16.0}
    project = _project(tmp_path, tiny_model, {"adapter": adapter})
    _train(project, "--max_steps", "3", "--save_steps", "3")
    outputs = project / "outputs"
    assert not (outputs / "initial_adapter").exists()
    config = json.loads((outputs / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 32  # rank and alpha doubled

    base = _base(tiny_model)
    lora = sum(8 * (m.in_features + m.out_features) for m in _linears(base))
    assert _saved_numel(outputs) == lora

    # LoRA+: B matrices (and 1-d params) at 16 x the learning rate of A, from the real optimizer.
    state = torch.load(outputs / "checkpoint-3" / "optimizer.pt", weights_only=False)
    rates = sorted({g["initial_lr"] for g in state["param_groups"] if g["params"]})
    assert rates == pytest.approx([1e-3, 16e-3])

    from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict

    vocab = base.config.vocab_size
    converted = PeftModel.from_pretrained(_base(tiny_model), str(outputs)).eval()
    residual = get_peft_model(
        _base(tiny_model),
        LoraConfig(
            r=4,
            lora_alpha=16,
            target_modules="all-linear",
            init_lora_weights="pissa",
        ),
    )
    weights = safetensors.load_file(outputs / "checkpoint-3" / "adapter_model.safetensors")
    set_peft_model_state_dict(residual, weights)
    trained = _logits(residual.eval(), vocab)
    assert torch.allclose(_logits(converted, vocab), trained, atol=1e-4)
    assert not torch.allclose(_logits(base, vocab), trained, atol=1e-3)  # it did train

    run([sys.executable, "export.py"], project, ENV)
    merged = _base(project / "exported")
    assert torch.allclose(_logits(merged, vocab), trained, atol=1e-4)


def test_olora_adapter_reloads_on_the_original_base(tmp_path: Path, tiny_model: Path) -> None:
    project = _project(tmp_path, tiny_model, {"adapter": {"rank": 4, "init": "olora"}})
    _train(project, "--max_steps", "2", "--save_steps", "2")
    outputs = project / "outputs"
    base = _base(tiny_model)
    assert _saved_numel(outputs) == sum(
        8 * (m.in_features + m.out_features) for m in _linears(base)
    )

    from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict

    vocab = base.config.vocab_size
    config = LoraConfig(r=4, lora_alpha=16, target_modules="all-linear", init_lora_weights="olora")
    residual = get_peft_model(_base(tiny_model), config)
    weights = safetensors.load_file(outputs / "checkpoint-2" / "adapter_model.safetensors")
    set_peft_model_state_dict(residual, weights)
    converted = PeftModel.from_pretrained(_base(tiny_model), str(outputs)).eval()
    assert torch.allclose(_logits(converted, vocab), _logits(residual.eval(), vocab), atol=1e-4)


def _biased_model(tiny_model: Path, out: Path) -> Path:
    """The tiny Llama with attention and MLP biases (zero), saved beside its tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(tiny_model)
    config.attention_bias = config.mlp_bias = True
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_model / name).exists():
            shutil.copy(tiny_model / name, out / name)
    return out


@pytest.mark.parametrize("bias", ["all", "lora_only"])
def test_lora_bias_and_modules_to_save(tmp_path: Path, tiny_model: Path, bias: str) -> None:
    """bias all: every bias of the model; lora_only: the target modules' biases. lm_head is
    trained in full (modules_to_save), saved with the adapter and merged by export.py."""
    model = _biased_model(tiny_model, tmp_path / "biased")
    adapter = {
        "rank": 4,
        "target": ["q_proj", "v_proj"],
        "bias": bias,
        "modules_to_save": ["lm_head"],
    }
    project = _project(tmp_path, model, {"adapter": adapter})
    _train(project, "--max_steps", "2")
    base = _base(model)
    targets = [m for n, m in base.named_modules() if n.endswith(("q_proj", "v_proj"))]
    lora = sum(4 * (m.in_features + m.out_features) for m in targets)
    biased = _linears(base) if bias == "all" else targets
    biases = sum(m.bias.numel() for m in biased)
    head = base.lm_head.weight.numel()
    assert _saved_numel(project / "outputs") == lora + biases + head

    from peft import PeftModel

    vocab = base.config.vocab_size
    trained = PeftModel.from_pretrained(_base(model), str(project / "outputs")).eval()
    run([sys.executable, "export.py"], project, ENV)
    merged = _base(project / "exported")
    assert not torch.equal(merged.lm_head.weight, base.lm_head.weight)
    assert torch.allclose(_logits(merged, vocab), _logits(trained, vocab), atol=1e-4)


def test_freeze_trains_only_the_named_modules_of_the_last_layers(
    tmp_path: Path, tiny_model: Path
) -> None:
    adapter = {"kind": "freeze", "trainable_layers": 1, "trainable_modules": ["mlp"]}
    project = _project(tmp_path, tiny_model, {"adapter": adapter})
    _train(project, "--max_steps", "2")
    base = _base(tiny_model)
    trained = _base(project / "outputs")
    last = base.config.num_hidden_layers - 1
    changed = {
        name
        for (name, before), after in zip(
            base.state_dict().items(), trained.state_dict().values(), strict=True
        )
        if not torch.equal(before, after)
    }
    mlp = {n for n in base.state_dict() if n.startswith(f"model.layers.{last}.mlp.")}
    assert changed == mlp


def test_neftune_noise_changes_the_loss_and_eager_checkpointed_training_does_not(
    tmp_path: Path, tiny_model: Path
) -> None:
    """Same seed and data for three runs of two steps.

    NEFTune's noise must make the first loss differ. Eager attention with gradient
    (activation) checkpointing computes the same function and the same gradients as sdpa
    without it, so both losses, the second one after an optimizer step, must match the plain
    run's; a checkpointed LoRA run that lost its gradients would not move between steps.
    """
    variants = {
        "plain": ({}, {}),
        "neftune": ({}, {"neftune_alpha": 5.0}),
        "eager-checkpointed": ({"attn_implementation": "eager"}, {"gradient_checkpointing": True}),
    }
    losses = {}
    for name, (model, train) in variants.items():
        (tmp_path / name).mkdir()
        project = _project(tmp_path / name, tiny_model, {"model": model, "train": train})
        config = yaml.safe_load((project / "config.yaml").read_text())
        assert config.get("neftune_noise_alpha") == train.get("neftune_alpha")
        assert config["activation_checkpointing"] is bool(train.get("gradient_checkpointing"))
        assert config["attn_implementation"] == model.get("attn_implementation", "sdpa")
        _train(project, "--max_steps", "2", "--save_steps", "2")
        state = json.loads(
            (project / "outputs" / "checkpoint-2" / "trainer_state.json").read_text()
        )
        losses[name] = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert losses["plain"][0] != losses["neftune"][0]
    assert losses["eager-checkpointed"] == pytest.approx(losses["plain"], rel=1e-4)
    assert losses["plain"][1] != losses["plain"][0]


@pytest.mark.parametrize("bits", [4, 8])
def test_qlora_trains_adapters_on_a_quantized_base(
    tmp_path: Path, tiny_model: Path, bits: int
) -> None:
    pytest.importorskip("bitsandbytes")
    quantization = (
        {"bits": bits} if bits == 8 else {"bits": 4, "type": "nf4", "compute_dtype": "float32"}
    )
    project = _project(
        tmp_path, tiny_model, {"model": {"quantization": quantization}, "adapter": {"rank": 4}}
    )
    assert "bitsandbytes==" in (project / "requirements.txt").read_text()
    _train(project, "--max_steps", "2")
    base = _base(tiny_model)
    assert _saved_numel(project / "outputs") == sum(
        4 * (m.in_features + m.out_features) for m in _linears(base)
    )
    run([sys.executable, "export.py"], project, ENV)  # merges into the full-precision base
    exported = json.loads((project / "exported" / "config.json").read_text())
    assert "quantization_config" not in exported


def test_rope_scaling_reaches_the_trained_and_exported_model(
    tmp_path: Path, tiny_model: Path
) -> None:
    rope = {"rope_scaling": {"type": "linear", "factor": 2.0}}
    project = _project(tmp_path, tiny_model, {"model": rope, "adapter": {"kind": "full"}})
    _train(project, "--max_steps", "1")
    base = json.loads((tiny_model / "config.json").read_text())
    for folder in ("outputs", "exported"):
        if folder == "exported":
            run([sys.executable, "export.py"], project, ENV)
        config = json.loads((project / folder / "config.json").read_text())
        assert config["rope_parameters"]["rope_type"] == "linear"
        assert config["rope_parameters"]["factor"] == 2.0
        assert config["max_position_embeddings"] == 2 * base["max_position_embeddings"]


def _dpo_log(tmp_path: Path, tiny_model: Path, init: str) -> tuple[Path, list[dict]]:
    """examples/dpo.yaml with LoRA init `init`, trained 2 steps; (outputs, logged steps)."""
    adapter = {"kind": "lora", "rank": 4, "alpha": 8, "init": init}
    folder = tmp_path / init
    folder.mkdir()
    spec = write_variant(folder, {"adapter": adapter}, example="dpo", model=tiny_model)
    project = folder / "run"
    write_project(compile_file(spec).files, project)
    _train(project, "--max_steps", "2", "--save_steps", "2", "--learning_rate", "1e-2")
    outputs = project / "outputs"
    state = json.loads((outputs / "checkpoint-2" / "trainer_state.json").read_text())
    return outputs, [entry for entry in state["log_history"] if "rewards/chosen" in entry]


def test_dpo_reference_is_the_starting_model_with_pissa(tmp_path: Path, tiny_model: Path) -> None:
    """DPO's implicit rewards are beta x log(policy / reference): 0 before the first update.

    With the adapter switched off (TRL's usual reference), a PiSSA model is the residual base,
    not the model training starts from: the first step's rewards would not be 0. train.py keeps
    the starting adapter as the reference instead, and saves only the trained adapter.
    """
    outputs, logged = _dpo_log(tmp_path, tiny_model, "pissa")
    first, second = logged
    assert first["rewards/chosen"] == pytest.approx(0.0, abs=1e-6)
    assert first["rewards/rejected"] == pytest.approx(0.0, abs=1e-6)
    assert second["rewards/chosen"] != pytest.approx(0.0, abs=1e-6)  # the policy moved on
    assert not (outputs / "ref").exists() and not (outputs / "initial_adapter").exists()
    config = json.loads((outputs / "adapter_config.json").read_text())
    assert config["r"] == 8  # rewritten as plain LoRA for the original base, as in SFT

    from peft import PeftModel

    base = _base(tiny_model)
    lora = sum(8 * (m.in_features + m.out_features) for m in _linears(base))
    assert _saved_numel(outputs) == lora
    reloaded = PeftModel.from_pretrained(base, str(outputs)).eval()
    assert list(reloaded.peft_config) == ["default"]
    assert torch.isfinite(_logits(reloaded, base.config.vocab_size)).all()
