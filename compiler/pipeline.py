"""The edges of the pipeline: read a spec and its data files, compile, write or verify."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lfc.errors import InputError, Problem, SpecError
from lfc.loader import read_spec_file
from lfc.render import plan_project, render_plan
from lfc.schemas.spec import CustomTemplate, Spec
from lfc.tokenizer_check import check_local_tokenizer
from lfc.validate import validate_spec

MAX_DATA_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class Compiled:
    spec: Spec
    files: dict[str, bytes]


def load_spec(path: Path) -> Spec:
    """Read and validate a spec file; raises SpecError with positions."""
    return validate_spec(read_spec_file(path))


def read_inputs(spec: Spec, spec_path: Path) -> dict[str, bytes]:
    """The bytes of every local data file, resolved relative to the spec's folder."""
    base = spec_path.resolve().parent
    wanted = [(f"data.datasets[{i}].path", d.path) for i, d in enumerate(spec.data.datasets)]
    if isinstance(spec.template, CustomTemplate):
        wanted.append(("template.jinja", spec.template.jinja))
    inputs: dict[str, bytes] = {}
    for key, path in wanted:
        file = base / path
        problem = None
        if file.is_dir():
            problem = f"{path!r} is a folder; give a file"
        elif not file.is_file():
            problem = f"{path!r} does not exist (looked in {base})"
        elif file.stat().st_size > MAX_DATA_BYTES:
            problem = f"{path!r} is larger than {MAX_DATA_BYTES // 2**20} MiB"
        if problem:
            raise SpecError([Problem(str(spec_path), None, None, key, problem)])
        try:
            inputs[path] = file.read_bytes()
        except OSError as exc:
            raise InputError(f"{file}: cannot read: {exc.strerror}") from None
    return inputs


def compile_file(spec_path: Path, project: Path | None = None) -> Compiled:
    """Load, validate and compile a spec file into the project's files.

    With `project` (the output folder), a local model named relative to it is checked for the
    chat template's tokens.
    """
    loaded = read_spec_file(spec_path)
    spec = validate_spec(loaded)
    inputs = read_inputs(spec, spec_path)
    plan = plan_project(spec, inputs, str(spec_path))
    files = render_plan(plan, inputs)
    if project is not None:
        check_local_tokenizer(
            plan.template,
            spec.model.name_or_path,
            project,
            add=spec.model.add_special_tokens,
            where=(str(spec_path), loaded.locate(("model", "name_or_path"))),
        )
    return Compiled(spec, files)
