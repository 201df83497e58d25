"""data.py on bad rows: reported by file and index, never dropped silently, nothing half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import compile_example

pytest.importorskip("trl")

ROWS = [
    {"instruction": "Say hi", "input": "", "output": "Hi"},
    {"instruction": "No answer here", "input": ""},
    {"instruction": ["not", "a", "string"], "output": "x"},
    "just a string",
    {"instruction": "Fine", "input": "extra", "output": "Done"},
    {"instruction": "Sneaky \ue000 marker", "output": "x"},
]


def _data_py(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "data.py", *args], cwd=project, env=env, capture_output=True, text=True
    )


@pytest.fixture
def project(tmp_path: Path, tiny_model: Path) -> Path:
    project = compile_example("quickstart", tmp_path / "run", tiny_model)
    (project / "data" / "alpaca_en_demo.json").write_text(json.dumps(ROWS))
    return project


def test_malformed_rows_stop_the_run_with_their_index(project: Path) -> None:
    result = _data_py(project)
    assert result.returncode != 0
    where = "alpaca_en_demo (data/alpaca_en_demo.json)"
    assert f"{where} row 1: column 'output' is missing" in result.stderr
    assert "row 2: column 'instruction' should be a string, got list" in result.stderr
    assert "row 3: expected an object, got str" in result.stderr
    assert "row 5: text contains the reserved characters" in result.stderr
    assert "4 malformed rows" in result.stderr
    assert not (project / "data" / "processed").exists()
    assert not (project / "data" / "processed.tmp").exists()


def test_skipping_malformed_rows_lists_them(project: Path) -> None:
    result = _data_py(project, "--on_bad_row", "skip")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "rows_read=6 rows_kept=2 rows_truncated=0 rows_rejected=4" in result.stdout
    rejected = (project / "data" / "processed" / "rejected.jsonl").read_text().splitlines()
    assert [json.loads(line)["row"] for line in rejected] == [1, 2, 3, 5]


def test_invalid_json_names_line_and_column(project: Path) -> None:
    (project / "data" / "alpaca_en_demo.json").write_text('[\n  {"instruction": "a",\n  oops}\n]')
    result = _data_py(project)
    assert result.returncode != 0
    assert "data/alpaca_en_demo.json:3:3: invalid JSON" in result.stderr


def test_rows_too_long_for_any_label_are_counted(project: Path) -> None:
    (project / "data" / "alpaca_en_demo.json").write_text(
        json.dumps([{"instruction": "word " * 400, "output": "x"}, ROWS[0]])
    )
    result = _data_py(project, "--cutoff_len", "64")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "rows_kept=1 rows_truncated=1 rows_rejected=0 rows_without_labels=1" in result.stdout
