"""The chat-template registry shipped in `lfc.blueprints/chat_templates`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class ChatTemplate:
    """One registry entry: the Jinja source and what a tokenizer needs to use it."""

    name: str
    description: str
    source: str
    end_of_turn: str | None
    stop_tokens: tuple[str, ...]
    special_tokens: tuple[str, ...]
    bos_token: str | None
    eos_token: str | None
    supports_system: bool
    supports_tools: bool
    supports_reasoning: bool
    default_system: str | None
    reference: str | None
    image_token: str | None = None  # the placeholder an image model expands (None: text only)
    video_token: str | None = None  # the placeholder a video model expands (None: no video)
    audio_token: str | None = None  # the placeholder an audio model expands (None: no audio)


def _folder() -> resources.abc.Traversable:
    return resources.files("lfc.blueprints") / "chat_templates"


@cache
def _registry() -> dict[str, ChatTemplate]:
    meta = json.loads((_folder() / "registry.json").read_text(encoding="utf-8"))
    entries = {}
    for name, info in meta.items():
        source = (_folder() / f"{name}.jinja").read_text(encoding="utf-8")
        entries[name] = ChatTemplate(
            name=name,
            description=info["description"],
            source=source,
            end_of_turn=info["end_of_turn"],
            stop_tokens=tuple(info["stop_tokens"]),
            special_tokens=tuple(info["special_tokens"]),
            bos_token=info["bos_token"],
            eos_token=info["eos_token"],
            supports_system=info["supports_system"],
            supports_tools=info["supports_tools"],
            supports_reasoning=info["supports_reasoning"],
            default_system=info["default_system"],
            reference=info["reference"],
            image_token=info["image_token"],
            video_token=info.get("video_token"),
            audio_token=info.get("audio_token"),
        )
    return entries


def template_names() -> list[str]:
    """Registry names, sorted."""
    return sorted(_registry())


def get_template(name: str) -> ChatTemplate:
    """The registry entry `name` (validated specs only name known templates)."""
    return _registry()[name]
