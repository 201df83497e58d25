"""Registry templates render exactly what the official templates render, errors included."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lfc.chat_templates import get_template, template_names
from lfc.cli import app

from conversations import PLAIN, TOOLS

render_jinja_template = pytest.importorskip(
    "transformers.utils.chat_template_utils"
).render_jinja_template

REFERENCES = Path(__file__).parent / "fixtures" / "chat_templates"
WITH_REFERENCE = [n for n in template_names() if get_template(n).reference]
WITH_TOOLS = [n for n in WITH_REFERENCE if get_template(n).supports_tools]


def reference(name: str) -> dict:
    return json.loads((REFERENCES / get_template(name).reference).read_text(encoding="utf-8"))


def registry_tokens(name: str) -> dict[str, str]:
    """bos/eos as `lfc templates render` uses them by default."""
    entry = get_template(name)
    return {"bos_token": entry.bos_token or "<s>", "eos_token": entry.eos_token or "</s>"}


def official_tokens(name: str) -> dict[str, str]:
    """bos/eos of the family's official tokenizer where the reference names them."""
    tokens = registry_tokens(name)
    ref = reference(name)
    tokens.update({k: ref[k] for k in ("bos_token", "eos_token") if ref.get(k)})
    return tokens


def render(source: str, messages: list, prompt: bool, tools: list | None, tokens: dict) -> str:
    """The rendered text, or `raised <type>: <message>` when the template raises."""
    try:
        text, _ = render_jinja_template(
            conversations=[messages],
            tools=tools,
            chat_template=source,
            add_generation_prompt=prompt,
            **tokens,
        )
    except Exception as exc:  # official templates raise TemplateError, TypeError, ...
        return f"raised {type(exc).__name__}: {exc}"
    return text[0]


@pytest.mark.parametrize("name", WITH_REFERENCE)
@pytest.mark.parametrize("prompt", [False, True])
@pytest.mark.parametrize("index", range(len(PLAIN)))
def test_plain_conversations_match_official(name: str, prompt: bool, index: int) -> None:
    tokens = official_tokens(name)
    messages = PLAIN[index]
    expected = render(reference(name)["chat_template"], messages, prompt, None, tokens)
    assert render(get_template(name).source, messages, prompt, None, tokens) == expected


@pytest.mark.parametrize("name", WITH_TOOLS)
@pytest.mark.parametrize("prompt", [False, True])
@pytest.mark.parametrize("index", range(len(TOOLS)))
def test_tool_conversations_match_official(name: str, prompt: bool, index: int) -> None:
    tokens = official_tokens(name)
    messages, tools = TOOLS[index]
    expected = render(reference(name)["chat_template"], messages, prompt, tools, tokens)
    assert render(get_template(name).source, messages, prompt, tools, tokens) == expected


def test_the_corpus_reaches_both_outcomes() -> None:
    """Some official templates raise on parts of the corpus (Gemma 2 on a system turn)."""
    outcomes = {
        render(reference(n)["chat_template"], m, False, None, official_tokens(n)).startswith(
            "raised"
        )
        for n in WITH_REFERENCE
        for m in PLAIN
    }
    assert outcomes == {True, False}


@pytest.mark.parametrize("name", template_names())
def test_every_template_marks_assistant_turns(name: str) -> None:
    entry = get_template(name)
    assert re.search(r"{%-?\s*generation\s*-?%}", entry.source) and "endgeneration" in entry.source
    messages = PLAIN[1] if entry.supports_system else PLAIN[1][1:]
    tokens = registry_tokens(name)
    _, spans = render_jinja_template(
        conversations=[messages],
        chat_template=entry.source,
        return_assistant_tokens_mask=True,
        **tokens,
    )
    text = render(entry.source, messages, False, None, tokens)
    start, end = spans[0][-1]
    # Qwen3 writes an (empty) think block into the last turn; it is the model's text too.
    assert text[start:end].removeprefix("<think>\n\n</think>\n\n").startswith("Paris.")
    # The end of turn (or the tokenizer's eos) is inside the span, so the model learns to stop.
    # GLM-4 and `empty` are the exceptions: GLM ends a turn with the next role token, outside.
    if name in ("glm4", "empty"):
        assert text[start:end] == "Paris."
    else:
        assert text[start:end].endswith(entry.end_of_turn or tokens["eos_token"])


