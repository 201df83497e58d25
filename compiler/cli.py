"""The `lfc` command line: thin wrappers over the library functions.

Exit codes: 0 ok, 1 a project drifted from its spec, 2 invalid input, 3 refused to overwrite
an output folder, 4 an I/O failure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from lfc.errors import DriftError, InputError, LfcError, RefusedOverwrite
from lfc.version import __version__

app = typer.Typer(
    name="lfc",
    help="Compile a fine-tuning spec into a standalone, pinned training project.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
templates_app = typer.Typer(help="The chat-template registry.", invoke_without_command=True)
app.add_typer(templates_app, name="templates")
import_app = typer.Typer(help="Convert another tool's config into an lfc spec.")
app.add_typer(import_app, name="import")


def _fail(error: LfcError) -> None:
    typer.echo(str(error), err=True)
    raise typer.Exit(error.exit_code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lfc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """lfc compiles spec.yaml into a project you can read, commit and run without lfc."""


@app.command()
def compile(
    spec: Annotated[Path, typer.Argument(help="The spec YAML file.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Project folder to write.")],
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite hand edits or a folder lfc did not write.")
    ] = False,
) -> None:
    """Compile SPEC into a project folder (atomically; refuses to clobber hand edits)."""
    from lfc.pipeline import compile_file
    from lfc.writer import write_project

    try:
        compiled = compile_file(spec, output)
        if compiled.spec.model.trust_remote_code:
            typer.echo(
                "warning: model.trust_remote_code is true: the model repository's own Python "
                "code will run when the project loads it",
                err=True,
            )
        report = write_project(compiled.files, output, force=force)
    except LfcError as error:
        _fail(error)
    kept = f"; kept {len(report.kept)} of your files/folders" if report.kept else ""
    typer.echo(f"compiled {spec} -> {output}/ ({report.written} files{kept})")


@app.command()
def validate(spec: Annotated[Path, typer.Argument(help="The spec YAML file.")]) -> None:
    """Check SPEC and its data paths without writing anything."""
    from lfc.pipeline import compile_file

    try:
        compile_file(spec)
    except LfcError as error:
        _fail(error)
    typer.echo(f"{spec}: valid")


@app.command()
def verify(
    project: Annotated[Path, typer.Argument(help="A folder written by `lfc compile`.")],
) -> None:
    """Re-render PROJECT from its spec.yaml; exit 1 with a diff if anything differs."""
    from lfc.verify import verify_project

    try:
        if not (project / "spec.yaml").is_file():
            raise DriftError(f"{project}: no spec.yaml; is this an lfc project?")
        differences = verify_project(project)
    except LfcError as error:
        _fail(error)
    if differences:
        for difference in differences:
            typer.echo(difference.diff, nl=False)
        names = ", ".join(f"{d.path} ({d.kind})" for d in differences)
        typer.echo(f"{project}: differs from its spec: {names}", err=True)
        raise typer.Exit(DriftError.exit_code)
    typer.echo(f"{project}: matches its spec")


@app.command()
def diff(
    spec: Annotated[Path, typer.Argument(help="The spec YAML file.")],
    other: Annotated[
        Path, typer.Argument(help="Another spec, or a project folder written by `lfc compile`.")
    ],
) -> None:
    """Show which generated files differ: SPEC's project against OTHER's, or against a folder.

    Exit 0 when nothing differs, 1 when something does (like diff(1)), 2 on invalid input.
    """
    from lfc.pipeline import compile_file
    from lfc.verify import compare_files, compare_with_folder

    try:
        files = compile_file(spec).files
        if other.is_dir():
            differences = compare_with_folder(other, files)
            summary = f"{other}/ -> {spec}"
        else:
            labels = (f"from {other}", f"from {spec}")
            differences = compare_files(compile_file(other).files, files, labels)
            summary = f"{other} -> {spec}"
    except LfcError as error:
        _fail(error)
    for difference in differences:
        typer.echo(difference.diff, nl=False)
    if differences:
        names = ", ".join(f"{d.path} ({d.kind})" for d in differences)
        typer.echo(f"{summary}: {len(differences)} files differ: {names}", err=True)
        raise typer.Exit(DriftError.exit_code)
    typer.echo(f"{summary}: no generated file differs", err=True)


@import_app.command("llamafactory")
def import_llamafactory(
    config: Annotated[Path, typer.Argument(help="A LLaMA-Factory training YAML.")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Spec file to write (default: stdout).")
    ] = None,
    dataset_dir: Annotated[
        str | None,
        typer.Option(
            help="Folder holding dataset_info.json, as the new spec should name it "
            "(default: the config's dataset_dir, else data)."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUTPUT.")] = False,
) -> None:
    """Convert CONFIG into an lfc spec; every key without an lfc field is reported by name."""
    from lfc.lf_import import import_llamafactory as convert
    from lfc.lf_import import spec_text
    from lfc.loader import read_spec_file
    from lfc.writer import write_file_atomically

    try:
        loaded = read_spec_file(config)
        data = dict(loaded.data) if isinstance(loaded.data, dict) else loaded.data
        if dataset_dir is not None and isinstance(data, dict):
            data["dataset_dir"] = dataset_dir
        imported = convert(data, str(config), loaded.locate)
        text = spec_text(imported, config.name)
        _check_imported(text, str(output or "the imported spec"))
        if output is None:
            sys.stdout.write(text)
        else:
            if output.exists() and not force:
                raise RefusedOverwrite(f"{output} exists; pass --force to replace it")
            write_file_atomically(output, text.encode("utf-8"))
    except LfcError as error:
        _fail(error)
    for key, what in imported.notes:
        typer.echo(f"{config}: {key}: {what}", err=True)
    if output is not None:
        typer.echo(f"imported {config} -> {output}", err=True)


def _check_imported(text: str, source: str) -> None:
    """The imported spec must pass lfc's own validation (datasets are checked at compile)."""
    from lfc.loader import parse_spec_text
    from lfc.validate import validate_spec

    validate_spec(parse_spec_text(text.encode("utf-8"), source))


