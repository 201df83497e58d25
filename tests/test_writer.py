"""The atomic writer: refuses to clobber, keeps the user's files, survives being killed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lfc.errors import RefusedOverwrite
from lfc.pipeline import compile_file
from lfc.writer import hand_edits, read_lock, recover, write_project

from conftest import EXAMPLES


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return compile_file(EXAMPLES / "quickstart.yaml").files


def test_writes_every_file(tmp_path: Path, files: dict[str, bytes]) -> None:
    out = tmp_path / "a" / "run"
    write_project(files, out)
    assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == set(files)
    assert not list(out.parent.glob(".run.lfc-*"))


def test_refuses_a_folder_it_did_not_write(tmp_path: Path, files: dict[str, bytes]) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(RefusedOverwrite, match=r"is not an lfc project .* thesis\.tex"):
        write_project(files, out)
    assert sorted(os.listdir(out)) == ["thesis.tex"]


def test_force_over_a_foreign_folder_keeps_it_beside(
    tmp_path: Path, files: dict[str, bytes]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    report = write_project(files, out, force=True)
    (kept,) = report.kept
    assert Path(kept, "thesis.tex").read_text() == "years of work"
    assert read_lock(out) is not None


def test_refuses_hand_edits_and_names_them(tmp_path: Path, files: dict[str, bytes]) -> None:
    out = tmp_path / "run"
    write_project(files, out)
    (out / "train.py").write_text("# mine\n")
    (out / "config.yaml").unlink()
    with pytest.raises(
        RefusedOverwrite, match=r"edited by hand since the last compile: config\.yaml, train\.py"
    ):
        write_project(files, out)
    assert (out / "train.py").read_text() == "# mine\n"
    write_project(files, out, force=True)
    assert (out / "train.py").read_bytes() == files["train.py"]


def test_recompiling_keeps_run_outputs(tmp_path: Path, files: dict[str, bytes]) -> None:
    out = tmp_path / "run"
    write_project(files, out)
    (out / "outputs" / "checkpoint-5").mkdir(parents=True)
    (out / "outputs" / "checkpoint-5" / "model.safetensors").write_bytes(b"weights")
    (out / "data" / "processed").mkdir()
    (out / "data" / "processed" / "train.arrow").write_bytes(b"tokens")
    (out / "NOTES.md").write_text("my notes")
    changed = dict(files)
    changed["README.md"] = b"# changed\n"
    report = write_project(changed, out)
    assert set(report.kept) == {"NOTES.md", "data/processed", "outputs"}
    assert (out / "outputs" / "checkpoint-5" / "model.safetensors").read_bytes() == b"weights"
    assert (out / "data" / "processed" / "train.arrow").read_bytes() == b"tokens"
    assert (out / "README.md").read_bytes() == b"# changed\n"


def test_refuses_when_a_user_file_would_be_replaced(
    tmp_path: Path, files: dict[str, bytes]
) -> None:
    out = tmp_path / "run"
    # An earlier compile that did not generate .gitignore, so the user wrote their own.
    old = {k: v for k, v in files.items() if k != ".gitignore"}
    digests = {k: hashlib.sha256(v).hexdigest() for k, v in old.items() if k != "lfc.lock.json"}
    old["lfc.lock.json"] = json.dumps({"files": digests}).encode()
    write_project(old, out)
    (out / ".gitignore").write_text("mine\n")
    with pytest.raises(RefusedOverwrite, match=r"your files \.gitignore would be replaced"):
        write_project(files, out)


def test_output_that_is_a_file(tmp_path: Path, files: dict[str, bytes]) -> None:
    (tmp_path / "run").write_text("x")
    with pytest.raises(Exception, match="exists and is not a folder"):
        write_project(files, tmp_path / "run")


_SLOW_WRITER = """
import os, sys, time
from pathlib import Path
from lfc.pipeline import compile_file
from lfc.writer import write_project
real_fsync = os.fsync
def slow_fsync(fd):
    time.sleep(0.04)
    real_fsync(fd)
os.fsync = slow_fsync
files = compile_file(Path(sys.argv[1])).files
print("ready", flush=True)
write_project(files, Path(sys.argv[2]))
print("done", flush=True)
"""


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.4, 0.6, 0.8])
def test_killed_compile_leaves_a_whole_project(
    tmp_path: Path, files: dict[str, bytes], delay: float
) -> None:
    out = tmp_path / "run"
    write_project(files, out)
    # Version 2 of the spec: another learning rate.
    shutil.copytree(EXAMPLES / "data", tmp_path / "spec" / "data")
    text = (EXAMPLES / "quickstart.yaml").read_text().replace("1.0e-3", "2.0e-3")
    (tmp_path / "spec" / "v2.yaml").write_text(text)
    new_lock = json.loads(compile_file(tmp_path / "spec" / "v2.yaml").files["lfc.lock.json"])
    (out / "outputs").mkdir()
    (out / "outputs" / "adapter.bin").write_bytes(b"trained")
    child = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER, str(tmp_path / "spec" / "v2.yaml"), str(out)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait()
    # Whatever moment it died, the folder is one whole project: old or new, never a mix.
    lock = read_lock(out)
    assert lock is not None and hand_edits(out, lock) == []
    old_lock = json.loads(files["lfc.lock.json"])
    assert lock["spec_sha256"] in (old_lock["spec_sha256"], new_lock["spec_sha256"])
    # The next lfc run finishes the job: the trained adapter is back, no hidden folders remain.
    recover(out)
    assert (out / "outputs" / "adapter.bin").read_bytes() == b"trained"
    assert not list(tmp_path.glob(".run.lfc-*"))


@pytest.mark.parametrize("bad", ["../escape.txt", "/abs.txt", "a/../../b.txt"])
def test_never_writes_outside_the_output_folder(tmp_path: Path, bad: str) -> None:
    out = tmp_path / "deep" / "run"
    with pytest.raises(AssertionError, match="outside the output folder"):
        write_project({"ok.txt": b"x", bad: b"evil"}, out)
    assert not list(tmp_path.rglob("*")), "nothing is written, not even the parent folder"
