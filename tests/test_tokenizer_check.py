"""The template's tokens must be in a local model's tokenizer, or be added on purpose."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lfc.errors import SpecError
from lfc.pipeline import compile_file
from lfc.writer import write_project

from conftest import EXAMPLES

TEMPLATE = """\
{%- for message in messages %}
{%- if message['role'] == 'assistant' %}
{{- '<|brand_new|>' }}
{%- generation %}
{{- message['content'] + '<|im_end|>' }}
{%- endgeneration %}
{%- else %}
{{- message['role'] + ': ' + message['content'] + '\\n' }}
{%- endif %}
{%- endfor %}
"""


def _spec(tmp_path: Path, tiny_model: Path, add: bool) -> Path:
    shutil.copytree(EXAMPLES / "data", tmp_path / "data", dirs_exist_ok=True)
    if not (tmp_path / "tiny-llama").exists():
        shutil.copytree(tiny_model, tmp_path / "tiny-llama")
    (tmp_path / "mine.jinja").write_text(TEMPLATE)
    text = (EXAMPLES / "quickstart.yaml").read_text()
    text = text.replace(
        "template: llama3",
        'template: {jinja: mine.jinja, end_of_turn: "<|im_end|>", '
        'special_tokens: ["<|brand_new|>", "<|im_end|>"]}',
    )
    if add:
        text = text.replace("  dtype: float32", "  dtype: float32\n  add_special_tokens: true")
    (tmp_path / "spec.yaml").write_text(text)
    return tmp_path / "spec.yaml"


def test_missing_template_token_is_a_compile_error(tmp_path: Path, tiny_model: Path) -> None:
    spec = _spec(tmp_path, tiny_model, add=False)
    compile_file(spec)  # without an output folder the model cannot be found: no check
    with pytest.raises(SpecError) as info:
        compile_file(spec, tmp_path / "run")
    assert str(info.value) == (
        f"{spec}:7:3: model.name_or_path: the tokenizer in ../tiny-llama lacks the custom "
        "template's tokens ['<|brand_new|>']; pick this model family's template, or set "
        "model.add_special_tokens: true to add them (the embeddings grow)"
    )


def test_registry_template_of_the_tiny_model_passes(tmp_path: Path, tiny_model: Path) -> None:
    shutil.copytree(tiny_model, tmp_path / "tiny-llama")
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    compile_file(tmp_path / "examples" / "quickstart.yaml", tmp_path / "examples" / "run")


def test_added_tokens_train_export_and_chat(tmp_path: Path, tiny_model: Path) -> None:
    spec = _spec(tmp_path, tiny_model, add=True)
    project = tmp_path / "run"
    write_project(compile_file(spec, project).files, project)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, *args], cwd=project, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    run("data.py")
    run(
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        "accelerate/single.yaml",
        "train.py",
        "--max_steps",
        "2",
    )
    run("export.py")
    tokenizer = json.loads((project / "exported" / "tokenizer.json").read_text())
    assert "<|brand_new|>" in {t["content"] for t in tokenizer["added_tokens"]}
    config = json.loads((project / "exported" / "config.json").read_text())
    assert (
        config["vocab_size"]
        == json.loads((tiny_model / "config.json").read_text())["vocab_size"] + 1
    )
    assert "parity: ok" in run("tests/test_chat_template.py")
    assert run("chat.py", "--prompt", "hi", "--chat_max_new_tokens", "3").startswith(
        "[chat] model: exported/"
    )
