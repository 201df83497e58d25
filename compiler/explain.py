"""`lfc explain KEY`: what a spec key means, from the Pydantic models themselves."""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from lfc.chat_templates import template_names
from lfc.errors import InputError
from lfc.schemas.spec import Spec
from lfc.suggest import did_you_mean
from lfc.validate import _models_in, _tag_of


@dataclass(frozen=True)
class Explanation:
    key: str
    description: str
    type: str
    default: str
    choices: tuple[str, ...]
    variants: tuple[str, ...]
    bounds: str = ""
    example: str = ""

    def __str__(self) -> str:
        lines = [
            self.key,
            f"  {self.description}",
            f"  type: {self.type}",
            f"  default: {self.default}",
        ]
        if self.choices:
            lines.append(f"  allowed: {', '.join(self.choices)}")
        if self.bounds:
            lines.append(f"  range: {self.bounds}")
        if self.variants:
            lines.append(f"  under: {', '.join(self.variants)}")
        if self.example:
            lines.append("  example:")
            lines += [f"    {line}" for line in self.example.splitlines()]
        return "\n".join(lines)


_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def _bounds(metadata: list[object]) -> str:
    """`> 0, < 1` from a field's annotated-types constraints."""
    found = []
    for item in metadata:
        for attribute, sign in _BOUNDS:
            value = getattr(item, attribute, None)
            if value is not None:
                found.append(f"{sign} {value}")
    return ", ".join(found)


def _example(key: str, value: object, lists: frozenset[int] = frozenset()) -> str:
    """`key: value` as the nested YAML a spec holds it in (`lists`: parts holding a list)."""
    tree: object = value
    parts = key.split(".")
    for index in range(len(parts) - 1, -1, -1):
        tree = {parts[index]: [tree] if index in lists and index < len(parts) - 1 else tree}
    return yaml.safe_dump(tree, sort_keys=False, default_flow_style=False).rstrip()


def _example_value(annotation: object, default: object, choices: tuple[str, ...]) -> object:
    if default not in (None, PydanticUndefined) and not isinstance(default, dict):
        return list(default) if isinstance(default, tuple) else default
    if choices:
        return choices[0]
    names = _type_name(annotation)
    for kind, value in (("bool", True), ("int", 1), ("float", 0.5), ("tuple", [])):
        if names.startswith(kind) or f"| {kind}" in names:
            return value
    return "..."


def _type_name(annotation: object) -> str:
    text = str(annotation).replace("typing.", "").replace("lfc.schemas.spec.", "")
    return text.removeprefix("<class '").removesuffix("'>")


def _explain_field(
    key: str, part: str, owners: list[type[BaseModel]], lists: frozenset[int] = frozenset()
) -> Explanation:
    info = owners[0].model_fields[part]
    if len(owners) > 1 and all(_tag_of(m) for m in owners) and part in ("kind", "format"):
        # The discriminator of a union: each value is a variant with its own description.
        tags = tuple(str(_tag_of(m)) for m in owners)
        described = "; ".join(
            f"{_tag_of(m)}: {str(m.model_fields[part].description).rstrip('.')}" for m in owners
        )
        return Explanation(
            key, described, "str", "required", tags, (), example=_example(key, tags[-1], lists)
        )
    default = info.default
    if default is PydanticUndefined:
        shown = "required" if info.default_factory is None else "(a section of defaults)"
    else:
        shown = json.dumps(list(default) if isinstance(default, tuple) else default)
    choices = tuple(
        str(arg) for arg in typing.get_args(info.annotation) if isinstance(arg, str | int)
    )
    if key == "template":
        choices = tuple(template_names())
    variants = tuple(t for t in (_tag_of(m) for m in owners) if t and len(owners) > 1)
    example = ""
    if info.default_factory is None:  # a whole section has no one-line example
        example = _example(key, _example_value(info.annotation, default, choices), lists)
    return Explanation(
        key,
        info.description or "",
        _type_name(info.annotation),
        shown,
        choices,
        variants,
        _bounds(info.metadata),
        example,
    )


def explain(key: str) -> Explanation:
    """Explain a dotted spec key such as `train.learning_rate` or `adapter.rank`."""
    models: list[type[BaseModel]] = [Spec]
    parts = key.split(".")
    lists: set[int] = set()
    for depth, part in enumerate(parts):
        owners = [m for m in models if part in m.model_fields]
        if not owners:
            known = sorted({name for m in models for name in m.model_fields})
            where = ".".join(parts[:depth]) or "the spec"
            raise InputError(f"{key}: {where} has no key {part!r}{did_you_mean(part, known)}")
        if depth == len(parts) - 1:
            return _explain_field(key, part, owners, frozenset(lists))
        annotation = owners[0].model_fields[part].annotation
        if typing.get_origin(annotation) is tuple:
            lists.add(depth)
        models = [m for owner in owners for m in _models_in(owner.model_fields[part].annotation)]
    raise InputError(f"{key}: empty key")
