"""export.py for real: several LoRA adapters merged in order, dtype, shard size, and a
bitsandbytes 4-bit copy that reloads and generates on the CPU.

The merged weights are checked against an independent computation from the saved files:
W = W_base + sum over adapters of (alpha / r) * B @ A, read straight from the safetensors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lfc.pipeline import compile_file
from lfc.writer import write_project

from conftest import write_variant
from project_env import run

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
safetensors = pytest.importorskip("safetensors.torch")

LAUNCH = ["-m", "accelerate.commands.launch", "--config_file", "accelerate/single.yaml"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _run(args: list[str], cwd: Path) -> str:
    return run(args, cwd, ENV)


def _tensors(folder: Path) -> dict:
    weights: dict = {}
    for shard in sorted(folder.glob("*.safetensors")):
        weights.update(safetensors.load_file(shard))
    return weights


def _expected(base: dict, adapters: list[Path]) -> dict:
    merged = {name: tensor.clone() for name, tensor in base.items()}
    for adapter in adapters:
        config = json.loads((adapter / "adapter_config.json").read_text())
        scale = config["lora_alpha"] / config["r"]
        lora = safetensors.load_file(adapter / "adapter_model.safetensors")
        for key, a in lora.items():
            if ".lora_A." not in key:
                continue
            b = lora[key.replace(".lora_A.", ".lora_B.")]
            target = key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
            merged[target] += scale * (b @ a)
    return merged


def test_export_merges_adapters_in_order_with_dtype_shards_and_a_4bit_copy(
    tmp_path: Path, tiny_model: Path
) -> None:
    pytest.importorskip("bitsandbytes")
    spec = write_variant(tmp_path, {"export": {"quantization": "bnb-4bit"}}, model=tiny_model)
    project = tmp_path / "run"
    write_project(compile_file(spec).files, project)
    assert "bitsandbytes==0.50.2" in (project / "requirements.txt").read_text().splitlines()

    _run([sys.executable, "data.py"], project)
    _run([sys.executable, *LAUNCH, "train.py", "--max_steps", "2"], project)
    second = ["--max_steps", "2", "--output_dir", "outputs-b", "--seed", "7"]
    _run([sys.executable, *LAUNCH, "train.py", *second, "--learning_rate", "5e-3"], project)
    adapters = [project / "outputs", project / "outputs-b"]

    flags = ["--export_extra_adapters", "outputs-b", "--export_dtype", "bfloat16"]
    out = _run([sys.executable, "export.py", *flags, "--export_max_shard_size", "300KB"], project)
    assert "merged outputs/" in out and "merged outputs-b/" in out
    exported = project / "exported"
    shards = sorted(exported.glob("model-*.safetensors"))
    assert len(shards) > 1 and (exported / "model.safetensors.index.json").is_file()
    assert all(shard.stat().st_size < 2 * 300_000 for shard in shards)

    weights = _tensors(exported)
    expected = _expected(_tensors(tiny_model), adapters)
    assert set(weights) == set(expected)
    moved = 0
    for name, tensor in weights.items():
        assert tensor.dtype == torch.bfloat16, name
        # bfloat16 keeps 8 significant bits: rounding is at most 2**-8 of the value.
        torch.testing.assert_close(tensor.float(), expected[name], rtol=2**-8, atol=1e-6)
        moved += not torch.equal(expected[name], _tensors(tiny_model)[name])
    assert moved > 0, "the adapters changed no weight: the test would prove nothing"

    quantized = project / "exported-bnb-4bit"
    config = json.loads((quantized / "config.json").read_text())["quantization_config"]
    assert config["load_in_4bit"] and config["bnb_4bit_quant_type"] == "nf4"
    assert config["bnb_4bit_use_double_quant"]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(quantized)
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    tokenizer = AutoTokenizer.from_pretrained(quantized)
    assert tokenizer.chat_template == (project / "chat_template.jinja").read_text()
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    logits = model(**inputs).logits
    assert torch.isfinite(logits).all()
    output = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert output.shape[1] > inputs["input_ids"].shape[1]


def test_export_refuses_a_folder_without_an_adapter(tmp_path: Path, tiny_model: Path) -> None:
    project = tmp_path / "run"
    write_project(compile_file(write_variant(tmp_path, {}, model=tiny_model)).files, project)
    result = subprocess.run(
        [sys.executable, "export.py"], cwd=project, env=ENV, capture_output=True, text=True
    )
    assert result.returncode == 1 and "run train.py first" in result.stderr
    (project / "outputs").mkdir()
    (project / "outputs" / "adapter_config.json").write_text("{}")
    result = subprocess.run(
        [sys.executable, "export.py", "--export_extra_adapters", "nowhere"],
        cwd=project,
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "nowhere/ holds no adapter_config.json" in result.stderr
    assert not (project / "exported").exists()
