"""`template: {jinja: ...}`: a user's template is checked at compile time, then used everywhere."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lfc.errors import SpecError
from lfc.pipeline import compile_file

from conftest import EXAMPLES

GOOD = """\
{%- for message in messages %}
{%- if message['role'] == 'assistant' %}
{{- '### Assistant:\\n' }}
{%- generation %}
{{- message['content'] + '<|im_end|>' }}
{%- endgeneration %}
{{- '\\n' }}
{%- else %}
{{- '### ' + message['role'] + ':\\n' + message['content'] + '\\n' }}
{%- endif %}
{%- endfor %}
"""


def _spec(tmp_path: Path, template_text: str, options: str = 'end_of_turn: "<|im_end|>"') -> Path:
    shutil.copytree(EXAMPLES / "data", tmp_path / "data", dirs_exist_ok=True)
    (tmp_path / "mine.jinja").write_text(template_text, encoding="utf-8")
    text = (EXAMPLES / "quickstart.yaml").read_text()
    text = text.replace("template: llama3", "template: {jinja: mine.jinja, " + options + "}")
    (tmp_path / "spec.yaml").write_text(text)
    return tmp_path / "spec.yaml"


def test_custom_template_is_copied_and_normalized(tmp_path: Path) -> None:
    files = compile_file(_spec(tmp_path, GOOD)).files
    assert files["chat_template.jinja"] == GOOD.encode()
    assert b"jinja: chat_template.jinja" in files["spec.yaml"]
    assert b'END_OF_TURN = "<|im_end|>"' in files["model.py"]
    # The project recompiles from its own normalized spec to the same bytes.
    out = tmp_path / "run"
    from lfc.writer import write_project

    write_project(files, out)
    assert compile_file(out / "spec.yaml").files == files


@pytest.mark.parametrize(
    ("template_text", "options", "message"),
    [
        (
            GOOD.replace("{%- generation %}\n", "").replace("{%- endgeneration %}\n", ""),
            'end_of_turn: "<|im_end|>"',
            "has no {% generation %}...{% endgeneration %} block",
        ),
        (GOOD.replace("{%- endif %}", "{%- endiff %}"), "", "mine.jinja:10: template syntax error"),
        (
            GOOD.replace("'### ' + message['role']", "raise_exception('no') + message['role']"),
            "",
            "fails on every sample conversation: no",
        ),
        (GOOD, 'end_of_turn: "<|eot|>"', "end_of_turn '<|eot|>' is not inside a generation block"),
        (
            GOOD.replace(
                "{{- '### ' + message['role'] + ':\\n' + message['content'] + '\\n' }}",
                "{% generation %}{{ message['content'] }}{% endgeneration %}",
            ),
            "",
            "the user text 'What is 2 + 2?' is inside a generation block",
        ),
        (
            GOOD.replace("{{- message['content'] + '<|im_end|>' }}", "{{- '<|im_end|>' }}"),
            "",
            "the assistant text 'It is 4.' is rendered outside every generation block",
        ),
    ],
)
def test_bad_custom_templates_are_compile_errors(
    tmp_path: Path, template_text: str, options: str, message: str
) -> None:
    with pytest.raises(SpecError) as info:
        compile_file(_spec(tmp_path, template_text, options))
    text = str(info.value)
    assert "template.jinja" in text and message in text, text


def test_custom_template_path_rules(tmp_path: Path) -> None:
    spec = _spec(tmp_path, GOOD)
    spec.write_text(spec.read_text().replace("mine.jinja", "mine.txt"))
    with pytest.raises(SpecError, match="a chat template file ends in .jinja"):
        compile_file(spec)
    spec = _spec(tmp_path, GOOD)
    (tmp_path / "mine.jinja").unlink()
    with pytest.raises(SpecError, match="template.jinja: 'mine.jinja' does not exist"):
        compile_file(spec)


def test_sandbox_blocks_attribute_escapes(tmp_path: Path) -> None:
    hostile = GOOD.replace(
        "{%- for message in messages %}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}{%- for message in messages %}",
    )
    with pytest.raises(SpecError, match="fails on every sample conversation"):
        compile_file(_spec(tmp_path, hostile))