@pytest.mark.parametrize("name", template_names())
def test_metadata_tokens_appear_in_the_template(name: str) -> None:
    entry = get_template(name)
    for token in entry.special_tokens:
        if token not in (entry.bos_token, entry.eos_token, "<|endoftext|>"):
            # GLM-4 builds its role tokens as '<|' + role + '|>'.
            assert token in entry.source or (name == "glm4" and token.startswith("<|")), token
    if entry.end_of_turn:
        assert entry.end_of_turn in entry.stop_tokens


@pytest.mark.parametrize("name", template_names())
@pytest.mark.parametrize("prompt", [False, True])
def test_cli_render_prints_exactly_the_template_text(
    name: str, prompt: bool, tmp_path: Path
) -> None:
    for index, messages in enumerate(PLAIN):
        conversation = tmp_path / f"c{index}.json"
        conversation.write_text(json.dumps(messages), encoding="utf-8")
        args = ["templates", "render", name, str(conversation)]
        if prompt:
            args.append("--add-generation-prompt")
        result = CliRunner().invoke(app, args)
        expected = render(get_template(name).source, messages, prompt, None, registry_tokens(name))
        if expected.startswith("raised"):
            assert result.exit_code == 2 and "refused the conversation" in result.output
        else:
            assert result.exit_code == 0, result.output
            assert result.stdout == expected


def test_cli_render_with_tools_and_bad_input(tmp_path: Path) -> None:
    messages, tools = TOOLS[0]
    (tmp_path / "c.json").write_text(json.dumps(messages))
    (tmp_path / "t.json").write_text(json.dumps(tools))
    args = ["templates", "render", "qwen", str(tmp_path / "c.json")]
    result = CliRunner().invoke(app, [*args, "--tools", str(tmp_path / "t.json")])
    assert result.exit_code == 0
    assert result.stdout == render(
        get_template("qwen").source, messages, False, tools, registry_tokens("qwen")
    )
    (tmp_path / "bad.json").write_text("{not json")
    result = CliRunner().invoke(app, ["templates", "render", "qwen", str(tmp_path / "bad.json")])
    assert result.exit_code == 2 and "not valid JSON" in result.output
    result = CliRunner().invoke(app, ["templates", "render", "qwne", str(tmp_path / "c.json")])
    assert result.exit_code == 2 and "did you mean 'qwen'" in result.output


def test_mistral_v3_keeps_the_system_prompt_in_training_rows() -> None:
    from lfc.template_render import render_conversation

    chat = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    served = render_conversation("mistral-v3", chat)
    assert served == "<s>[INST] a[/INST] b</s>[INST] S\n\nc[/INST]"
    trained = render_conversation("mistral-v3", [*chat, {"role": "assistant", "content": "d"}])
    assert trained == served + " d</s>"


def test_qwen2_vl_writes_each_image_between_vision_tokens() -> None:
    # No official copy is in the reference set: the expected text is Qwen2-VL's documented
    # format (ChatML, a default system turn, each image as <|vision_start|><|image_pad|>
    # <|vision_end|> where it sits in the user turn).
    from lfc.template_render import render_conversation

    image = {"type": "image"}
    chat = [
        {"role": "user", "content": [image, {"type": "text", "text": "Who?"}, image]},
        {"role": "assistant", "content": [{"type": "text", "text": "Them."}]},
    ]
    vision = "<|vision_start|><|image_pad|><|vision_end|>"
    trained = render_conversation("qwen2_vl", chat)
    assert trained == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{vision}Who?{vision}<|im_end|>\n"
        "<|im_start|>assistant\nThem.<|im_end|>\n"
    )
    system = [{"role": "system", "content": "S"}, {"role": "user", "content": "a"}]
    served = render_conversation("qwen2_vl", system, add_generation_prompt=True)
    assert (
        served
        == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\n"
    )


def test_qwen2_vl_writes_each_video_between_vision_tokens() -> None:
    # Qwen2-VL's and Qwen2.5-VL's documented format (one template for both, as in
    # LLaMA-Factory): a video is <|vision_start|><|video_pad|><|vision_end|> where it sits.
    from lfc.template_render import render_conversation

    video, image = {"type": "video"}, {"type": "image"}
    chat = [{"role": "user", "content": [video, {"type": "text", "text": "And?"}, image]}]
    rendered = render_conversation("qwen2_vl", chat, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>And?"
        "<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n<|im_start|>assistant\n"
    )
