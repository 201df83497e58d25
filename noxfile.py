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


# LLaMA-Factory for the data benchmark, in a virtualenv of its own (its pins clash with lfc's).
LF_VENV = Path("build/bench/lf-venv")
LF_REQUIREMENT = "llamafactory==0.9.5"
# Only CUDA builds of torchvision/torchaudio exist for torch 2.13; they are pinned so pip never
# swaps the CPU torch, then uninstalled (LLaMA-Factory's text path needs neither).
LF_CONSTRAINTS = ("torch==2.13.0", "torchvision==0.28.0")


def _llamafactory_venv(session: nox.Session) -> Path:
    """build/bench/lf-venv with LLaMA-Factory 0.9.5 on the CPU torch; made once, then reused."""
    python = (LF_VENV / "bin" / "python").absolute()  # not resolve(): that leaves the venv
    marker = LF_VENV / "bench-ready.txt"
    wanted = f"{LF_REQUIREMENT} {' '.join(LF_CONSTRAINTS)}\n"
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        session.log(f"reusing {LF_VENV}")
        return python
    shutil.rmtree(LF_VENV, ignore_errors=True)
    LF_VENV.parent.mkdir(parents=True, exist_ok=True)
    session.run("python", "-m", "venv", str(LF_VENV))
    pip = [str(python), "-m", "pip", "install", "-q"]
    session.run(*pip, TORCH, external=True)
    constraints = LF_VENV / "constraints.txt"
    constraints.write_text("\n".join(LF_CONSTRAINTS) + "\n")
    session.run(*pip, "-c", str(constraints), LF_REQUIREMENT, external=True)
    uninstall = [str(python), "-m", "pip", "uninstall", "-y", "-q"]
    session.run(*uninstall, "torchvision", "torchaudio", external=True)
    marker.write_text(wanted)
    return python


@nox.session(name="bench-data", python="3.11")
def bench_data(session: nox.Session) -> None:
    """Data processing: lfc's data.py vs LLaMA-Factory 0.9.5 vs the tokenizer alone.

    Writes docs/benchmarks.md on a full run; `nox -s bench-data -- --samples 500` is a quick one.
    """
    _install(session, "tiny,test")
    lf_python = _llamafactory_venv(session)
    session.run(
        "python", "bench/run.py", "--lf-python", str(lf_python), *session.posargs, env=QUIET_ENV
    )


@nox.session(name="bench-train", python="3.11")
def bench_train(session: nox.Session) -> None:
    """Training: lfc's train.py vs LLaMA-Factory 0.9.5 vs a bare PyTorch loop (tiny Llama, CPU).

    Writes the Training section of docs/benchmarks.md on a full run (30 steps per run);
    `nox -s bench-train -- --steps 6` is a quick one. Reuses bench-data's LLaMA-Factory venv.
    """
    _install(session, "tiny")
    # The generated projects' own pins (every project compiles to the same requirements.txt).
    pins = Path("build/bench-train/pins-project")
    shutil.rmtree(pins, ignore_errors=True)
    session.run("lfc", "compile", "examples/quickstart.yaml", "-o", str(pins))
    session.install("-r", str(pins / "requirements.txt"))
    lf_python = _llamafactory_venv(session)
    session.run(
        "python", "bench/train_bench.py", "--lf-python", str(lf_python), *session.posargs,
        env=QUIET_ENV,
    )  # fmt: skip


@nox.session(python=False)
def gpu(session: nox.Session) -> None:
    """GPU-only options trained 2 steps each on a CUDA machine (not in CI; skips without one).

    Runs with the current Python, which needs lfc installed (`pip install -e .`); the generated
    projects' requirements go into one venv the script makes (with Python 3.12 when present),
    and Unsloth's pin set into a second one.
    """
    session.run("python", "tests/gpu/run_gpu_checks.py", *session.posargs, env=QUIET_ENV)
