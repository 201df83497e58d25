"""`lfc new`: the scaffolded spec repository compiles, verifies and checks itself in CI."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lfc.chat_templates import template_names
from lfc.cli import app
from lfc.errors import InputError, LfcError, RefusedOverwrite
from lfc.pipeline import compile_file
from lfc.scaffold import (
    DEFAULT_MODEL,
    DEFAULT_SPEC_NAME,
    DEFAULT_TEMPLATE,
    new_repository,
)
from lfc.schemas.spec import Spec
from lfc.version import __version__
from lfc.writer import write_project

from conftest import EXAMPLES

EXPECTED_FILES = {
    ".github/workflows/lfc-verify.yml",
    ".gitignore",
    ".pre-commit-config.yaml",
    "README.md",
    "schemas/spec.schema.json",
    "specs/data/README.md",
    "specs/data/alpaca_en_demo.json",
    "specs/starter.yaml",
}
needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def _compile(repo: Path, name: str = DEFAULT_SPEC_NAME) -> Path:
    """What `lfc compile specs/NAME.yaml -o projects/NAME` does, run from the repository."""
    spec, project = repo / "specs" / f"{name}.yaml", repo / "projects" / name
    write_project(compile_file(spec, project).files, project)
    return project


def _shell(command: list[str], repo: Path) -> subprocess.CompletedProcess[str]:
    """Run a check the way CI or pre-commit does, with this environment's `lfc` on PATH."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path}
    return subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return new_repository(tmp_path / "my-specs", "my-specs")


def test_the_repository_holds_specs_data_docs_and_checks(repo: Path) -> None:
    assert _files(repo) == EXPECTED_FILES
    spec = (repo / "specs" / "starter.yaml").read_text()
    assert spec.startswith("# yaml-language-server: $schema=../schemas/spec.schema.json\n")
    schema = json.loads((repo / "schemas" / "spec.schema.json").read_text())
    assert schema == Spec.model_json_schema()
    readme = (repo / "README.md").read_text()
    assert readme.startswith("# my-specs\n")
    assert "lfc compile specs/starter.yaml -o projects/starter" in readme
    assert "lfc verify projects/starter" in readme and "projects/<name>/" in readme
    assert f'pip install "lfc=={__version__}"' in readme
    assert "__pycache__/" in (repo / ".gitignore").read_text().splitlines()


def test_the_data_is_the_start_of_the_example_data_with_its_provenance(repo: Path) -> None:
    rows = json.loads((repo / "specs" / "data" / "alpaca_en_demo.json").read_text())
    example = json.loads((EXAMPLES / "data" / "alpaca_en_demo.json").read_text())
    assert len(rows) == 100 and rows == example[:100]
    provenance = (repo / "specs" / "data" / "README.md").read_text()
    assert "hiyouga/LLaMA-Factory" in provenance and "Apache-2.0" in provenance


def test_the_starter_spec_compiles_and_verifies(repo: Path) -> None:
    compiled = compile_file(repo / "specs" / "starter.yaml")
    assert compiled.spec.model.name_or_path == DEFAULT_MODEL
    assert compiled.spec.template == DEFAULT_TEMPLATE
    assert "data/alpaca_en_demo.json" in compiled.files
    project = _compile(repo)
    result = CliRunner().invoke(app, ["verify", str(project)])
    assert result.exit_code == 0 and "matches its spec" in result.output, result.output


def test_names_model_and_template_reach_the_spec(tmp_path: Path) -> None:
    repo = new_repository(
        tmp_path / "r", "team.specs", spec_name="sft-llama_3", model="org/x", template="llama3.1"
    )
    assert "specs/sft-llama_3.yaml" in _files(repo)
    spec = compile_file(repo / "specs" / "sft-llama_3.yaml").spec
    assert (spec.model.name_or_path, spec.template) == ("org/x", "llama3.1")
    assert (
        "lfc compile specs/sft-llama_3.yaml -o projects/sft-llama_3"
        in (repo / "README.md").read_text()
    )


def test_every_registry_template_gives_a_spec_that_compiles(tmp_path: Path) -> None:
    for name in template_names():
        repo = new_repository(tmp_path / name, "r", template=name)
        assert compile_file(repo / "specs" / "starter.yaml").spec.template == name


def test_the_defaults_match_the_template(tmp_path: Path) -> None:
    template = resources.files("lfc.blueprints") / "new" / "cookiecutter.json"
    defaults = json.loads(template.read_text(encoding="utf-8"))
    assert defaults["spec_name"] == DEFAULT_SPEC_NAME
    assert defaults["model"] == DEFAULT_MODEL
    assert defaults["chat_template"] == DEFAULT_TEMPLATE


