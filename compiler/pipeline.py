"""The edges of the pipeline: read a spec and its data files, compile, write or verify."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from lfc.errors import InputError, Problem, SpecError
from lfc.loader import LoadedSpec, read_spec_file
from lfc.quantization_check import check_local_quantization
from lfc.registry import expand_registry
from lfc.render import plan_project, render_plan
from lfc.resolve import media_suffixes
from lfc.schemas.spec import DATA_SUFFIXES, CustomTemplate, Spec
from lfc.tokenizer_check import check_local_tokenizer
from lfc.validate import validate_spec

MAX_DATA_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class Compiled:
    spec: Spec
    files: dict[str, bytes]


def load_spec(path: Path) -> Spec:
    """Read and validate a spec file (registry names expanded); raises SpecError with positions."""
    loaded = read_spec_file(path)
    try:
        return expand_names(validate_spec(loaded), loaded, path)
    except SpecError as error:
        raise _located(error, loaded) from None


def _key_path(key: str) -> tuple[str | int, ...]:
    """`data.datasets[0].path` -> `('data', 'datasets', 0, 'path')`."""
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", key)
    return tuple(int(p[1:-1]) if p.startswith("[") else p for p in parts)


def _located(error: SpecError, loaded: LoadedSpec) -> SpecError:
    """The same problems, each given the position of its key in the spec when it has none."""
    problems = []
    for problem in error.problems:
        if problem.line is None and problem.key and problem.source == loaded.source:
            position = loaded.locate(_key_path(problem.key))
            if position is not None:
                problem = replace(problem, line=position[0], column=position[1])
        problems.append(problem)
    return SpecError(problems)


def _problem(spec_path: Path, key: str, message: str) -> SpecError:
    return SpecError([Problem(str(spec_path), None, None, key, message)])


def _read(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as exc:
        raise InputError(f"{file}: cannot read: {exc.strerror}") from None


def _folder_files(folder: Path, path: str) -> list[str]:
    """The data files directly inside a dataset folder, as spec-relative paths."""
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix in DATA_SUFFIXES)
    return [f"{path.rstrip('/')}/{name}" for name in names]


def _media_files(
    spec_path: Path, base: Path, media_dir: str, index: int, suffixes: tuple[str, ...]
) -> list[tuple[str, str]]:
    """The media files (of `suffixes`) under a dataset's media_dir, as spec-relative paths."""
    key = f"data.datasets[{index}].media_dir"
    folder = base / media_dir
    if not folder.is_dir():
        raise _problem(spec_path, key, f"media_dir {media_dir!r} is not a folder (in {base})")
    found = sorted(
        p.relative_to(base).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in suffixes
    )
    if not found:
        kinds = ", ".join(suffixes)
        raise _problem(spec_path, key, f"media_dir {media_dir!r} holds no {kinds} file")
    return [(key, path) for path in found]


def read_inputs(spec: Spec, spec_path: Path) -> dict[str, bytes]:
    """The bytes of every local data file, resolved relative to the spec's folder."""
    base = spec_path.resolve().parent
    wanted: list[tuple[str, str]] = []
    for index, dataset in enumerate(spec.data.resolved):
        if dataset.path is None:
            continue  # a hub dataset: data.py loads it
        key = f"data.datasets[{index}].path"
        folder = base / dataset.path
        if not dataset.is_file and folder.is_dir():
            found = _folder_files(folder, dataset.path)
            if not found:
                kinds = ", ".join(DATA_SUFFIXES)
                raise _problem(spec_path, key, f"folder {dataset.path!r} holds no {kinds} file")
            suffixes = {name.rsplit(".", 1)[-1] for name in found}
            if len(suffixes) > 1:
                message = f"folder {dataset.path!r} mixes file types {sorted(suffixes)}; use one"
                raise _problem(spec_path, key, message)
            wanted += [(key, name) for name in found]
        else:
            wanted.append((key, dataset.path))
        if dataset.media_dir is not None:
            suffixes = media_suffixes(dataset.columns)
            wanted += _media_files(spec_path, base, dataset.media_dir, index, suffixes)
    if isinstance(spec.template, CustomTemplate):
        wanted.append(("template.jinja", spec.template.jinja))
    for index, reward in enumerate(getattr(spec.stage, "rewards", ())):
        if hasattr(reward, "file"):
            wanted.append((f"stage.rewards[{index}].function", reward.file))
    inputs: dict[str, bytes] = {}
    total = 0
    for key, path in wanted:
        file = base / path
        problem = None
        if file.is_dir():
            problem = f"{path!r} is a folder; give a file"
        elif not file.is_file():
            problem = f"{path!r} does not exist (looked in {base})"
        elif file.stat().st_size > MAX_DATA_BYTES:
            problem = f"{path!r} is larger than {MAX_DATA_BYTES // 2**20} MiB: use a hub dataset"
        if problem:
            raise _problem(spec_path, key, problem)
        inputs[path] = _read(file)
        total += len(inputs[path])
        if total > MAX_DATA_BYTES:
            raise _problem(spec_path, key, f"the data files exceed {MAX_DATA_BYTES // 2**20} MiB")
    return inputs


def expand_names(spec: Spec, loaded: LoadedSpec, spec_path: Path) -> Spec:
    """The spec with registry dataset names written out (a no-op without a registry)."""
    if spec.data.registry is None:
        return spec
    file = spec_path.resolve().parent / spec.data.registry
    if file.is_dir():
        raise _problem(
            spec_path, "data.registry", f"{spec.data.registry!r} is a folder; give a file"
        )
    if not file.is_file():
        message = f"{spec.data.registry!r} does not exist (looked in {file.parent})"
        raise _problem(spec_path, "data.registry", message)
    return expand_registry(spec, _read(file), loaded)


def compile_file(spec_path: Path, project: Path | None = None) -> Compiled:
    """Load, validate and compile a spec file into the project's files.

    With `project` (the output folder), a local model named relative to it is checked for the
    chat template's tokens, and its quantization_config against model.prequantized.
    """
    loaded = read_spec_file(spec_path)
    try:
        spec = expand_names(validate_spec(loaded), loaded, spec_path)
        inputs = read_inputs(spec, spec_path)
        plan = plan_project(spec, inputs, str(spec_path))
        files = render_plan(plan, inputs)
    except SpecError as error:
        raise _located(error, loaded) from None
    if project is not None:
        key = ("model", "prequantized" if spec.model.prequantized else "name_or_path")
        check_local_quantization(spec, project, where=(str(spec_path), loaded.locate(key)))
        check_local_tokenizer(
            plan.template,
            spec.model.name_or_path,
            project,
            add=spec.model.add_special_tokens,
            where=(str(spec_path), loaded.locate(("model", "name_or_path"))),
        )
    return Compiled(spec, files)
