"""Golden snapshots of every compiled example (`nox -s golden` rewrites them on purpose)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from lfc.pipeline import compile_file

from conftest import example_specs

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("LFC_UPDATE_GOLDEN") == "1"


def _snapshot(files: dict[str, bytes]) -> dict[str, bytes]:
    # Data files are copied verbatim from examples/data; the lock file pins their sha256.
    return {path: content for path, content in files.items() if not path.startswith("data/")}


@pytest.mark.parametrize("spec", example_specs(), ids=lambda p: p.stem)
def test_compiled_example_matches_golden(spec: Path) -> None:
    expected_dir = GOLDEN / spec.stem
    files = _snapshot(compile_file(spec).files)
    if UPDATE:
        shutil.rmtree(expected_dir, ignore_errors=True)
        for path, content in files.items():
            (expected_dir / path).parent.mkdir(parents=True, exist_ok=True)
            (expected_dir / path).write_bytes(content)
    on_disk = {
        p.relative_to(expected_dir).as_posix(): p.read_bytes()
        for p in expected_dir.rglob("*")
        if p.is_file()
    }
    assert sorted(on_disk) == sorted(files), "run `nox -s golden` if this change is intended"
    for path, content in files.items():
        assert content == on_disk[path], (
            f"{path} differs from tests/golden/{spec.stem}; `nox -s golden` updates it"
        )
