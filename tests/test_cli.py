"""The command line: exit codes, messages, nothing written on bad input, verify."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lfc.cli import app

from conftest import EXAMPLES

runner = CliRunner()


def lfc(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_version_and_help() -> None:
    code, out = lfc("--version")
    assert code == 0 and out.startswith("lfc 0.")
    code, out = lfc("--help")
    assert code == 0 and "compile" in out and "verify" in out


def test_help_does_not_import_torch_or_transformers() -> None:
    probe = "import sys; from lfc.cli import app; import lfc.pipeline, lfc.verify, lfc.writer; print(sorted(m for m in ('torch', 'transformers', 'trl') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_compile_then_verify(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, text = lfc("compile", str(EXAMPLES / "quickstart.yaml"), "-o", str(out))
    assert code == 0, text
    code, text = lfc("verify", str(out))
    assert code == 0 and "matches its spec" in text


def test_verify_names_changed_missing_and_extra_files(tmp_path: Path) -> None:
    out = tmp_path / "run"
    lfc("compile", str(EXAMPLES / "quickstart.yaml"), "-o", str(out))
    with open(out / "train.py", "a") as handle:
        handle.write("# tuned by hand\n")
    (out / "chat.py").unlink()
    (out / "helper.py").write_text("x = 1\n")
    (out / "outputs").mkdir()
    (out / "outputs" / "ignored.bin").write_bytes(b"run output")
    code, text = lfc("verify", str(out))
    assert code == 1
    assert "+# tuned by hand" not in text and "-# tuned by hand" in text
    assert (
        "train.py (changed)" in text and "chat.py (missing)" in text and "helper.py (extra)" in text
    )
    assert "ignored.bin" not in text


def test_verify_sees_a_spec_edit(tmp_path: Path) -> None:
    out = tmp_path / "run"
    lfc("compile", str(EXAMPLES / "quickstart.yaml"), "-o", str(out))
    spec = out / "spec.yaml"
    spec.write_text(spec.read_text().replace("cutoff_len: 512", "cutoff_len: 256"))
    code, text = lfc("verify", str(out))
    assert code == 1 and "-cutoff_len: 512" in text and "+cutoff_len: 256" in text


def test_invalid_spec_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        (EXAMPLES / "quickstart.yaml")
        .read_text()
        .replace("learning_rate: 1.0e-3", "learning_rate: -1")
    )
    out = tmp_path / "run"
    code, text = lfc("compile", str(spec), "-o", str(out))
    assert code == 2
    assert f"{spec}:18:3: train.learning_rate: Input should be greater than 0" in text
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["spec.yaml"]


def test_missing_data_file_exits_2(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text((EXAMPLES / "quickstart.yaml").read_text())
    code, text = lfc("compile", str(spec), "-o", str(tmp_path / "run"))
    assert code == 2 and "data.datasets[0].path: 'data/alpaca_en_demo.json' does not exist" in text
    assert not (tmp_path / "run").exists()


def test_refusal_exits_3(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    code, text = lfc("compile", str(EXAMPLES / "quickstart.yaml"), "-o", str(out))
    assert code == 3 and "keep.txt" in text


def test_trust_remote_code_warns(tmp_path: Path) -> None:
    spec = tmp_path / "examples" / "spec.yaml"
    spec.parent.mkdir()
    (spec.parent / "data").symlink_to(EXAMPLES / "data")
    spec.write_text(
        (EXAMPLES / "quickstart.yaml")
        .read_text()
        .replace("dtype: float32", "dtype: float32\n  trust_remote_code: true")
    )
    code, text = lfc("compile", str(spec), "-o", str(tmp_path / "run"))
    assert code == 0 and "warning: model.trust_remote_code is true" in text


def test_templates_lists_the_registry() -> None:
    code, text = lfc("templates")
    assert code == 0
    for name in ("chatml", "llama3", "qwen"):
        assert name in text


@pytest.mark.parametrize("spec", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_examples_validate(spec: Path) -> None:
    code, text = lfc("validate", str(spec))
    assert code == 0, text


def test_examples_point_editors_at_the_schema() -> None:
    schema = EXAMPLES.parent / "schemas" / "spec.schema.json"
    assert schema.is_file()
    for spec in EXAMPLES.glob("*.yaml"):
        assert spec.read_text().startswith(
            "# yaml-language-server: $schema=../schemas/spec.schema.json"
        )


def test_shipped_schema_is_current() -> None:
    code, text = lfc("schema")
    assert code == 0
    assert text == (EXAMPLES.parent / "schemas" / "spec.schema.json").read_text()


def test_diff_of_two_specs_shows_only_the_files_that_change(tmp_path: Path) -> None:
    (tmp_path / "data").symlink_to(EXAMPLES / "data")
    base = (EXAMPLES / "quickstart.yaml").read_text()
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(base)
    new.write_text(base.replace("learning_rate: 1.0e-3", "learning_rate: 2.0e-3"))
    code, out = lfc("diff", str(new), str(old))
    assert code == 1, out
    assert "-learning_rate: 0.001\n+learning_rate: 0.002\n" in out
    changed = {line.split(" ")[1] for line in out.splitlines() if line.startswith("--- ")}
    assert changed == {"config.yaml", "lfc.lock.json", "spec.yaml"}
    code, out = lfc("diff", str(old), str(old))
    assert code == 0 and "no generated file differs" in out


def test_diff_of_a_spec_against_a_project_folder(tmp_path: Path) -> None:
    project = tmp_path / "run"
    lfc("compile", str(EXAMPLES / "quickstart.yaml"), "-o", str(project))
    code, out = lfc("diff", str(EXAMPLES / "quickstart.yaml"), str(project))
    assert code == 0, out
    code, out = lfc("diff", str(EXAMPLES / "dpo.yaml"), str(project))
    assert code == 1 and "train.py (changed)" in out and "DPOTrainer" in out
    code, out = lfc("diff", str(tmp_path / "missing.yaml"), str(project))
    assert code == 2


def test_new_scaffolds_a_repository_that_compiles_and_verifies(tmp_path: Path) -> None:
    repo = tmp_path / "my-specs"
    code, out = lfc("new", str(repo), "--spec-name", "first", "--template", "chatml")
    assert code == 0, out
    spec = repo / "specs" / "first.yaml"
    assert "template: chatml" in spec.read_text()
    code, out = lfc("compile", str(spec), "-o", str(repo / "projects" / "first"))
    assert code == 0, out
    code, out = lfc("verify", str(repo / "projects" / "first"))
    assert code == 0, out
    code, out = lfc("new", str(repo))
    assert code == 3 and "already exists" in out
    code, out = lfc("new", str(tmp_path / "other"), "--template", "lama3")
    assert code == 2 and "did you mean 'llama3'" in out and not (tmp_path / "other").exists()


def test_no_colour_codes_when_not_a_terminal() -> None:
    for args in (["--help"], ["compile", "--help"], ["explain", "train.learning_rate"]):
        code, out = lfc(*args)
        assert code == 0 and "\x1b[" not in out, args
