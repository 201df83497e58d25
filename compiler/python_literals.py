"""Python literals for generated code, written the way `ruff format` writes them.

Blueprints embed spec values as literals; these functions make the result stable under
`ruff format --check` (double quotes, magic trailing commas, line length 88).
"""

from __future__ import annotations

import json
from typing import Any

LINE_LENGTH = 88
INDENT = "    "


def py_literal(value: Any) -> str:
    """A Python literal for `value` as ruff format would write it (double quotes)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(py_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{py_literal(k)}: {py_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as a Python literal")


def py_block(value: Any) -> str:
    """A list or dict literal, one item per line with a trailing comma (stable under ruff)."""
    if isinstance(value, list | tuple):
        items = [py_literal(v) for v in value]
    elif isinstance(value, dict):
        items = [f"{py_literal(k)}: {py_literal(v)}" for k, v in value.items()]
    else:
        return py_literal(value)
    if not items:
        return "{}" if isinstance(value, dict) else "[]"
    opening, closing = ("{", "}") if isinstance(value, dict) else ("[", "]")
    return opening + "\n" + "".join(f"    {item},\n" for item in items) + closing


def py_pretty(value: Any, used: int = 0, depth: int = 0) -> str:
    """`value` as ruff format lays it out, `used` columns into the line at nesting `depth`.

    A list or dict stays on one line when it fits (with the trailing comma or bracket after
    it); otherwise one item per line with a magic trailing comma, recursively.
    """
    flat = py_literal(value)
    indent = INDENT * depth
    fits = len(indent) + used + len(flat) + 1 <= LINE_LENGTH
    if fits or not isinstance(value, list | tuple | dict) or not value:
        return flat
    inner = INDENT * (depth + 1)
    lines = []
    if isinstance(value, dict):
        for key, item in value.items():
            prefix = f"{py_literal(key)}: "
            lines.append(f"{inner}{prefix}{py_pretty(item, len(prefix), depth + 1)},")
        opening, closing = "{", "}"
    else:
        for item in value:
            lines.append(f"{inner}{py_pretty(item, 0, depth + 1)},")
        opening, closing = "[", "]"
    return opening + "\n" + "\n".join(lines) + "\n" + indent + closing
