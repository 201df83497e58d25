"""Render a plan into the generated project's files: a pure function of (spec, inputs).

`compile_project(spec, inputs)` returns `{relative path: bytes}` for every file of the project,
including the normalized `spec.yaml` and `lfc.lock.json`. The same spec and inputs give the
same bytes on any machine: no timestamps, no absolute paths, LF line endings.
"""

from __future__ import annotations

import hashlib
import json
import math
import shlex
from collections.abc import Mapping
from functools import cache
from typing import Any

import jinja2
import yaml

from lfc.errors import InputError
from lfc.ollama import modelfile
from lfc.python_literals import py_block, py_literal
from lfc.resolve import EXPANDED_DIR, EXPORT_DIR, PROCESSED_DIR, Plan, resolve
from lfc.schemas.spec import (
    AUDIO_SETTINGS,
    DATA_SUFFIXES,
    IMAGE_SETTINGS,
    VIDEO_SETTINGS,
    CustomTemplate,
    Spec,
)
from lfc.version import __version__

LOCK_FILE = "lfc.lock.json"
SPEC_FILE = "spec.yaml"

# (output path, blueprint) for every project; stage and extras are added in `_file_table`.
_COMMON_FILES = (
    ("README.md", "project/README.md.j2"),
    ("requirements.txt", "project/requirements.txt.j2"),
    ("config.yaml", "project/config.yaml.j2"),
    ("accelerate/single.yaml", "project/accelerate/single.yaml.j2"),
    ("config.py", "project/config.py.j2"),
    ("model.py", "project/model.py.j2"),
    ("data.py", "project/data.py.j2"),
    (".gitignore", "project/gitignore.j2"),
    ("Dockerfile", "project/Dockerfile.j2"),
    (".dockerignore", "project/dockerignore.j2"),
    ("tests/test_chat_template.py", "project/tests/test_chat_template.py.j2"),
)


# The trained model's chat, export and serving files (every stage but rm, a scorer).
_SERVING_FILES = [
    ("chat.py", "project/chat.py.j2"),
    ("export.py", "project/export.py.j2"),
    ("serve.py", "project/serve.py.j2"),
]
# vLLM serving, unless vLLM cannot load the base.
_VLLM_FILES = [
    ("serve_vllm.sh", "project/serve_vllm.sh.j2"),
    ("requirements-serve.txt", "project/requirements-serve.txt.j2"),
    ("Dockerfile.serve", "project/Dockerfile.serve.j2"),
    ("Dockerfile.serve.dockerignore", "project/Dockerfile.serve.dockerignore.j2"),
]


