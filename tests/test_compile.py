"""The pure compiler: deterministic, standalone, lint-clean output."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lfc.pipeline import compile_file, load_spec
from lfc.render import yaml_scalar
from lfc.writer import write_project

from conftest import EXAMPLES, example_specs

EXAMPLE_IDS = [p.stem for p in example_specs()]


@pytest.mark.parametrize("spec_path", example_specs(), ids=EXAMPLE_IDS)
def test_two_absolute_folders_give_identical_trees(spec_path: Path, tmp_path: Path) -> None:
    # Copy the spec and its data into two unrelated folders, compile each into its own output.
    trees = []
    for name in ("first/deeper", "second"):
        workdir = tmp_path / name
        shutil.copytree(EXAMPLES, workdir / "examples")
        out = workdir / "out" / "run"
        write_project(compile_file(workdir / "examples" / spec_path.name).files, out)
        trees.append(
            {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
        )
    assert trees[0] == trees[1]
    for path, content in trees[0].items():
        assert str(tmp_path).encode() not in content, path
        if not path.startswith("data/"):
            assert b"\r" not in content, path


@pytest.mark.parametrize("spec_path", example_specs(), ids=EXAMPLE_IDS)
def test_generated_python_never_imports_lfc(spec_path: Path) -> None:
    files = compile_file(spec_path).files
    python = {p: c for p, c in files.items() if p.endswith(".py")}
    expected = {"config.py", "model.py", "data.py", "train.py"}
    if spec_path.stem != "rm":  # a reward model is a scorer: nothing to chat with or serve
        expected |= {"chat.py", "export.py", "serve.py"}
    assert expected <= set(python)
    for path, content in python.items():
        tree = ast.parse(content, path)
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n == "lfc" or n.startswith("lfc.") for n in names), (path, names)


@pytest.mark.parametrize("spec_path", example_specs(), ids=EXAMPLE_IDS)
def test_generated_python_passes_ruff(spec_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    write_project(compile_file(spec_path).files, out)
    ruff = [sys.executable, "-m", "ruff"]
    check = subprocess.run(
        [*ruff, "check", "--isolated", "."], cwd=out, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout
    fmt = subprocess.run(
        [*ruff, "format", "--isolated", "--check", "--diff", "."],
        cwd=out,
        capture_output=True,
        text=True,
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


@pytest.mark.parametrize("spec_path", example_specs(), ids=EXAMPLE_IDS)
def test_every_generated_file_starts_with_a_header_naming_its_command(spec_path: Path) -> None:
    files = compile_file(spec_path).files
    runs = {
        "data.py": "python data.py",
        "train.py": "accelerate launch",
        "chat.py": "python chat.py",
        "export.py": "python export.py",
        "serve.py": "python serve.py",
    }
    for path, command in runs.items():
        if path not in files:
            assert spec_path.stem == "rm" and path != "train.py"
            continue
        docstring = ast.get_docstring(ast.parse(files[path]))
        assert docstring and command in docstring, path
    shell = {"serve_vllm.sh": "bash serve_vllm.sh", "Dockerfile": "docker build"}
    for path, command in shell.items():
        if path in files:
            assert command in files[path].decode().split("\n\n")[0], path


def test_only_the_chosen_adapter_is_generated() -> None:
    lora = compile_file(EXAMPLES / "quickstart.yaml").files
    full = compile_file(EXAMPLES / "chatml-openai-full.yaml").files
    freeze = compile_file(EXAMPLES / "qwen-sharegpt-freeze.yaml").files
    assert b"LoraConfig" in lora["model.py"] and b"freeze" not in lora["model.py"]
    assert b"peft" not in full["model.py"] + full["train.py"] + full["export.py"] + full["chat.py"]
    assert b"def freeze" in freeze["model.py"] and b"peft" not in freeze["model.py"]
    assert b"sharegpt_example" in freeze["data.py"] and b"alpaca_example" not in freeze["data.py"]
    assert b"def read_jsonl" not in lora["data.py"] and b"def read_jsonl" in freeze["data.py"]
    assert (
        b"tensorboard==" in full["requirements.txt"]
        and b"tensorboard" not in lora["requirements.txt"]
    )


def test_config_yaml_round_trips_through_yaml() -> None:
    files = compile_file(EXAMPLES / "qwen-sharegpt-freeze.yaml").files
    config = yaml.safe_load(files["config.yaml"])
    assert config["learning_rate"] == 5e-4
    assert config["warmup_steps"] == 0.1
    assert config["freeze_extra_modules"] == ["lm_head"]
    assert config["eval_strategy"] == "steps"


@pytest.mark.parametrize(
    "value", [5e-06, 1e-4, 0.001, 1e20, 3.0, 0, -1, True, None, "a: b", "ü", [1, "x"]]
)
def test_yaml_scalars_read_back_as_written(value: object) -> None:
    assert yaml.safe_load(f"k: {yaml_scalar(value)}")["k"] == value


def test_normalized_spec_compiles_to_the_same_project(tmp_path: Path) -> None:
    out = tmp_path / "run"
    files = compile_file(EXAMPLES / "quickstart.yaml").files
    write_project(files, out)
    again = compile_file(out / "spec.yaml").files
    assert again == files
    spec = load_spec(out / "spec.yaml")
    assert spec.data.datasets[0].path == "data/alpaca_en_demo.json"


def test_lock_records_hashes_and_pins() -> None:
    import hashlib
    import json

    files = compile_file(EXAMPLES / "quickstart.yaml").files
    lock = json.loads(files["lfc.lock.json"])
    assert lock["spec_sha256"] == hashlib.sha256(files["spec.yaml"]).hexdigest()
    for path, digest in lock["files"].items():
        assert hashlib.sha256(files[path]).hexdigest() == digest
    assert set(lock["files"]) == set(files) - {"lfc.lock.json"}
    assert lock["pins"]["training"]["torch"] == "2.13.0"
    assert "torch==2.13.0" in files["requirements.txt"].decode()


@pytest.mark.parametrize("spec_path", example_specs(), ids=EXAMPLE_IDS)
def test_every_example_project_verifies_from_its_own_spec(spec_path: Path, tmp_path: Path) -> None:
    """Registry names, folders and reward files are all re-read from inside the project."""
    from lfc.verify import verify_project

    out = tmp_path / "run"
    write_project(compile_file(spec_path).files, out)
    assert verify_project(out) == []


@pytest.mark.parametrize(
    ("example", "stage", "init", "kept"),
    [
        ("dpo", {}, "olora", True),
        ("kto", {}, "pissa", True),
        ("grpo", {"beta": 0.04}, "pissa", True),
        ("grpo", {"beta": 0.0}, "pissa", False),  # no reference model at all
        ("dpo", {}, "default", False),  # the adapter starts at 0: disabling it is the start
        ("quickstart", {}, "pissa", False),  # sft: no reference model
    ],
)
def test_the_starting_adapter_is_kept_as_reference_only_where_it_differs(
    tmp_path: Path, example: str, stage: dict, init: str, kept: bool
) -> None:
    spec = yaml.safe_load((EXAMPLES / f"{example}.yaml").read_text())
    spec["adapter"] = {"kind": "lora", "init": init}
    if stage:
        spec["stage"] = {**spec["stage"], **stage}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    (tmp_path / "data").symlink_to(EXAMPLES / "data")
    if (EXAMPLES / "rewards").exists():
        (tmp_path / "rewards").symlink_to(EXAMPLES / "rewards")
    files = compile_file(path).files
    train, model = files["train.py"].decode(), files["model.py"].decode()
    assert ("keep_start_as_reference(trainer)" in train) == kept
    assert ('.delete_adapter("ref")' in train) == kept
    assert ("def keep_start_as_reference" in model) == kept
    if kept:  # after the initial adapter is saved, before training
        order = [
            "save_initial_adapter(trainer)",
            "keep_start_as_reference(trainer)",
            "trainer.train(",
        ]
        assert sorted(order, key=train.index) == order
