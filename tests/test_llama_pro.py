"""LLaMA Pro block expansion end to end on the tiny model (2 layers, 2 new blocks).

The expected layout is computed here from the base model: after each group of
layers / new_layers original blocks comes a copy of the group's last block with o_proj and
down_proj zero. The expanded model must give the base model's logits, training must change only
the new blocks, and the export must reload with the trained weights.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lfc.pipeline import compile_file
from lfc.writer import write_project

from conftest import EXAMPLES, write_variant
from project_env import run

torch = pytest.importorskip("torch")
safetensors = pytest.importorskip("safetensors.torch")

LAUNCH = ["-m", "accelerate.commands.launch", "--config_file", "accelerate/single.yaml"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
NEW_LAYERS = 2


def _model(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _logits(model) -> torch.Tensor:
    ids = torch.arange(3, 40).remainder(model.config.vocab_size).unsqueeze(0)
    with torch.no_grad():
        return model(input_ids=ids).logits


def _expected_layout(num_layers: int, new_layers: int) -> list[tuple[int, bool]]:
    """(original layer copied, is it a new block) for each layer of the expanded model."""
    group = num_layers // new_layers
    layout = []
    for index in range(num_layers):
        layout.append((index, False))
        if (index + 1) % group == 0:
            layout.append((index, True))
    return layout


def _layer(weights: dict, index: int) -> dict:
    prefix = f"model.layers.{index}."
    return {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}


def test_expand_train_only_new_blocks_and_export(tmp_path: Path, tiny_model: Path) -> None:
    adapter = {"kind": "freeze", "llama_pro": {"new_layers": NEW_LAYERS}}
    project = tmp_path / "run"
    spec = write_variant(tmp_path, {"adapter": adapter}, model=tiny_model)
    write_project(compile_file(spec).files, project)
    ruff = str(Path(sys.executable).with_name("ruff"))
    for check in (["check", "--isolated", "."], ["format", "--isolated", "--check", "."]):
        run([ruff, *check], project, ENV)
    readme = (project / "README.md").read_text()
    assert readme.index("python expand.py") < readme.index("python data.py")

    run([sys.executable, "expand.py"], project, ENV)
    base, expanded = _model(tiny_model), _model(project / "expanded")
    layout = _expected_layout(base.config.num_hidden_layers, NEW_LAYERS)
    assert expanded.config.num_hidden_layers == len(layout) == 2 + NEW_LAYERS
    base_weights = safetensors.load_file(tiny_model / "model.safetensors")
    grown = safetensors.load_file(project / "expanded" / "model.safetensors")
    for position, (source, new) in enumerate(layout):
        copied, original = _layer(grown, position), _layer(base_weights, source)
        assert copied.keys() == original.keys()
        for name, weight in original.items():
            zeroed = new and name in ("self_attn.o_proj.weight", "mlp.down_proj.weight")
            expected = torch.zeros_like(weight) if zeroed else weight
            assert torch.equal(copied[name], expected), (position, name)
    outside = {k: v for k, v in base_weights.items() if not k.startswith("model.layers.")}
    for name, weight in outside.items():
        assert torch.equal(grown[name], weight), name
    # The exact same function before training.
    assert torch.allclose(_logits(expanded), _logits(base), atol=1e-6, rtol=0)

    run([sys.executable, "data.py"], project, ENV)
    run(
        [sys.executable, *LAUNCH, "train.py", "--max_steps", "2", "--save_steps", "2"], project, ENV
    )
    trained = safetensors.load_file(project / "outputs" / "model.safetensors")
    assert trained.keys() == grown.keys()
    new_blocks = {f"model.layers.{p}." for p, (_, new) in enumerate(layout) if new}
    for name, weight in grown.items():
        changed = not torch.equal(trained[name], weight)
        assert changed == any(name.startswith(block) for block in new_blocks), name

    run([sys.executable, "export.py"], project, ENV)
    exported = _model(project / "exported")
    assert exported.config.num_hidden_layers == len(layout)
    reference = _model(project / "outputs")
    assert torch.allclose(_logits(exported), _logits(reference), atol=1e-5)
    assert not torch.allclose(_logits(exported), _logits(base), atol=1e-4)  # it did train


def test_an_expanded_model_is_trained_without_expand_py(tmp_path: Path) -> None:
    """expand: false (a model already expanded elsewhere): no expand.py, the model as given."""
    quickstart = yaml.safe_load((EXAMPLES / "quickstart.yaml").read_text())
    adapter = {"kind": "freeze", "llama_pro": {"new_layers": 8, "expand": False}}
    files = compile_file(write_variant(tmp_path, {"adapter": adapter})).files
    assert "expand.py" not in files
    config = yaml.safe_load(files["config.yaml"])
    assert config["model_name_or_path"] == quickstart["model"]["name_or_path"]
    assert config["freeze_new_layers"] == 8 and "freeze_trainable_layers" not in config
    assert "expand_base_model" not in config


def _sliding_window_qwen2(folder: Path, tokenizer_source: Path) -> Path:
    """A tiny random Qwen2 whose config lists per-layer attention kinds (layer_types)."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        use_sliding_window=True,
        sliding_window=4,
        max_window_layers=1,  # layer 0 attends to everything, layer 1 through a window
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_expand_keeps_each_copied_layers_attention_kind(tmp_path: Path, tiny_model: Path) -> None:
    """Qwen2 with a sliding-window layer: each new block attends like the block it copies."""
    base_dir = _sliding_window_qwen2(tmp_path / "tiny-qwen2", tiny_model)
    adapter = {"kind": "freeze", "llama_pro": {"new_layers": NEW_LAYERS}}
    project = tmp_path / "run"
    write_project(
        compile_file(write_variant(tmp_path, {"adapter": adapter}, model=base_dir)).files, project
    )
    run([sys.executable, "expand.py"], project, ENV)

    base, expanded = _model(base_dir), _model(project / "expanded")
    assert base.config.layer_types == ["full_attention", "sliding_attention"]
    layout = _expected_layout(base.config.num_hidden_layers, NEW_LAYERS)
    expected = [base.config.layer_types[source] for source, _ in layout]
    assert expanded.config.layer_types == expected
    assert [layer.self_attn.layer_type for layer in expanded.model.layers] == expected
    assert torch.allclose(_logits(expanded), _logits(base), atol=1e-6, rtol=0)


def test_expand_refuses_a_layout_it_cannot_grow(tmp_path: Path, tiny_model: Path) -> None:
    """A model without Llama-style blocks gets a message naming its class, not a traceback."""
    from transformers import GPT2Config, GPT2LMHeadModel

    base_dir = tmp_path / "tiny-gpt2"
    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=300)).save_pretrained(
        base_dir
    )
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (base_dir / name).write_bytes((tiny_model / name).read_bytes())
    adapter = {"kind": "freeze", "llama_pro": {"new_layers": NEW_LAYERS}}
    project = tmp_path / "run"
    write_project(
        compile_file(write_variant(tmp_path, {"adapter": adapter}, model=base_dir)).files, project
    )
    result = subprocess.run(
        [sys.executable, "expand.py"], cwd=project, env=ENV, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "LLaMA Pro needs Llama-style decoder blocks (model.layers[i].self_attn.o_proj and "
        ".mlp.down_proj); GPT2LMHeadModel has another layout"
    )
    assert not (project / "expanded").exists() and not (project / "expanded.tmp").exists()
