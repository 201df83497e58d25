"""Registry templates render exactly what the official templates render."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lfc.chat_templates import get_template, template_names

from conversations import PLAIN, TOOLS

render_jinja_template = pytest.importorskip(
    "transformers.utils.chat_template_utils"
).render_jinja_template

REFERENCES = Path(__file__).parent / "fixtures" / "chat_templates"
WITH_REFERENCE = [n for n in template_names() if get_template(n).reference]


def reference(name: str) -> dict:
    return json.loads((REFERENCES / get_template(name).reference).read_text(encoding="utf-8"))


def render(
    source: str, messages: list[dict], generation_prompt: bool, tools: list | None, bos: str | None
) -> str:
    kwargs = {"bos_token": bos} if bos else {}
    text, _ = render_jinja_template(
        conversations=[messages],
        tools=tools,
        chat_template=source,
        add_generation_prompt=generation_prompt,
        **kwargs,
    )
    return text[0]


@pytest.mark.parametrize("name", WITH_REFERENCE)
@pytest.mark.parametrize("generation_prompt", [False, True])
@pytest.mark.parametrize("index", range(len(PLAIN)))
def test_plain_conversations_match_official(name: str, generation_prompt: bool, index: int) -> None:
    official = reference(name)
    ours = get_template(name)
    messages = PLAIN[index]
    expected = render(
        official["chat_template"], messages, generation_prompt, None, official.get("bos_token")
    )
    assert (
        render(ours.source, messages, generation_prompt, None, official.get("bos_token"))
        == expected
    )


@pytest.mark.parametrize("name", [n for n in WITH_REFERENCE if get_template(n).supports_tools])
@pytest.mark.parametrize("generation_prompt", [False, True])
@pytest.mark.parametrize("index", range(len(TOOLS)))
def test_tool_conversations_match_official(name: str, generation_prompt: bool, index: int) -> None:
    official = reference(name)
    messages, tools = TOOLS[index]
    expected = render(
        official["chat_template"], messages, generation_prompt, tools, official.get("bos_token")
    )
    assert (
        render(
            get_template(name).source, messages, generation_prompt, tools, official.get("bos_token")
        )
        == expected
    )


@pytest.mark.parametrize("name", template_names())
def test_every_template_marks_assistant_turns(name: str) -> None:
    source = get_template(name).source
    assert re.search(r"{%-?\s*generation\s*-?%}", source) and "endgeneration" in source
    # The end-of-turn token sits inside the generation span, so the model learns to stop.
    messages = PLAIN[1]
    _, spans = render_jinja_template(
        conversations=[messages],
        chat_template=source,
        return_assistant_tokens_mask=True,
        bos_token="<s>",
    )
    text = render(source, messages, False, None, "<s>")
    start, end = spans[0][-1]
    assert text[start:end].startswith("Paris.") and text[start:end].endswith(
        get_template(name).end_of_turn
    )


@pytest.mark.parametrize("name", template_names())
def test_metadata_tokens_appear_in_the_template(name: str) -> None:
    entry = get_template(name)
    for token in entry.special_tokens:
        if token != entry.bos_token and token != "<|endoftext|>":
            assert token in entry.source, token
    assert entry.end_of_turn in entry.stop_tokens


@pytest.mark.parametrize("name", template_names())
@pytest.mark.parametrize("generation_prompt", [False, True])
def test_cli_render_prints_exactly_the_template_text(
    name: str, generation_prompt: bool, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from lfc.cli import app

    bos = get_template(name).bos_token
    for index, messages in enumerate(PLAIN):
        conversation = tmp_path / f"c{index}.json"
        conversation.write_text(json.dumps(messages), encoding="utf-8")
        args = ["templates", "render", name, str(conversation)]
        if generation_prompt:
            args.append("--add-generation-prompt")
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert result.stdout == render(
            get_template(name).source, messages, generation_prompt, None, bos
        )


def test_cli_render_with_tools_and_bad_input(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lfc.cli import app

    messages, tools = TOOLS[0]
    (tmp_path / "c.json").write_text(json.dumps(messages))
    (tmp_path / "t.json").write_text(json.dumps(tools))
    result = CliRunner().invoke(
        app,
        [
            "templates",
            "render",
            "qwen",
            str(tmp_path / "c.json"),
            "--tools",
            str(tmp_path / "t.json"),
        ],
    )
    assert result.exit_code == 0
    assert result.stdout == render(get_template("qwen").source, messages, False, tools, None)
    (tmp_path / "bad.json").write_text("{not json")
    result = CliRunner().invoke(app, ["templates", "render", "qwen", str(tmp_path / "bad.json")])
    assert result.exit_code == 2 and "not valid JSON" in result.output
    result = CliRunner().invoke(app, ["templates", "render", "qwne", str(tmp_path / "c.json")])
    assert result.exit_code == 2 and "did you mean 'qwen'" in result.output
