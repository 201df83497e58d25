"""Write a compiled project atomically, without losing anything the user made.

The new tree is written into a hidden staging folder beside the target (its lock file first),
then swapped in with one atomic `renameat2(RENAME_EXCHANGE)` where the OS has it (two renames
otherwise). Files the old tree held that lfc did not generate (checkpoints, processed data,
exported models, notes) are moved into the new tree. A compile killed at any point leaves the
previous project intact, or the new one plus a hidden sibling that the next lfc run merges back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lfc.errors import InputError, LfcError, RefusedOverwrite
from lfc.render import LOCK_FILE, sha256

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@dataclass(frozen=True)
class WriteReport:
    written: int
    kept: tuple[str, ...]


def read_lock(folder: Path) -> dict | None:
    """The folder's lock file, or None when it has none or it is unreadable."""
    try:
        lock = json.loads((folder / LOCK_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return lock if isinstance(lock, dict) and isinstance(lock.get("files"), dict) else None


def hand_edits(folder: Path, lock: dict) -> list[str]:
    """Generated files that were changed or deleted since the lock was written."""
    edited = []
    for path, digest in sorted(lock["files"].items()):
        if path == LOCK_FILE:
            continue
        file = folder / path
        try:
            if not file.is_file() or sha256(file.read_bytes()) != digest:
                edited.append(path)
        except OSError:
            edited.append(path)
    return edited


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths; False where the OS cannot."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    result = libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a))


def _runtime_entries(old: Path, generated: set[str]) -> list[str]:
    """Paths (files or whole folders) in `old` that lfc did not generate."""
    generated = generated | {LOCK_FILE}
    # Every folder that holds a generated file, at any depth.
    parents = {p.rsplit("/", n)[0] for p in generated for n in range(1, p.count("/") + 1)}
    found: list[str] = []

    def walk(folder: Path, rel: str) -> None:
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            path = f"{rel}{entry.name}"
            if path in generated:
                continue
            if entry.is_dir() and not entry.is_symlink() and path in parents:
                walk(entry, path + "/")
            else:
                found.append(path)

    walk(old, "")
    return found


def _merge_runtime(old: Path, new: Path) -> list[str]:
    """Move the non-generated entries of `old` into `new` (where `new` has no such path)."""
    lock = read_lock(old)
    generated = set(lock["files"]) if lock else set()
    moved = []
    for rel in _runtime_entries(old, generated):
        target = new / rel
        if target.exists() or target.is_symlink():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(old / rel, target)
        moved.append(rel)
    return moved


def _siblings(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.lfc-*"))


def recover(out: Path) -> None:
    """Finish the job of a compile that was killed: restore or merge hidden siblings."""
    for sibling in _siblings(out):
        if not out.exists() and sibling.name.startswith(f".{out.name}.lfc-old-"):
            os.replace(sibling, out)
            continue
        if read_lock(sibling) is not None and out.is_dir():
            _merge_runtime(sibling, out)
        shutil.rmtree(sibling, ignore_errors=True)


def _check_target(out: Path, files: Mapping[str, bytes], force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    if not out.exists() or force:
        return
    entries = sorted(e.name for e in out.iterdir())
    if not entries:
        return
    lock = read_lock(out)
    if lock is None:
        shown = ", ".join(entries[:8]) + (", ..." if len(entries) > 8 else "")
        raise RefusedOverwrite(
            f"{out}: is not an lfc project (no readable {LOCK_FILE}); it holds {shown}. "
            "Choose another folder, or pass --force to replace it"
        )
    edited = hand_edits(out, lock)
    if edited:
        raise RefusedOverwrite(
            f"{out}: files were edited by hand since the last compile: {', '.join(edited)}. "
            "Move your changes into the spec, or pass --force to overwrite them"
        )
    generated_before = set(lock["files"])
    clashes = [
        rel
        for rel in _runtime_entries(out, generated_before)
        if any(p == rel or p.startswith(rel + "/") for p in files)
    ]
    if clashes:
        raise RefusedOverwrite(
            f"{out}: your files {', '.join(clashes)} would be replaced by generated ones; "
            "move them, or pass --force"
        )


def _write_tree(root: Path, files: Mapping[str, bytes]) -> None:
    root.mkdir()
    # The lock goes first: a staging folder with a valid lock is complete enough to merge from.
    order = [LOCK_FILE, *(p for p in files if p != LOCK_FILE)]
    for rel in order:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as handle:
            handle.write(files[rel])
            handle.flush()
            os.fsync(handle.fileno())


def write_project(files: Mapping[str, bytes], out: Path, force: bool = False) -> WriteReport:
    """Write `files` as the project folder `out`, atomically."""
    for rel in files:
        if rel.startswith("/") or ".." in rel.split("/"):
            raise AssertionError(f"refusing to write outside the output folder: {rel}")
    out = Path(os.path.abspath(out))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        recover(out)
        _check_target(out, files, force)
        staging = out.parent / f".{out.name}.lfc-new-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        _write_tree(staging, files)
        if not out.exists():
            os.replace(staging, out)
            return WriteReport(written=len(files), kept=())
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
            os.replace(staging, out)
            return WriteReport(written=len(files), kept=())
        if _exchange(staging, out):
            old = staging
        else:
            old = out.parent / f".{out.name}.lfc-old-{os.getpid()}"
            os.replace(out, old)
            os.replace(staging, out)
        if read_lock(old) is None:
            # --force over a folder lfc did not write: keep everything of it beside the project.
            kept_as = out.parent / f"{out.name}.replaced-{os.getpid()}"
            os.replace(old, kept_as)
            return WriteReport(written=len(files), kept=(str(kept_as),))
        kept = _merge_runtime(old, out)
        shutil.rmtree(old)
        return WriteReport(written=len(files), kept=tuple(kept))
    except LfcError:
        raise
    except OSError as exc:
        raise LfcError(f"{exc.filename or out}: cannot write: {exc.strerror}") from None


def write_file_atomically(path: Path, data: bytes) -> None:
    """Write one file whole or not at all: a temporary file beside it, then a rename."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise InputError(f"{path.parent}/ does not exist")
    temporary = path.with_name(f".{path.name}.lfc-tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise LfcError(f"cannot write {path}: {exc.strerror}") from None
