"""Read a spec file into plain data, remembering the line and column of every key.

Only YAML's safe subset is accepted (no tags, no Python objects). Duplicate keys, non-UTF-8
bytes, empty files and files over `MAX_SPEC_BYTES` are errors with a location.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lfc.errors import InputError, Problem, SpecError

MAX_SPEC_BYTES = 1_000_000

Location = tuple[int, int]
KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class LoadedSpec:
    """A spec as parsed YAML data plus the position of every key and list item."""

    source: str
    data: Any
    positions: dict[KeyPath, Location] = field(default_factory=dict)

    def locate(self, path: KeyPath) -> Location | None:
        """The position of `path`, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.positions:
                return self.positions[path[:end]]
        return None


def _problem(source: str, mark: yaml.Mark | None, message: str) -> SpecError:
    line = mark.line + 1 if mark is not None else None
    column = mark.column + 1 if mark is not None else None
    return SpecError([Problem(source, line, column, "", message)])


class _Builder:
    """Turns a composed YAML node tree into dicts/lists/scalars, recording positions."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.positions: dict[KeyPath, Location] = {}
        self._constructor = yaml.SafeLoader("")

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise _problem(
                        self.source, key_node.start_mark, "YAML merge keys (<<) are not supported"
                    )
                key = self.build(key_node, path)
                if not isinstance(key, str):
                    raise _problem(
                        self.source, key_node.start_mark, f"keys must be strings, got {key!r}"
                    )
                if key in result:
                    first = self.positions[(*path, key)]
                    raise _problem(
                        self.source,
                        key_node.start_mark,
                        f"duplicate key {key!r} (first defined at line {first[0]})",
                    )
                self.positions[(*path, key)] = (
                    key_node.start_mark.line + 1,
                    key_node.start_mark.column + 1,
                )
                result[key] = self.build(value_node, (*path, key))
            return result
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                self.positions[(*path, index)] = (
                    item.start_mark.line + 1,
                    item.start_mark.column + 1,
                )
                items.append(self.build(item, (*path, index)))
            return items
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            raise _problem(self.source, node.start_mark, f"invalid value: {exc.problem}") from None
        except yaml.YAMLError as exc:
            raise _problem(self.source, node.start_mark, f"invalid value: {exc}") from None


MAX_DEPTH = 32
_STANDARD_TAGS = ("tag:yaml.org,2002:seq", "tag:yaml.org,2002:map")


def _check_events(text: str, source: str) -> None:
    """Refuse what a spec never needs, before building anything: aliases (which can expand
    exponentially), tags on lists and mappings, and nesting deeper than MAX_DEPTH."""
    depth = 0
    expecting_key: list[bool | None] = []  # per open collection: a mapping awaiting a key?
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        is_node = isinstance(event, yaml.NodeEvent | yaml.CollectionStartEvent)
        is_key = is_node and bool(expecting_key) and expecting_key[-1]
        if is_node and expecting_key and expecting_key[-1] is not None:
            expecting_key[-1] = not expecting_key[-1]
        if is_key and isinstance(event, yaml.ScalarEvent) and event.value == "<<":
            if event.implicit[0]:
                raise _problem(source, event.start_mark, "YAML merge keys (<<) are not supported")
        if isinstance(event, yaml.AliasEvent):
            message = f"YAML aliases (*{event.anchor}) are not supported"
            raise _problem(source, event.start_mark, message)
        if isinstance(event, yaml.CollectionStartEvent):
            if event.tag is not None and event.tag not in _STANDARD_TAGS:
                tag = event.tag.replace("!!", "tag:yaml.org,2002:", 1)
                message = f"invalid value: could not determine a constructor for the tag {tag!r}"
                raise _problem(source, event.start_mark, message)
            depth += 1
            if depth > MAX_DEPTH:
                raise _problem(source, event.start_mark, "invalid YAML: nested too deeply")
            expecting_key.append(True if isinstance(event, yaml.MappingStartEvent) else None)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
            expecting_key.pop()


def parse_spec_text(text: bytes, source: str) -> LoadedSpec:
    """Parse spec bytes. `source` names the file in error messages."""
    if len(text) > MAX_SPEC_BYTES:
        raise _problem(
            source, None, f"file is {len(text):,} bytes; a spec may be at most {MAX_SPEC_BYTES:,}"
        )
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = text[: exc.start].count(b"\n") + 1
        raise SpecError(
            [Problem(source, line, None, "", f"not valid UTF-8 (byte {exc.start}); save as UTF-8")]
        ) from None
    if decoded.startswith("\ufeff"):
        decoded = decoded[1:]
    try:
        _check_events(decoded, source)
        node = yaml.compose(decoded, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if exc.context_mark is not None and "end of stream" in str(exc.problem):
            mark = exc.context_mark  # an unclosed quote or bracket: point at where it opened
        text = ", ".join(part for part in (exc.context, exc.problem) if part)
        raise _problem(source, mark, f"invalid YAML: {text}") from None
    except yaml.reader.ReaderError as exc:
        before = decoded[: exc.position]
        line, column = before.count("\n") + 1, len(before) - before.rfind("\n")
        message = f"invalid YAML: unacceptable character #x{exc.character:04x}: {exc.reason}"
        raise SpecError([Problem(source, line, column, "", message)]) from None
    except yaml.YAMLError as exc:
        raise _problem(source, None, f"invalid YAML: {exc}") from None
    if node is None:
        raise _problem(source, None, "the spec is empty; start from `lfc new` or examples/")
    if not isinstance(node, yaml.MappingNode):
        raise _problem(source, node.start_mark, "the spec must be a mapping of sections")
    builder = _Builder(source)
    data = builder.build(node, ())
    return LoadedSpec(source=source, data=data, positions=builder.positions)


def read_spec_file(path: Path) -> LoadedSpec:
    """Read and parse a spec file from disk."""
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give the spec's YAML file")
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_spec_text(text, str(path))
