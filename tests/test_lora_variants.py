"""LoRA variants end to end on the tiny model: DoRA and rsLoRA train, save, reload and merge.

The expected adapter size is computed from the base model's own linear layers, not from PEFT:
LoRA adds r x (in + out) per target module, DoRA one magnitude per output feature on top.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lfc.errors import SpecError
from lfc.pipeline import compile_file
from lfc.writer import write_project

from conftest import EXAMPLES, write_variant
from project_env import run

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
safetensors = pytest.importorskip("safetensors.torch")

LAUNCH = ["-m", "accelerate.commands.launch", "--config_file", "accelerate/single.yaml"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _run(args: list[str], cwd: Path) -> None:
    run(args, cwd, ENV)


def _project(tmp_path: Path, tiny_model: Path, adapter: dict, serve: dict | None = None) -> Path:
    quickstart = yaml.safe_load((EXAMPLES / "quickstart.yaml").read_text())
    sections = {"adapter": {**quickstart["adapter"], **adapter}}
    if serve is not None:
        sections["serve"] = serve
    project = tmp_path / "run"
    write_project(compile_file(write_variant(tmp_path, sections, model=tiny_model)).files, project)
    return project


def test_dora_and_rslora_train_save_reload_and_merge(tmp_path: Path, tiny_model: Path) -> None:
    project = _project(tmp_path, tiny_model, {"dora": True, "rslora": True, "rank": 4})
    assert "use_dora=args.lora_use_dora" in (project / "model.py").read_text()
    ruff = str(Path(sys.executable).with_name("ruff"))
    for check in (["check", "--isolated", "."], ["format", "--isolated", "--check", "."]):
        subprocess.run([ruff, *check], cwd=project, check=True, capture_output=True)
    _run([sys.executable, "data.py"], project)
    _run([sys.executable, *LAUNCH, "train.py", "--max_steps", "2"], project)
    outputs = project / "outputs"
    config = json.loads((outputs / "adapter_config.json").read_text())
    assert config["use_dora"] is True and config["use_rslora"] is True

    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    linears = [
        m
        for name, m in base.named_modules()
        if isinstance(m, torch.nn.Linear) and name != "lm_head"
    ]
    rank = 4
    expected = sum(rank * (m.in_features + m.out_features) + m.out_features for m in linears)
    saved = safetensors.load_file(outputs / "adapter_model.safetensors")
    assert sum(t.numel() for t in saved.values()) == expected
    assert sum(1 for k in saved if "magnitude" in k) == len(linears)

    from peft import PeftModel

    model = PeftModel.from_pretrained(base, str(outputs))
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert math.isclose(layer.scaling["default"], 16 / math.sqrt(rank))  # rsLoRA's alpha/sqrt(r)

    _run([sys.executable, "export.py"], project)
    merged = AutoModelForCausalLM.from_pretrained(project / "exported")
    fresh = AutoModelForCausalLM.from_pretrained(tiny_model)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged.state_dict()[q], fresh.state_dict()[q])
    logits = merged(torch.tensor([[1, 2, 3]])).logits
    assert torch.isfinite(logits).all()


def test_plain_lora_generates_no_variant_code(tmp_path: Path, tiny_model: Path) -> None:
    project = _project(tmp_path, tiny_model, {})
    for name in ("model.py", "config.py", "config.yaml"):
        text = (project / name).read_text()
        assert "dora" not in text and "rslora" not in text, name


def test_vllm_adapter_serving_refuses_dora(tmp_path: Path, tiny_model: Path) -> None:
    with pytest.raises(SpecError, match="vLLM 0.33 does not load DoRA adapters"):
        _project(tmp_path, tiny_model, {"dora": True}, serve={"lora_adapter": True})
