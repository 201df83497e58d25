"""An Ollama Modelfile for a chat template: its TEMPLATE derived by rendering, not hand-written.

Ollama's prompt templates are Go templates over `.System`, `.Prompt` and `.Response`. The
Jinja chat template is rendered (in its sandbox, at compile time) for conversations whose texts
are private sentinels; cutting the renders at the sentinels gives the literal text before and
after each part, which becomes the Go template. A template whose renders do not split that way
(it rewrites the texts, or puts the system prompt inside the user turn in a way that differs
from a plain prefix) is refused with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from lfc.chat_templates import ChatTemplate
from lfc.errors import InputError
from lfc.template_render import (
    DEFAULT_BOS,
    DEFAULT_EOS,
    compile_source,
    render_conversation,
    render_marked,
)

_SYSTEM, _USER, _ANSWER = "\ue010", "\ue011", "\ue012"


@dataclass(frozen=True)
class OllamaTemplate:
    """One turn as literal pieces around the system prompt, the user prompt and the answer.

    With a system prompt: system_prefix + SYSTEM + system_to_prompt + PROMPT + ...; without:
    user_prefix + PROMPT + ... (user_prefix holds a default system prompt if the family has one).
    """

    system_prefix: str | None  # None: the template has no system turn
    system_to_prompt: str
    user_prefix: str
    answer_prefix: str
    answer_suffix: str

    def go_template(self) -> str:
        rest = f"{{{{ .Prompt }}}}{self.answer_prefix}{{{{ .Response }}}}{self.answer_suffix}"
        if self.system_prefix is None:
            return self.user_prefix + rest
        system = f"{self.system_prefix}{{{{ .System }}}}{self.system_to_prompt}"
        return f"{{{{ if .System }}}}{system}{{{{ else }}}}{self.user_prefix}{{{{ end }}}}{rest}"

    def render(self, system: str | None, prompt: str, response: str) -> str:
        """What the Go template gives for one turn (to check it against the Jinja render)."""
        if system and self.system_prefix is not None:
            text = self.system_prefix + system + self.system_to_prompt
        else:
            text = self.user_prefix
        return text + prompt + self.answer_prefix + response + self.answer_suffix


def _split(text: str, *markers: str) -> list[str]:
    pieces = []
    for marker in markers:
        if text.count(marker) != 1:
            raise ValueError("the template rewrites or repeats a message's text")
        head, text = text.split(marker)
        pieces.append(head)
    return [*pieces, text]


def _render(template: ChatTemplate, messages: list[dict[str, str]], prompt: bool) -> str:
    text = render_conversation(template, messages, add_generation_prompt=prompt)
    # Ollama's tokenizer adds the bos token itself, as `add_special_tokens` does.
    bos = template.bos_token
    return text[len(bos) :] if bos and text.startswith(bos) else text


def _answer_end(template: ChatTemplate, messages: list[dict[str, str]]) -> str:
    """What ends an answer: the rest of its generation span (the end-of-turn token) and the
    whitespace after it. Text a template writes after the last turn (Llama 3 always opens a
    new assistant header) belongs to the next prompt, not to this answer."""
    tokens = {
        "bos_token": template.bos_token or DEFAULT_BOS,
        "eos_token": template.eos_token or DEFAULT_EOS,
    }
    text, spans = render_marked(compile_source(template.source, marked=True), messages, tokens)
    at = text.index(_ANSWER)
    end = next((e for s, e in spans if s <= at < e), None)
    if end is None:
        raise ValueError("the answer is not inside a {% generation %} span")
    after = text[end:]
    return text[at + 1 : end] + after[: len(after) - len(after.lstrip())]


def derive(template: ChatTemplate) -> OllamaTemplate:
    """The Ollama pieces of `template`; raises InputError saying why when it has none."""
    user = [{"role": "user", "content": _USER}]
    answer = [{"role": "assistant", "content": _ANSWER}]
    system = [{"role": "system", "content": _SYSTEM}]
    try:
        prompt_only = _render(template, user, True)
        user_prefix, generation_prompt = _split(prompt_only, _USER)
        head, _ = _split(_render(template, user + answer, False), _ANSWER)
        answer_suffix = _answer_end(template, user + answer)
        if not head.startswith(prompt_only):
            raise ValueError("the answer does not continue the generation prompt")
        # What the model saw before its answers in training (e.g. a space, an empty <think>).
        answer_prefix = head[len(user_prefix) + len(_USER) :]
        system_prefix, system_to_prompt = None, ""
        if template.supports_system:
            with_system = _render(template, system + user, True)
            system_prefix, system_to_prompt, rest = _split(with_system, _SYSTEM, _USER)
            if rest != generation_prompt:
                raise ValueError("the system prompt changes the text after the user's")
    except (InputError, ValueError) as exc:
        raise InputError(
            f"template {template.name!r} cannot be written as an Ollama TEMPLATE ({exc}); "
            "set export.ollama: false"
        ) from None
    pieces = OllamaTemplate(
        system_prefix, system_to_prompt, user_prefix, answer_prefix, answer_suffix
    )
    literal = "".join(p or "" for p in (system_prefix, system_to_prompt, user_prefix))
    literal += answer_prefix + answer_suffix
    if "{{" in literal or '"""' in literal:
        raise InputError(
            f'template {template.name!r} writes {{{{ or """, which a Modelfile TEMPLATE '
            "cannot hold; set export.ollama: false"
        )
    return pieces


def modelfile(template: ChatTemplate, model_dir: str, stop_tokens: list[str]) -> str:
    """The Modelfile text: FROM the exported folder, the TEMPLATE, one stop per stop token."""
    lines = [
        "# Ollama model of this project: ollama create NAME -f Modelfile (after python export.py)",
        "# TEMPLATE is derived from chat_template.jinja by lfc (one turn: system, user, answer).",
        f"FROM ./{model_dir}",
        f'TEMPLATE """{derive(template).go_template()}"""',
    ]
    for token in stop_tokens:
        if '"' in token or any(ord(c) < 32 for c in token):
            raise InputError(
                f"stop token {token!r} cannot be quoted in a Modelfile; set export.ollama: false"
            )
        lines.append(f'PARAMETER stop "{token}"')
    return "\n".join(lines) + "\n"
