"""The YAML loader: positions of keys, and every kind of unreadable file."""

from __future__ import annotations

from pathlib import Path

import pytest

from lfc.errors import InputError, SpecError
from lfc.loader import MAX_SPEC_BYTES, parse_spec_text, read_spec_file


def test_positions_of_nested_keys_and_list_items() -> None:
    text = b"lfc: 1\nmodel:\n  name_or_path: x\ndata:\n  datasets:\n    - {path: a.json}\n"
    loaded = parse_spec_text(text, "s.yaml")
    assert loaded.positions[("model", "name_or_path")] == (3, 3)
    assert loaded.positions[("data", "datasets", 0)] == (6, 7)
    assert loaded.positions[("data", "datasets", 0, "path")] == (6, 8)
    assert loaded.locate(("model", "name_or_path", "nope")) == (3, 3)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"", "s.yaml: the spec is empty"),
        (b"# only a comment\n", "s.yaml: the spec is empty"),
        (b"- a\n- b\n", "s.yaml:1:1: the spec must be a mapping of sections"),
        (b"lfc: 1\nlfc: 2\n", "s.yaml:2:1: duplicate key 'lfc' (first defined at line 1)"),
        (b"a: [1, 2\n", "s.yaml:2:1: invalid YAML"),
        (b"a: !!python/object:os.system x\n", "s.yaml:1:4: invalid value"),
        (b"a: 1\n\xff\xfe: 2\n", "s.yaml:2: not valid UTF-8"),
        (b"a: 1\nc:\n  <<: {b: 1}\n", "s.yaml:3:3: YAML merge keys (<<) are not supported"),
        (b"a: &x {b: 1}\nc:\n  <<: *x\n", "s.yaml:3:3: YAML merge keys (<<) are not supported"),
        (b"a: &x {b: 1}\nc: *x\n", "s.yaml:2:4: YAML aliases (*x) are not supported"),
        (b"1: a\n", "s.yaml:1:1: keys must be strings"),
    ],
)
def test_unreadable_specs_name_their_position(text: bytes, expected: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec_text(text, "s.yaml")
    assert str(info.value).startswith(expected)


def test_huge_file_is_refused_before_parsing() -> None:
    with pytest.raises(SpecError, match="a spec may be at most"):
        parse_spec_text(b"a: 1\n" + b"#" * MAX_SPEC_BYTES, "s.yaml")


def test_utf8_bom_is_accepted() -> None:
    assert parse_spec_text("\ufefflfc: 1\n".encode(), "s.yaml").data == {"lfc": 1}


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_spec_file(tmp_path / "nope.yaml")
    with pytest.raises(InputError, match="is a folder"):
        read_spec_file(tmp_path)
