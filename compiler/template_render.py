"""Render chat templates the way transformers' `apply_chat_template` does.

Same sandbox and settings (trim_blocks, lstrip_blocks, loopcontrols, non-escaping `tojson`,
`raise_exception`). `{% generation %}` renders its body unchanged, or, for checks, wrapped in
span markers. Used by `lfc templates render` and to check custom templates at compile time.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any, ClassVar

from jinja2 import Template, TemplateError, nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

from lfc.chat_templates import ChatTemplate, get_template
from lfc.errors import InputError

DEFAULT_BOS, DEFAULT_EOS = "<s>", "</s>"
SPAN_START, SPAN_END = "\ue000", "\ue001"


class _Generation(Extension):
    """`{% generation %}...{% endgeneration %}` renders its body unchanged."""

    tags: ClassVar[set[str]] = {"generation"}
    marks: ClassVar[tuple[str, str]] = ("", "")

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Any) -> str:
        start, end = self.marks
        return start + caller() + end


class _MarkedGeneration(_Generation):
    """The same block, wrapped in span markers so the assistant spans can be found."""

    marks: ClassVar[tuple[str, str]] = (SPAN_START, SPAN_END)


def _raise(message: str) -> None:
    raise TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, **kwargs: Any) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, **kwargs)


@cache
def _environment(marked: bool) -> ImmutableSandboxedEnvironment:
    extension = _MarkedGeneration if marked else _Generation
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[extension, "jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    return env


def compile_source(source: str, marked: bool = False) -> Template:
    """Parse a chat template in the sandbox; raises jinja2's TemplateSyntaxError."""
    return _environment(marked).from_string(source)


def render_marked(
    template: Template, messages: list[dict[str, Any]], tokens: dict[str, str]
) -> tuple[str, list[tuple[int, int]]]:
    """The text of a template compiled with `marked=True`, and its generation spans."""
    marked = template.render(messages=messages, add_generation_prompt=False, **tokens)
    pieces: list[str] = []
    spans: list[tuple[int, int]] = []
    length = start = 0
    for part in re.split(f"([{SPAN_START}{SPAN_END}])", marked):
        if part == SPAN_START:
            start = length
        elif part == SPAN_END:
            spans.append((start, length))
        else:
            pieces.append(part)
            length += len(part)
    return "".join(pieces), spans


def render_conversation(
    name: str | ChatTemplate,
    messages: list[dict[str, Any]],
    add_generation_prompt: bool = False,
    tools: list[dict[str, Any]] | None = None,
    bos_token: str | None = None,
    eos_token: str | None = None,
) -> str:
    """The text a template renders for `messages`.

    bos/eos default to the tokens the registry names for the family, else `<s>` and `</s>`.
    """
    entry = get_template(name) if isinstance(name, str) else name
    context: dict[str, Any] = {
        "messages": messages,
        "add_generation_prompt": add_generation_prompt,
        "tools": tools,
        "bos_token": bos_token or entry.bos_token or DEFAULT_BOS,
        "eos_token": eos_token or entry.eos_token or DEFAULT_EOS,
    }
    try:
        return compile_source(entry.source).render(**context)
    except TemplateError as exc:
        raise InputError(f"template {entry.name!r} refused the conversation: {exc}") from None
