"""Check a user's chat template at compile time, before any project is written.

A custom template must parse in the sandbox, mark assistant turns with `{% generation %}`,
render at least one of a few sample conversations, and put every assistant message inside a
generation span; otherwise the loss mask would be wrong and nobody would notice.
"""

from __future__ import annotations

from jinja2 import TemplateError, TemplateSyntaxError

from lfc.chat_templates import ChatTemplate
from lfc.errors import Problem, SpecError
from lfc.schemas.spec import CustomTemplate
from lfc.template_render import compile_source, render_marked

KEY = "template.jinja"

SAMPLES: list[list[dict[str, str]]] = [
    [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "It is 4."},
    ],
    [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another?"},
        {"role": "assistant", "content": "Green."},
    ],
]
TOKENS = {"bos_token": "<s>", "eos_token": "</s>"}


def custom_chat_template(spec: CustomTemplate, source_bytes: bytes, where: str) -> ChatTemplate:
    """The checked template as a registry-like entry; raises SpecError naming the problem."""

    def fail(message: str, line: int | None = None) -> SpecError:
        return SpecError([Problem(where, line, None, KEY, message)])

    try:
        source = source_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise fail(f"{spec.jinja} is not UTF-8 text") from None
    if "{% generation %}" not in source.replace("{%-", "{%").replace("-%}", "%}"):
        raise fail(
            f"{spec.jinja} has no {{% generation %}}...{{% endgeneration %}} block: wrap each "
            "assistant message (and its end-of-turn token) in one, so the loss mask comes "
            "from the template. lfc does not guess where assistant text starts."
        )
    try:
        template = compile_source(source, marked=True)
    except TemplateSyntaxError as exc:
        raise fail(f"{spec.jinja}:{exc.lineno}: template syntax error: {exc.message}") from None
    rendered = 0
    errors = []
    for messages in SAMPLES:
        try:
            text, spans = render_marked(template, messages, TOKENS)
        except (TemplateError, TypeError, ValueError) as exc:
            errors.append(str(exc))
            continue
        rendered += 1
        labelled = "".join(text[a:b] for a, b in spans)
        for message in messages:
            if message["role"] == "assistant" and message["content"] not in labelled:
                raise fail(
                    f"{spec.jinja}: the assistant text {message['content']!r} is rendered "
                    "outside every generation block, so it would get no loss"
                )
            if message["role"] != "assistant" and message["content"] in labelled:
                raise fail(
                    f"{spec.jinja}: the {message['role']} text {message['content']!r} is inside "
                    "a generation block, so the model would be trained to write it"
                )
        if spec.end_of_turn and spec.end_of_turn not in labelled:
            raise fail(
                f"{spec.jinja}: end_of_turn {spec.end_of_turn!r} is not inside a generation "
                "block, so the model would never learn to stop"
            )
    if rendered == 0:
        raise fail(f"{spec.jinja} fails on every sample conversation: {errors[0]}")
    return ChatTemplate(
        name="custom",
        description=f"custom template from {spec.jinja}",
        source=source,
        end_of_turn=spec.end_of_turn,
        stop_tokens=tuple(
            dict.fromkeys(((spec.end_of_turn,) if spec.end_of_turn else ()) + spec.stop_tokens)
        ),
        special_tokens=spec.special_tokens,
        bos_token=None,
        eos_token=None,
        supports_system=True,
        supports_tools=False,
        supports_reasoning=False,
        default_system=None,
        reference=None,
    )
