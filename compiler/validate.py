"""Validate loaded spec data into a `Spec`, turning Pydantic errors into located problems."""

from __future__ import annotations

import types
import typing
from typing import Any, Union

from pydantic import BaseModel, ValidationError

from lfc.errors import Problem, SpecError
from lfc.loader import KeyPath, LoadedSpec
from lfc.not_supported import NOT_SUPPORTED_YET
from lfc.schemas.spec import RuleError, Spec
from lfc.suggest import did_you_mean


def format_key(path: KeyPath) -> str:
    """`('data', 'datasets', 0, 'path')` -> `data.datasets[0].path`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _raw_path(data: Any, loc: tuple[Any, ...]) -> KeyPath:
    """Drop union tags and other Pydantic-only parts of `loc` that are not in the raw data."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            path.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and not _is_tag(part):
            path.append(part)  # a missing or unknown key: keep it, its parent has the position
            node = None
    return tuple(path)


def _is_tag(part: str) -> bool:
    return part.startswith("function-") or "[" in part or part in _UNION_TAGS or part == "str"


def _union_tags() -> set[str]:
    """What Pydantic may put in `loc` for a union member: its tag value or its class name."""
    tags: set[str] = set()
    for model in _all_models():
        tags.add(model.__name__)
        for key in ("kind", "format", "builtin"):
            if key in model.model_fields:
                tags.update(typing.get_args(model.model_fields[key].annotation))
    return tags


def _all_models() -> list[type[BaseModel]]:
    """Every model class of the spec (Pydantic names union members by class in `loc`)."""
    found: list[type[BaseModel]] = []

    def walk(model: type[BaseModel]) -> None:
        if model in found:
            return
        found.append(model)
        for info in model.model_fields.values():
            for member in _models_in(info.annotation):
                walk(member)

    walk(Spec)
    return found


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """Every BaseModel class reachable inside a type annotation."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType, tuple, list, typing.Annotated) or origin is not None:
        for arg in typing.get_args(annotation):
            found.extend(_models_in(arg))
    return found


_UNION_TAGS = _union_tags()


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the model that `loc` (minus its last part) points into."""
    candidates: list[type[BaseModel]] = [Spec]
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        narrowed = [m for m in candidates if part in (_tag_of(m), m.__name__)]
        if narrowed:
            candidates = narrowed
            continue
        if _is_tag(part):
            continue
        nxt: list[type[BaseModel]] = []
        for model in candidates:
            if part in model.model_fields:
                nxt.extend(_models_in(model.model_fields[part].annotation))
        candidates = nxt
    names: list[str] = []
    for model in candidates:
        names.extend(n for n in model.model_fields if n not in names)
    return names


def _tag_of(model: type[BaseModel]) -> str | None:
    for key in ("kind", "format"):
        info = model.model_fields.get(key)
        if info is not None:
            args = typing.get_args(info.annotation)
            if len(args) == 1:
                return args[0]
    return None


def _discriminator(error: Any) -> str:
    """The key a tagged union is told apart by (`builtin` for rewards, chosen by a function)."""
    name = str((error.get("ctx") or {}).get("discriminator", "kind")).strip("'")
    return "builtin" if name.endswith("()") else name


def _message(error: Any, loaded: LoadedSpec) -> str:
    kind = error["type"]
    loc = error["loc"]
    if kind == "extra_forbidden":
        if str(loc[-1]) in NOT_SUPPORTED_YET:
            return f"{NOT_SUPPORTED_YET[str(loc[-1])]} (unknown key {loc[-1]!r})"
        allowed = _fields_at(loc)
        return f"unknown key {loc[-1]!r}{did_you_mean(str(loc[-1]), allowed)}" + (
            f" (allowed: {', '.join(allowed)})" if allowed else ""
        )
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        ctx = error.get("ctx", {})
        tag = str(ctx.get("tag", ""))
        options = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",")]
        hint = did_you_mean(tag, options) or ";"
        field = _discriminator(error)
        return f"unknown {field} {tag!r}{hint} expected one of: {', '.join(options)}"
    if kind == "union_tag_not_found":
        return f"needs a {error['ctx']['discriminator']} key"
    if kind == "string_type" and loc and loc[-1] == "str":  # `name | {mapping}` fields
        return f"expected a name or a mapping of keys, got {_kind_of(error.get('input'))}"
    if kind in _TYPE_ERRORS:
        return f"expected a mapping of keys, got {_kind_of(error.get('input'))}"
    if kind == "too_short":
        count = error.get("ctx", {}).get("min_length", 1)
        return f"needs at least {count} item{'s' if count != 1 else ''}"
    message = error["msg"]
    return message.removeprefix("Value error, ")


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    for kind, name in ((str, "a string"), (list, "a list"), (int | float, "a number")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else "a value"


_TYPE_ERRORS = ("model_type", "model_attributes_type", "dict_type")


def _union_noise(error: Any, errors: list[Any]) -> bool:
    """An error of a union branch that the other branch explains better.

    `x: str | Section` reports both branches. The string branch's "should be a valid string"
    is noise when the mapping was a mapping and failed inside; when the value was neither, the
    mapping branch's type error is the noise and the string branch's line is kept.
    """
    loc = error["loc"]
    if not loc:
        return False
    others = [o for o in errors if o is not error and o["loc"][: len(loc) - 1] == loc[:-1]]
    others = [o for o in others if len(o["loc"]) >= len(loc)]
    if loc[-1] == "str":
        return any(not (o["type"] in _TYPE_ERRORS and len(o["loc"]) == len(loc)) for o in others)
    string_branch = any(o["loc"] == (*loc[:-1], "str") for o in others)
    return error["type"] in _TYPE_ERRORS and string_branch


def validate_spec(loaded: LoadedSpec) -> Spec:
    """Validate parsed data; raise `SpecError` listing every problem with its position."""
    try:
        return Spec.model_validate(loaded.data)
    except ValidationError as exc:
        problems = []
        errors = exc.errors()
        for error in errors:
            if error["type"] == "too_short" and any(
                other is not error and other["loc"][: len(error["loc"])] == error["loc"]
                for other in errors
            ):
                continue  # an item failed; its own error says why
            loc = error["loc"]
            if _union_noise(error, errors):
                continue
            rule = (error.get("ctx") or {}).get("error")
            if isinstance(rule, RuleError):
                loc = (*loc, *rule.at)
            if error["type"] == "union_tag_invalid":
                loc = (*loc, _discriminator(error))
            path = _raw_path(loaded.data, loc)
            position = loaded.locate(path)
            line, column = position if position else (None, None)
            problems.append(
                Problem(loaded.source, line, column, format_key(path), _message(error, loaded))
            )
        raise SpecError(problems) from None