def yaml_scalar(value: Any) -> str:
    """A YAML 1.1 scalar or flow list that PyYAML's safe loader reads back as `value`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"non-finite number {value!r}")
        text = repr(value)
        if "e" in text and "." not in text.split("e")[0]:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return text
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(yaml_scalar(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} into config.yaml")


def shell_word(value: Any) -> str:
    """`value` as one shell word: bash reads it back unchanged, never as code."""
    text = str(value)
    if any(ord(c) < 32 and c != "\t" for c in text):
        raise InputError(f"{text!r} holds a control character and cannot go into a shell script")
    return shlex.quote(text)


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("lfc.blueprints", ""),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["yaml"] = yaml_scalar
    env.filters["py"] = py_literal
    env.filters["py_block"] = py_block
    env.filters["sh"] = shell_word
    env.filters["json"] = lambda value: json.dumps(value, indent=2)
    return env


def _file_table(plan: Plan) -> list[tuple[str, str]]:
    files = list(_COMMON_FILES)
    kind = plan.spec.distributed.kind
    if kind in ("ddp", "fsdp", "deepspeed"):
        files.append((f"accelerate/{kind}.yaml", f"project/accelerate/{kind}.yaml.j2"))
        files.append(("launch.sh", "project/launch.sh.j2"))
        files.append(("slurm.sbatch", "project/slurm.sbatch.j2"))
    if kind == "deepspeed":
        files.append(("ds_config.json", "project/ds_config.json.j2"))
    # pt is SFT on blocks; orpo and simpo share one blueprint (trainers fed rendered texts).
    stage = {"pt": "sft", "orpo": "text_preference", "simpo": "text_preference"}.get(
        plan.stage, plan.stage
    )
    files.append(("train.py", f"project/stages/{stage}.py.j2"))
    if plan.generative:
        files += _SERVING_FILES
    if plan.serves_with_vllm:
        files += _VLLM_FILES
    if plan.spec.model.prequantized is not None:  # peft cannot merge into its layers
        files[files.index(("export.py", "project/export.py.j2"))] = (
            "export.py",
            "project/export_adapter.py.j2",
        )
    if plan.stage == "grpo":
        files.append(("rewards.py", "project/rewards.py.j2"))
    if plan.expands:
        files.append(("expand.py", "project/expand.py.j2"))
    return files


def _render(blueprint: str, plan: Plan) -> str:
    template = _environment().get_template(blueprint)
    text = template.render(
        plan=plan,
        spec=plan.spec,
        template=plan.template,
        pins=plan.pins,
        serving=plan.serving,
        image_name=plan.image_name,
        processed_dir=PROCESSED_DIR,
        export_dir=EXPORT_DIR,
        expanded_dir=EXPANDED_DIR,
        version=__version__,
    )
    return text


def normalized_spec(plan: Plan) -> bytes:
    """The spec as the project keeps it: every default spelled out, data paths inside it."""
    data = plan.spec.model_dump(mode="json")
    if not plan.generative:  # a reward model has no serve or export settings
        del data["serve"], data["export"]
    if plan.tracking is None:  # no tracker reads tracking settings
        del data["tracking"]
    else:
        data["tracking"] = plan.tracking.model_dump(mode="json")
    if plan.generative and not plan.writes_modelfile:
        data["export"]["ollama"] = False  # no Modelfile for an image model or an adapter export
    # Only the settings of the model's media: an audio model's, or an image (video) model's.
    if plan.generative:
        visual = ("max_images_per_prompt", "max_videos_per_prompt")
        for key in visual if plan.audio else ("max_audios_per_prompt",):
            del data["serve"][key]
    if data["model"]["multimodal"] is not None:
        for key in IMAGE_SETTINGS | VIDEO_SETTINGS if plan.audio else AUDIO_SETTINGS:
            del data["model"]["multimodal"][key]
    if isinstance(data["template"], dict):
        data["template"]["jinja"] = "chat_template.jinja"
    for dataset, resolved in zip(data["data"]["datasets"], plan.datasets, strict=True):
        if resolved.hub is None:
            folder = len(resolved.files) != 1 or not plan_is_file(dataset)
            dataset["path"] = f"data/{resolved.name}" if folder else resolved.files[0]
        if resolved.media_dir is not None:
            dataset["media_dir"] = resolved.media_dir
        dataset["name"] = resolved.name
    user_rewards = iter(plan.user_rewards)
    for reward in data["stage"].get("rewards", []):
        if "function" in reward:
            target = next(user_rewards)["target"]
            reward["function"] = f"{target}:{reward['function'].split(':')[-1]}"
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    header = (
        "# Normalized spec of this project, written by `lfc compile`.\n"
        "# `lfc verify .` re-renders the project from it and reports any difference.\n"
    )
    return (header + body).encode("utf-8")


def plan_is_file(dataset: dict[str, Any]) -> bool:
    """A dataset of the dumped spec names a file (not a folder)."""
    return str(dataset.get("path", "")).endswith(DATA_SUFFIXES)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def lock_file(plan: Plan, files: Mapping[str, bytes]) -> bytes:
    """lfc.lock.json: compiler version, spec hash, pin set and the sha256 of every file."""
    lock = {
        "compiler": {"name": "lfc", "version": __version__},
        "spec_sha256": sha256(files[SPEC_FILE]),
        "pins": {
            "target": plan.pins.target,
            "reason": plan.pins.reason,
            "training": plan.pins.packages,
            **({"serving": plan.serving.packages} if plan.serves_with_vllm else {}),
        },
        "chat_template": {
            "name": plan.template.name,
            "sha256": sha256(files["chat_template.jinja"]),
        },
        "files": {path: sha256(files[path]) for path in sorted(files)},
    }
    return (json.dumps(lock, indent=2, sort_keys=True) + "\n").encode("utf-8")


def compile_project(
    spec: Spec, inputs: Mapping[str, bytes], source: str = "spec.yaml"
) -> dict[str, bytes]:
    """Every file of the project for `spec`.

    `inputs` maps each file the spec names (datasets, a custom template) to its bytes;
    `source` names the spec in error messages.
    """
    return render_plan(plan_project(spec, inputs, source), inputs)


def plan_project(spec: Spec, inputs: Mapping[str, bytes], source: str = "spec.yaml") -> Plan:
    """Resolve `spec`, giving it the custom template's bytes from `inputs` if it has one."""
    custom = spec.template.jinja if isinstance(spec.template, CustomTemplate) else None
    return resolve(spec, inputs.get(custom) if custom else None, source, tuple(inputs))


def render_plan(plan: Plan, inputs: Mapping[str, bytes]) -> dict[str, bytes]:
    """Every file of the project for a resolved plan (see `compile_project`)."""
    files: dict[str, bytes] = {}
    for path, blueprint in _file_table(plan):
        text = _render(blueprint, plan)
        files[path] = text.encode("utf-8")
    files["chat_template.jinja"] = plan.template.source.encode("utf-8")
    if plan.writes_modelfile:
        text = modelfile(plan.template, EXPORT_DIR, plan.stop_token_strings)
        files["Modelfile"] = text.encode("utf-8")
    for dataset in plan.datasets:
        for source, target in zip(dataset.source_files, dataset.files, strict=True):
            if source not in inputs:
                raise InputError(f"data file {source!r} was not read")
            files[target] = inputs[source]
        for source, target in zip(dataset.media_sources, dataset.media_files, strict=True):
            files[target] = inputs[source]
    for reward in plan.user_rewards:
        if reward["source"] not in inputs:
            raise InputError(f"reward file {reward['source']!r} was not read")
        files[reward["target"]] = inputs[reward["source"]]
    files[SPEC_FILE] = normalized_spec(plan)
    for path, content in files.items():
        if b"\r\n" in content and not path.startswith("data/"):
            raise AssertionError(f"blueprint produced CRLF line endings in {path}")
    files[LOCK_FILE] = lock_file(plan, files)
    return dict(sorted(files.items()))
