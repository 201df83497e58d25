"""`lfc new`: scaffold a spec repository with cookiecutter.

The repository holds a starter spec and its data under `specs/`, the spec's JSON Schema under
`schemas/`, a README, a CI workflow and a pre-commit config that run `lfc verify` on every
project committed under `projects/<name>/`, and a `.gitignore`. The template is
`lfc.blueprints/new`; cookiecutter is imported only when a repository is made, so importing
this module (and `lfc --help`) stays fast.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from lfc.chat_templates import template_names
from lfc.errors import InputError, LfcError, RefusedOverwrite
from lfc.suggest import did_you_mean
from lfc.version import __version__

DEFAULT_SPEC_NAME = "starter"
DEFAULT_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
DEFAULT_TEMPLATE = "qwen"
SCHEMA_FILE = "schemas/spec.schema.json"

# A single path component that cannot be `.`, `..`, hidden, or need quoting in a shell or YAML.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
MAX_NAME_LENGTH = 100
# The model is written inside a double-quoted YAML string: no quotes, backslashes or whitespace.
SAFE_MODEL = re.compile(r'[^\s"\\]+')


def _check_name(what: str, value: str) -> None:
    """Raise InputError unless `value` is a safe folder or file name."""
    if not SAFE_NAME.fullmatch(value) or len(value) > MAX_NAME_LENGTH:
        raise InputError(
            f"{what} {value!r} is not a safe name: use letters, digits, '.', '_' and '-', "
            f"starting with a letter or digit (at most {MAX_NAME_LENGTH} characters)"
        )


def _check_inputs(repo_name: str, spec_name: str, model: str, template: str) -> None:
    """Raise InputError naming the first unusable argument."""
    _check_name("repo_name", repo_name)
    _check_name("spec_name", spec_name)
    if not SAFE_MODEL.fullmatch(model):
        raise InputError(
            f"model {model!r} is not usable: give a hub id (org/name) or a folder path without "
            "spaces, quotes or backslashes"
        )
    names = template_names()
    if template not in names:
        raise InputError(
            f"unknown template {template!r}{did_you_mean(template, names)} "
            "(`lfc templates` lists them)"
        )


def _check_target(target: Path) -> None:
    """Refuse a target that exists; raise InputError if its parent folder is missing."""
    if target.exists() or target.is_symlink():
        raise RefusedOverwrite(f"{target} already exists; lfc new writes only a new folder")
    if not target.parent.is_dir():
        raise InputError(f"{target.parent} is not a folder; create it first")


def _spec_schema() -> str:
    """The spec's JSON Schema exactly as `lfc schema` prints it."""
    from lfc.schemas.spec import Spec

    return json.dumps(Spec.model_json_schema(), indent=2, sort_keys=True) + "\n"


def _render(output_dir: Path, context: dict[str, str]) -> Path:
    """Render the `new` template into `output_dir`; return the repository folder made there.

    Uses cookiecutter's generator directly: no user config, prompts, hooks or replay file.
    """
    from cookiecutter.generate import generate_context, generate_files

    with resources.as_file(resources.files("lfc.blueprints") / "new") as template:
        full_context = generate_context(
            context_file=str(template / "cookiecutter.json"), extra_context=context
        )
        made = generate_files(
            repo_dir=str(template),
            context=full_context,
            output_dir=str(output_dir),
            overwrite_if_exists=False,
            accept_hooks=False,
        )
    return Path(made)


def new_repository(
    target: Path,
    repo_name: str,
    spec_name: str = DEFAULT_SPEC_NAME,
    model: str = DEFAULT_MODEL,
    template: str = DEFAULT_TEMPLATE,
) -> Path:
    """Create the spec repository `target` (a folder that must not exist yet) and return it.

    `repo_name` titles the README; `specs/<spec_name>.yaml` is a LoRA SFT spec of `model` with
    the registry chat template `template`, compiling to `projects/<spec_name>`. The CI workflow
    pins the running lfc version. The repository is rendered into a temporary folder beside
    `target` and renamed into place, so a failure leaves nothing behind.

    Raises InputError (exit 2) for an unsafe name, a bad model string, an unknown template or a
    missing parent folder, RefusedOverwrite (exit 3) if `target` exists, and LfcError (exit 4)
    if writing fails.
    """
    from cookiecutter.exceptions import CookiecutterException

    target = Path(target)
    _check_inputs(repo_name, spec_name, model, template)
    _check_target(target)
    context = {
        "repo_name": repo_name,
        "spec_name": spec_name,
        "model": model,
        "chat_template": template,
        "lfc_version": __version__,
    }
    try:
        staging = Path(
            tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        )
    except OSError as exc:
        raise LfcError(f"{target.parent}: cannot write: {exc.strerror}") from None
    try:
        made = _render(staging, context)
        schema = made / SCHEMA_FILE
        schema.parent.mkdir()
        schema.write_text(_spec_schema(), encoding="utf-8")
        if target.exists() or target.is_symlink():
            raise RefusedOverwrite(f"{target} already exists; lfc new writes only a new folder")
        os.rename(made, target)
    except CookiecutterException as exc:
        raise LfcError(f"{target}: the repository template failed: {exc}") from None
    except OSError as exc:
        raise LfcError(f"{target}: cannot write: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