@app.command()
def new(
    target: Annotated[Path, typer.Argument(help="Folder of the new spec repository.")],
    spec_name: Annotated[str, typer.Option(help="Name of the starter spec.")] = "starter",
    model: Annotated[
        str, typer.Option(help="Base model of the starter spec.")
    ] = "Qwen/Qwen2.5-0.5B-Instruct",
    template: Annotated[str, typer.Option(help="Chat template of the starter spec.")] = "qwen",
) -> None:
    """Scaffold a spec repository (cookiecutter): a spec, a CI workflow running `lfc verify`,
    a pre-commit hook."""
    from lfc.scaffold import new_repository

    try:
        folder = new_repository(target, target.name, spec_name, model, template)
    except LfcError as error:
        _fail(error)
    typer.echo(
        f"created {folder}/: next, lfc compile specs/{spec_name}.yaml -o projects/{spec_name}"
    )


@app.command("tiny-model")
def tiny_model(
    output: Annotated[Path, typer.Argument(help="Folder to write the model into.")],
    seed: Annotated[int, typer.Option(help="Seed of the weights and the tokenizer corpus.")] = 0,
    template: Annotated[
        str | None, typer.Option(help="Give the tokenizer this template family's bos/eos.")
    ] = None,
    architecture: Annotated[
        str,
        typer.Option(
            help="llama (a causal LM), llava, qwen2_vl or qwen2_5_vl (an image-text model with "
            "its processor and its template; the Qwen ones need torchvision), or qwen2_audio "
            "(an audio-text model with its processor and template)."
        ),
    ] = "llama",
) -> None:
    """Build a tiny random Llama (LLaVA, Qwen2-VL, Qwen2.5-VL, Qwen2-Audio) model and BPE
    tokenizer."""
    from lfc.chat_templates import template_names
    from lfc.suggest import did_you_mean
    from lfc.tiny_model import ARCHITECTURES, build_tiny_model

    if template is not None and template not in template_names():
        _fail(
            InputError(f"unknown template {template!r}{did_you_mean(template, template_names())}")
        )
    if architecture not in ARCHITECTURES:
        known = ", ".join(ARCHITECTURES)
        _fail(InputError(f"unknown architecture {architecture!r}; known: {known}"))
    build_tiny_model(output, seed=seed, template=template, architecture=architecture)  # type: ignore[arg-type]
    typer.echo(f"tiny model written to {output}/")


@app.command("explain")
def explain_key(
    key: Annotated[str, typer.Argument(help="A dotted spec key, e.g. train.learning_rate.")],
) -> None:
    """Describe a spec key: meaning, type, default and allowed values."""
    from lfc.explain import explain

    try:
        typer.echo(str(explain(key)))
    except LfcError as error:
        _fail(error)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the spec (for editors)."""
    from lfc.schemas.spec import Spec

    typer.echo(json.dumps(Spec.model_json_schema(), indent=2, sort_keys=True))


@templates_app.callback()
def templates(ctx: typer.Context) -> None:
    """List the chat templates and what each supports."""
    if ctx.invoked_subcommand is not None:
        return
    from lfc.chat_templates import get_template, template_names

    for name in template_names():
        entry = get_template(name)
        features = [
            f
            for f, on in (
                ("system", entry.supports_system),
                ("tools", entry.supports_tools),
                ("reasoning", entry.supports_reasoning),
            )
            if on
        ]
        checked = f"exact vs {entry.reference}" if entry.reference else "no official copy"
        typer.echo(
            f"{name:15} {entry.end_of_turn or '(eos)':24} {'/'.join(features):23} "
            f"{checked:50} {entry.description}"
        )


def _read_json(path: Path, what: str) -> list:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise InputError(f"{path}: expected a JSON list of {what} objects")
    return value


@templates_app.command("render")
def templates_render(
    name: Annotated[str, typer.Argument(help="Registry name, e.g. llama3.")],
    conversation: Annotated[Path, typer.Argument(help="JSON list of {role, content} messages.")],
    add_generation_prompt: Annotated[
        bool, typer.Option("--add-generation-prompt", help="End with the assistant header.")
    ] = False,
    tools: Annotated[
        Path | None, typer.Option("--tools", help="JSON list of tool schemas.")
    ] = None,
    bos_token: Annotated[
        str | None, typer.Option(help="bos_token (default: the family's, else <s>).")
    ] = None,
    eos_token: Annotated[
        str | None, typer.Option(help="eos_token (default: the family's, else </s>).")
    ] = None,
) -> None:
    """Print exactly what template NAME renders for CONVERSATION (no newline added)."""
    from lfc.chat_templates import template_names
    from lfc.suggest import did_you_mean
    from lfc.template_render import render_conversation

    try:
        if name not in template_names():
            raise InputError(f"unknown template {name!r}{did_you_mean(name, template_names())}")
        messages = _read_json(conversation, "message")
        tool_list = _read_json(tools, "tool") if tools is not None else None
        text = render_conversation(
            name, messages, add_generation_prompt, tool_list, bos_token, eos_token
        )
    except LfcError as error:
        _fail(error)
    sys.stdout.write(text)
    sys.stdout.flush()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
