"""The bad-spec corpus: each broken spec exits 2 with its message and location, writing nothing.

Every `tests/bad_specs/NNN-name.yaml` is examples/quickstart.yaml broken in one way. Its first
line, `# expect: spec.yaml:LINE:COL: key: message`, is the start of a line `lfc compile` and
`lfc validate` must print on stderr. Each case runs in its own scratch folder as `spec.yaml`,
beside `data/` and `rewards/` (examples/data and examples/rewards, linked file by file so that a
file written anywhere in the folder shows up) and the files `SETUP` names for it. A few cases
(a huge file, UTF-16, the spec path a folder or missing) are built here instead of committed.

Cases marked xfail are messages lfc gets wrong today (no location, a traceback, a bad spec that
compiles): the expectation is what a user should see, the reason what lfc does instead.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from lfc.cli import app
from lfc.loader import MAX_SPEC_BYTES
from lfc.schemas import spec as spec_models

from conftest import EXAMPLES

CORPUS = Path(__file__).resolve().parent / "bad_specs"
EXPECT = "# expect: "
LOCATED = re.compile(r"^spec\.yaml(:\d+(:\d+)?)?: ")

try:  # click < 8.2 mixes stderr into output unless told not to
    runner = CliRunner(mix_stderr=False)
except TypeError:
    runner = CliRunner()

_JSON_REGISTRY = (
    b'{"up": {"file_name": "../../etc/passwd.json"}, "abs": {"file_name": "/etc/passwd.json"}}'
)
_GENERATION = b"{% for m in messages %}{% generation %}{{ m['content'] }}{% endgeneration %}"

# Files a case needs beside its spec (None: an empty folder).
SETUP: dict[str, dict[str, bytes | None]] = {
    "118-registry-entry-escapes.yaml": {"evil/dataset_info.json": _JSON_REGISTRY},
    "119-registry-entry-absolute.yaml": {"evil/dataset_info.json": _JSON_REGISTRY},
    "124-data-file-is-folder.yaml": {"x.json": None},
    "125-data-folder-empty.yaml": {"emptydir": None},
    "128-registry-is-folder.yaml": {"reg.json": None},
    "132-jinja-is-folder.yaml": {"tmpl.jinja": None},
    "133-jinja-syntax-error.yaml": {"bad.jinja": _GENERATION + b"{% if %}{% endfor %}\n"},
    "134-jinja-no-generation.yaml": {
        "nogen.jinja": b"{% for m in messages %}{{ m['content'] }}{% endfor %}\n"
    },
}


XFAIL: dict[str, str] = {}  # none left; add a case here with its reason while lfc gets it wrong

QUICKSTART = (EXAMPLES / "quickstart.yaml").read_bytes()
_HUGE = QUICKSTART + b"#" * MAX_SPEC_BYTES + b"\n"

# Cases built here: (id, spec bytes, or "folder" / "missing" for the spec path, expectation).
GENERATED: list[tuple[str, bytes | str, str]] = [
    (
        "huge-file",
        _HUGE,
        f"spec.yaml: file is {len(_HUGE):,} bytes; a spec may be at most {MAX_SPEC_BYTES:,}",
    ),
    ("utf-16", QUICKSTART.decode().encode("utf-16"), "spec.yaml:1: not valid UTF-8 (byte 0)"),
    ("latin-1", QUICKSTART.replace(b"Quickstart", b"Qu\xeck"), "spec.yaml:2: not valid UTF-8"),
    ("spec-is-a-folder", "folder", "spec.yaml: is a folder; give the spec's YAML file"),
    ("spec-missing", "missing", "spec.yaml: no such file"),
]


def _expectation(path: Path) -> str:
    first = path.read_bytes().split(b"\n", 1)[0].decode("utf-8")
    assert first.startswith(EXPECT), f"{path.name}: the first line must be '{EXPECT}...'"
    return first.removeprefix(EXPECT)


def _corpus() -> list[Path]:
    return sorted(CORPUS.glob("*.yaml"))


def _params() -> list:
    params = []
    for path in _corpus():
        marks = (
            [pytest.mark.xfail(strict=True, reason=XFAIL[path.name])] if path.name in XFAIL else []
        )
        params.append(
            pytest.param(
                path.name, path.read_bytes(), _expectation(path), marks=marks, id=path.stem
            )
        )
    params += [pytest.param(*case, id=case[0]) for case in GENERATED]
    return params


def _workspace(root: Path, name: str, spec: bytes | str) -> Path:
    root.mkdir()
    for folder in ("data", "rewards"):
        shutil.copytree(EXAMPLES / folder, root / folder, copy_function=os.symlink)
    for relative, content in SETUP.get(name, {}).items():
        target = root / relative
        if content is None:
            target.mkdir(parents=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
    if spec == "folder":
        (root / "spec.yaml").mkdir()
    elif isinstance(spec, bytes):
        (root / "spec.yaml").write_bytes(spec)
    return root


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.mark.parametrize(("name", "spec", "expected"), _params())
def test_bad_spec_exits_2_with_its_message_and_writes_nothing(
    name: str, spec: bytes | str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = _workspace(tmp_path / "work", name, spec)
    before = _tree(work)
    monkeypatch.chdir(work)
    for args in (["compile", "spec.yaml", "-o", "out"], ["validate", "spec.yaml"]):
        result = runner.invoke(app, args)
        shown = f"lfc {' '.join(args)} -> exit {result.exit_code}\n{result.stderr}"
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            shown += f"\n{type(result.exception).__name__}: {result.exception}"
        assert result.exit_code == 2, shown
        assert any(line.startswith(expected) for line in result.stderr.splitlines()), (
            f"expected a line starting with:\n{expected}\n{shown}"
        )
        assert result.stdout == "", shown
        assert not (work / "out").exists()
        assert _tree(work) == before, f"{args[0]} wrote files"


def test_corpus_is_large_and_every_expectation_names_a_location() -> None:
    expectations = {path.name: _expectation(path) for path in _corpus()}
    expectations.update({case[0]: case[2] for case in GENERATED})
    assert len(expectations) >= 60
    unlocated = [name for name, text in expectations.items() if not LOCATED.match(text)]
    assert unlocated == []
    names = {path.name for path in _corpus()}
    assert set(SETUP) <= names and set(XFAIL) <= names and set(NOISY) <= names
    assert all(re.fullmatch(r"\d{3}-[a-z0-9-]+\.yaml", name) for name in names)


# Names users never wrote: the spec's model classes, and Pydantic's own phrasing.
_INTERNAL = re.compile(
    r"\b("
    + "|".join(
        sorted(
            name
            for name, value in vars(spec_models).items()
            if isinstance(value, type) and issubclass(value, BaseModel)
        )
    )
    + r")\b|object to extract fields from|after validation|<unicode string>"
)

# Cases whose messages carry Pydantic internals or union noise today.
NOISY: dict[str, str] = {}  # none left; add a case with its reason while lfc prints noise


def _noise(stderr: str) -> list[str]:
    """Lines naming internals, or a union's `Input should be a valid string` beside the real error."""
    lines = stderr.splitlines()
    keys = [line.split(": ", 2)[1] for line in lines if line.count(": ") >= 2]
    found = [line for line in lines if _INTERNAL.search(line)]
    for line in lines:
        parts = line.split(": ", 2)
        if len(parts) == 3 and parts[2] == "Input should be a valid string":
            if sum(1 for key in keys if key == parts[1] or key.startswith(parts[1] + ".")) > 1:
                found.append(line)
    return found


def _noise_params() -> list:
    params = []
    for path in _corpus():
        marks = (
            [pytest.mark.xfail(strict=True, reason=NOISY[path.name])] if path.name in NOISY else []
        )
        params.append(pytest.param(path.name, path.read_bytes(), marks=marks, id=path.stem))
    return params


@pytest.mark.parametrize(("name", "spec"), _noise_params())
def test_messages_hold_no_pydantic_internals(
    name: str, spec: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(_workspace(tmp_path / "work", name, spec))
    result = runner.invoke(app, ["validate", "spec.yaml"])
    assert _noise(result.stderr) == []
