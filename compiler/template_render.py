"""Render a registry chat template the way transformers' `apply_chat_template` does.

Same sandbox and settings (trim_blocks, lstrip_blocks, loopcontrols, non-escaping `tojson`,
`raise_exception`), with `{% generation %}` as a pass-through block. Used by
`lfc templates render` so anyone can compare lfc's text with another implementation.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from jinja2 import TemplateError, nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

from lfc.chat_templates import get_template
from lfc.errors import InputError

DEFAULT_BOS, DEFAULT_EOS = "<s>", "</s>"


class _Generation(Extension):
    """`{% generation %}...{% endgeneration %}` renders its body unchanged."""

    tags: ClassVar[set[str]] = {"generation"}

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Any) -> str:
        return caller()


def _raise(message: str) -> None:
    raise TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, **kwargs: Any) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, **kwargs)


def render_conversation(
    name: str,
    messages: list[dict[str, Any]],
    add_generation_prompt: bool = False,
    tools: list[dict[str, Any]] | None = None,
    bos_token: str | None = None,
    eos_token: str | None = None,
) -> str:
    """The text template `name` renders for `messages`.

    bos/eos default to the tokens the registry names for the family, else `<s>` and `</s>`.
    """
    entry = get_template(name)
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, "jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    context: dict[str, Any] = {
        "messages": messages,
        "add_generation_prompt": add_generation_prompt,
        "tools": tools,
        "bos_token": bos_token or entry.bos_token or DEFAULT_BOS,
        "eos_token": eos_token or entry.eos_token or DEFAULT_EOS,
    }
    try:
        return env.from_string(entry.source).render(**context)
    except TemplateError as exc:
        raise InputError(f"template {name!r} refused the conversation: {exc}") from None