@needs_bash
@needs_git
def test_the_workflow_pins_lfc_and_fails_on_drift(repo: Path) -> None:
    workflow = yaml.safe_load((repo / ".github" / "workflows" / "lfc-verify.yml").read_text())
    steps = workflow["jobs"]["verify"]["steps"]
    runs = [step["run"] for step in steps if "run" in step]
    assert any(f'pip install "lfc=={__version__}"' in run for run in runs)
    verify, recompile = (run for run in runs if "projects/" in run)
    assert 'lfc verify "${project%/}"' in verify
    # GitHub runs each step with `bash -e`; a spec with no committed project fails.
    assert _shell(["bash", "-e", "-c", recompile], repo).returncode == 0  # (compiles it)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    commit = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]
    subprocess.run(commit, cwd=repo, check=True)
    clean = _shell(["bash", "-e", "-c", verify], repo)
    assert clean.returncode == 0 and "projects/starter: matches its spec" in clean.stdout
    assert _shell(["bash", "-e", "-c", recompile], repo).returncode == 0
    spec = repo / "projects" / "starter" / "spec.yaml"
    spec.write_text(spec.read_text().replace("seed: 42", "seed: 7"))
    drifted = _shell(["bash", "-e", "-c", verify], repo)
    assert drifted.returncode == 1 and "projects/starter: differs" in drifted.stderr
    # A spec edited without recompiling passes verify but not the recompile step.
    subprocess.run(["git", "checkout", "-q", "--", "projects"], cwd=repo, check=True)
    source = repo / "specs" / "starter.yaml"
    source.write_text(source.read_text().replace("seed: 42", "seed: 7"))
    stale = _shell(["bash", "-e", "-c", recompile], repo)
    assert stale.returncode == 1 and "projects/ is stale" in stale.stdout


@needs_bash
def test_the_pre_commit_hooks_compile_and_verify(repo: Path) -> None:
    config = yaml.safe_load((repo / ".pre-commit-config.yaml").read_text())
    (local,) = config["repos"]
    assert local["repo"] == "local"
    hooks = {hook["id"]: hook for hook in local["hooks"]}
    assert set(hooks) == {"lfc-compile", "lfc-verify"}
    for hook in hooks.values():
        assert hook["language"] == "system" and hook["pass_filenames"] is False
    assert "lfc verify" in hooks["lfc-verify"]["entry"]
    # pre-commit splits `entry` with shlex and runs it from the repository root.
    compiled = _shell(shlex.split(hooks["lfc-compile"]["entry"]), repo)
    assert compiled.returncode == 0 and (repo / "projects" / "starter" / "train.py").is_file()
    verified = _shell(shlex.split(hooks["lfc-verify"]["entry"]), repo)
    assert verified.returncode == 0 and "matches its spec" in verified.stdout
    with open(repo / "projects" / "starter" / "train.py", "a") as handle:
        handle.write("# tuned by hand\n")
    assert _shell(shlex.split(hooks["lfc-verify"]["entry"]), repo).returncode == 1


BAD_INPUTS = {
    "slash": ({"repo_name": "a/b"}, "repo_name 'a/b' is not a safe name"),
    "dotdot": ({"repo_name": ".."}, "repo_name '..' is not a safe name"),
    "hidden": ({"repo_name": ".specs"}, "repo_name '.specs' is not a safe name"),
    "space": ({"repo_name": "my specs"}, "repo_name 'my specs' is not a safe name"),
    "empty": ({"repo_name": ""}, "repo_name '' is not a safe name"),
    "long": ({"repo_name": "a" * 101}, "at most 100 characters"),
    "spec-path": ({"spec_name": "../spec"}, "spec_name '../spec' is not a safe name"),
    "spec-brace": ({"spec_name": "{{x}}"}, "spec_name '{{x}}' is not a safe name"),
    "template": ({"template": "qwen9"}, "unknown template 'qwen9'"),
    "model-space": ({"model": "my model"}, "model 'my model' is not usable"),
    "model-quote": ({"model": 'a"b'}, "model 'a\"b' is not usable"),
    "model-empty": ({"model": ""}, "model '' is not usable"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_refused_and_writes_nothing(case: str, tmp_path: Path) -> None:
    changes, message = BAD_INPUTS[case]
    arguments = {"repo_name": "r", **changes}
    with pytest.raises(InputError) as caught:
        new_repository(tmp_path / "r", **arguments)
    assert message in str(caught.value) and caught.value.exit_code == 2
    assert list(tmp_path.iterdir()) == []


def test_unknown_template_suggests_a_name(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="did you mean 'qwen'"):
        new_repository(tmp_path / "r", "r", template="qwn")


def test_a_missing_parent_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is not a folder; create it first"):
        new_repository(tmp_path / "no" / "r", "r")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["folder", "empty-folder", "file"])
def test_an_existing_target_is_refused_and_untouched(kind: str, tmp_path: Path) -> None:
    target = tmp_path / "r"
    if kind == "file":
        target.write_text("mine\n")
    else:
        target.mkdir()
        if kind == "folder":
            (target / "notes.txt").write_text("mine\n")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(RefusedOverwrite, match="already exists") as caught:
        new_repository(target, "r")
    assert caught.value.exit_code == 3
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["r"]


def test_a_failure_while_writing_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail() -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("lfc.scaffold._spec_schema", fail)
    with pytest.raises(LfcError, match="cannot write: No space left on device") as caught:
        new_repository(tmp_path / "r", "r")
    assert caught.value.exit_code == 4
    assert list(tmp_path.iterdir()) == []


def test_importing_the_scaffold_does_not_import_cookiecutter() -> None:
    probe = "import sys, lfc.scaffold; print('cookiecutter' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"
