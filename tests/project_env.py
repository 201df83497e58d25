"""A fresh virtualenv holding exactly a generated project's requirements.txt, and commands in it.

Used by the end-to-end tests: lfc is not installed there. `LFC_E2E_VENV_CACHE=DIR` keeps the
environments between runs, keyed by the requirements' hash.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
import venv
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 900) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result.stdout + result.stderr


@contextmanager
def serving(python: Path | str, project: Path, env: dict[str, str]) -> Iterator[str]:
    """The project's serve.py on a free loopback port: yields its base URL (…/v1), then stops it.

    Its output goes to serve.log beside the project, so `lfc verify` sees no extra file.
    """
    log = project.parent / "serve.log"
    with log.open("w") as sink:
        server = subprocess.Popen(
            [str(python), "serve.py", "--serve_port", "0"],
            cwd=project,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while not (found := re.search(r"on (http://127\.0\.0\.1:\d+/v1)", log.read_text())):
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "serve.py did not start in 120 s"
            time.sleep(0.2)
        yield found.group(1)
    finally:
        server.terminate()
        server.wait(timeout=30)


def clean_env(bin_dir: Path) -> dict[str, str]:
    keep = {
        k: v
        for k, v in os.environ.items()
        if k in ("HOME", "LANG", "TMPDIR", "PIP_INDEX_URL", "PIP_CONSTRAINT")
    }
    return {
        **keep,
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "PYTHONNOUSERSITE": "1",
    }


def project_venv(requirements: Path, scratch: Path) -> Path:
    """The python of a virtualenv with exactly `requirements` (cached by their hash if asked)."""
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    cache = os.environ.get("LFC_E2E_VENV_CACHE")
    root = Path(cache) / digest if cache else scratch / "env"
    python = root / "bin" / "python"
    if not (root / ".complete").exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(root)
        env = clean_env(root / "bin")
        # torch first, so that pip takes the CPU build and never a CUDA one.
        torch_pin = next(
            line for line in requirements.read_text().splitlines() if line.startswith("torch==")
        )
        where = requirements.parent
        run([str(python), "-m", "pip", "install", "-q", torch_pin], where, env, timeout=1800)
        pip = [str(python), "-m", "pip", "install", "-q", "-r", str(requirements)]
        run(pip, where, env, timeout=1800)
        (root / ".complete").write_text("ok\n")
    return python
