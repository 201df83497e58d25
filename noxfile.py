"""Developer tasks. `nox -s tests lint` is what CI runs; `nox -s demo` shows the product."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True

# torch goes in first and alone, so pip takes the local CPU wheel and never a CUDA build.
TORCH = "torch==2.13.0"
QUIET_ENV = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}


def _install(session: nox.Session, extras: str) -> None:
    session.install(TORCH)
    # Not editable: the tests run against the installed package, so missing package data shows.
    session.install(f".[{extras}]")


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """Unit, golden, parity and end-to-end tests (the e2e test builds its own clean venv)."""
    _install(session, "tiny,test,dev")
    session.run("pytest", "-q", *session.posargs, env=QUIET_ENV)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff check and format on lfc's own code."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def golden(session: nox.Session) -> None:
    """Rewrite tests/golden/ from the examples, on purpose; review the diff before committing."""
    _install(session, "dev")
    session.run("pytest", "-q", "tests/test_golden.py", env={"LFC_UPDATE_GOLDEN": "1"})


@nox.session(python="3.11")
def demo(session: nox.Session) -> None:
    """Build a tiny model, compile the quickstart, process data, train 5 steps, chat, export."""
    _install(session, "tiny")
    build = Path("build/demo").resolve()
    shutil.rmtree(build, ignore_errors=True)
    session.run("lfc", "tiny-model", str(build / "tiny-llama"), env=QUIET_ENV)
    session.run("lfc", "compile", "examples/quickstart.yaml", "-o", str(build / "run"))
    # The generated project's own pins; lfc itself is not needed to run it.
    session.install("-r", str(build / "run" / "requirements.txt"))
    os.chdir(build / "run")
    session.run("python", "data.py", env=QUIET_ENV)
    session.run(
        "accelerate",
        "launch",
        "--config_file",
        "accelerate/single.yaml",
        "train.py",
        "--max_steps",
        "5",
        env=QUIET_ENV,
    )
    session.run(
        "python",
        "chat.py",
        "--prompt",
        "Describe a process of making crepes.",
        "--chat_max_new_tokens",
        "24",
        env=QUIET_ENV,
    )
    session.run("python", "export.py", env=QUIET_ENV)
    session.run("lfc", "verify", ".")
