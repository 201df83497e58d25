"""Every optional package the compiler can pin, on every target and loader.

`_extras` in compiler/resolve.py names the extras a spec needs (its trackers, bitsandbytes,
flash-attn, Liger, DeepSpeed, its optimizer, Pillow for images, gptqmodel for a GPTQ/AWQ base),
and `training_pins` looks each up in the target's `extras` of blueprints/pins/matrix.json. A
spec that asks for an extra its target has no pins for must be refused at compile time, at its
key: these tests compile one spec per extra, target and loader, and check that each either pins
the matrix's versions or is a located spec error, never a KeyError.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import json
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from lfc import resolve
from lfc.errors import SpecError
from lfc.pipeline import compile_file
from lfc.schemas.spec import Optimizer, ReportTo, Spec

from conftest import FIXTURES, ROOT, write_variant

CUDA = FIXTURES / "cuda"
MATRIX = json.loads((ROOT / "blueprints" / "pins" / "matrix.json").read_text())
TARGETS = tuple(get_args(Spec.model_fields["pins"].annotation.model_fields["target"].annotation))
LOADERS = ("transformers", "unsloth")
MODEL = {"name_or_path": "../tiny-llama"}
MLLM_COLUMNS = {
    "messages": "messages",
    "images": "images",
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
}

# The smallest change to examples/quickstart.yaml that makes the compiler ask for each extra.
EXTRA_SECTIONS: dict[str, dict[str, Any]] = {
    **{tracker: {"train": {"report_to": [tracker]}} for tracker in get_args(ReportTo)},
    "bitsandbytes": {"model": {**MODEL, "quantization": {"bits": 4}}},
    "flash-attn": {
        "model": {**MODEL, "dtype": "bfloat16", "attn_implementation": "flash_attention_2"}
    },
    "liger-kernel": {"train": {"liger_kernel": True}},
    "deepspeed": {"distributed": {"kind": "deepspeed", "num_processes": 2}},
    **{
        kind: {"adapter": {"kind": "full"}, "train": {"optimizer": {"kind": kind}}}
        for kind in ("galore", "apollo", "badam")
    },
    "pillow": {
        "model": {"name_or_path": "../tiny-llava", "multimodal": {"plugin": "llava"}},
        "template": "llava",
        "adapter": {"kind": "lora", "rank": 4},
        "data": {
            "datasets": [
                {
                    "path": "mllm/mllm_demo.json",
                    "format": "sharegpt",
                    "media_dir": "mllm",
                    "columns": MLLM_COLUMNS,
                }
            ],
            "cutoff_len": 512,
        },
    },
    "av": {
        "model": {"name_or_path": "../tiny-qwen2-audio", "multimodal": {"plugin": "qwen2_audio"}},
        "template": "qwen2_audio",
        "adapter": {"kind": "lora", "rank": 4},
        "data": {
            "datasets": [
                {
                    "path": "mllm/mllm_audio_demo.json",
                    "format": "sharegpt",
                    "media_dir": "mllm",
                    "columns": {**MLLM_COLUMNS, "images": None, "audios": "audios"},
                }
            ],
            "cutoff_len": 512,
        },
    },
    **{
        method: {
            "model": {**MODEL, "prequantized": method},
            "adapter": {"kind": "lora", "target": ["q_proj", "v_proj"]},  # not all-linear
            "serve": {"lora_adapter": True},
        }
        for method in ("gptq", "awq")
    },
    # hqq and eetq are refused whatever else the spec holds (tests/test_prequantized_formats.py).
    **{
        method: {
            "model": {**MODEL, "prequantized": method},
            "adapter": {"kind": "lora", "target": ["q_proj", "v_proj"]},
        }
        for method in ("aqlm", "hqq", "eetq")
    },
}
# Extras that more than one kind of spec asks for, each other way too: av decodes the audio of
# a qwen2_audio project and the videos of a qwen2_vl / qwen2_5_vl project with a videos column.
MORE_SECTIONS: dict[str, tuple[str, dict[str, Any]]] = {
    f"av-{plugin}-video": (
        "av",
        {
            "model": {"name_or_path": "../tiny-qwen2-vl", "multimodal": {"plugin": plugin}},
            "template": "qwen2_vl",
            "adapter": {"kind": "lora", "rank": 4},
            "data": {
                "datasets": [
                    {
                        "path": "mllm/mllm_video_demo.json",
                        "format": "sharegpt",
                        "media_dir": "mllm",
                        "columns": {**MLLM_COLUMNS, "images": None, "videos": "videos"},
                    }
                ],
                "cutoff_len": 512,
            },
        },
    )
    for plugin in ("qwen2_vl", "qwen2_5_vl")
}
# Every way the walk compiles: (the extra it asks for, the sections that ask for it).
CASES = {
    **{extra: (extra, sections) for extra, sections in EXTRA_SECTIONS.items()},
    **MORE_SECTIONS,
}


def _requestable_extras() -> Counter[str]:
    """Every extra `_extras` can return, with the number of places that append it: its string
    constants, and the values of the spec fields it passes through (the trackers, the optimizer
    kind, the pre-quantized method; one place each)."""
    tree = ast.parse(inspect.getsource(resolve._extras))
    optimizers = get_args(get_args(Optimizer)[0])  # Annotated[A | B | ..., discriminator]
    prequantized = Spec.model_fields["model"].annotation.model_fields["prequantized"]
    passed = {
        "spec.train.report_to": set(get_args(ReportTo)),
        "spec.train.optimizer.kind": {
            kind
            for model in optimizers
            for kind in get_args(model.model_fields["kind"].annotation)
            if kind != "adamw"
        },
        "spec.model.prequantized": set(get_args(get_args(prequantized.annotation)[0])),
    }
    found: Counter[str] = Counter()
    seen: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        function = ast.unparse(node.func)
        if function not in ("extras.append", "list"):
            continue
        (argument,) = node.args
        if isinstance(argument, ast.Constant):
            found[argument.value] += 1
        else:
            seen.add(ast.unparse(argument))
    assert seen == set(passed), f"_extras passes {seen}: map each to the values it can take"
    for values in passed.values():
        found.update(values)
    return found


def test_the_walk_covers_every_extra_the_compiler_can_request() -> None:
    requestable = _requestable_extras()
    assert set(EXTRA_SECTIONS) == set(requestable)
    # An extra appended in more than one place (av: audio, videos) has a case for each.
    walked = Counter(extra for extra, _ in CASES.values())
    assert all(walked[extra] >= places for extra, places in requestable.items()), walked
    for target in TARGETS:  # and the matrix has no extras the compiler never asks for
        assert set(MATRIX[target]["extras"]) <= set(EXTRA_SECTIONS), target


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def _pins(requirements: str) -> dict[str, str]:
    lines = (line for line in requirements.splitlines() if line and not line.startswith("#"))
    return dict(line.split("==") for line in lines)


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_extra_is_pinned_or_refused(
    case: str, target: str, loader: str, tmp_path: Path
) -> None:
    extra, asks = CASES[case]
    sections = _merged({"pins": {"target": target}, "model": {**MODEL, "loader": loader}}, asks)
    if extra in ("pillow", "av"):
        shutil.copytree(FIXTURES / "mllm", tmp_path / "mllm")
    try:
        files = compile_file(write_variant(tmp_path, sections)).files
    except SpecError as error:
        assert all(p.line is not None and p.key for p in error.problems), str(error)
        # What the target's set pins compiles with the transformers loader: only the other
        # refusals (Unsloth's, or no pins for the extra) stop it.
        in_matrix = extra in MATRIX[target]["extras"]
        assert not (in_matrix and loader == "transformers"), f"{extra} on {target}: {error}"
        return
    pins = _pins(files["requirements.txt"].decode())
    wanted = MATRIX[target]["extras"][extra]
    assert {name: pins.get(name) for name in wanted} == wanted


@pytest.mark.parametrize("tracker", ["wandb", "mlflow", "swanlab"])
@pytest.mark.parametrize("loader", LOADERS)
def test_trackers_compile_on_the_cuda_set_with_the_cpu_set_s_environment(
    tracker: str, loader: str, tmp_path: Path
) -> None:
    """A tracker is configured the same way on every target: config.yaml's `env:` is the cpu
    project's, and the tracker's packages are pinned at the cpu set's versions."""
    tracking = {"project": "demo", "run_name": "r1", "tags": ["a", "b"]}
    sections = {"train": {"report_to": ["tensorboard", tracker]}, "tracking": tracking}
    environments = {}
    for target in ("cpu", "cuda13.0"):
        folder = tmp_path / target
        folder.mkdir()
        model = {**MODEL, "loader": loader if target != "cpu" else "transformers"}
        spec = {**sections, "pins": {"target": target}, "model": model}
        files = compile_file(write_variant(folder, spec)).files
        environments[target] = yaml.safe_load(files["config.yaml"])["env"]
        pins = _pins(files["requirements.txt"].decode())
        for extra in ("tensorboard", tracker):
            wanted = MATRIX["cpu"]["extras"][extra]
            assert {name: pins.get(name) for name in wanted} == wanted, (target, extra)
    assert environments["cpu"] == environments["cuda13.0"]
    assert environments["cpu"] and all(k.startswith(tracker.upper()) for k in environments["cpu"])


def _resolution(name: str) -> dict[str, str]:
    lines = (CUDA / name).read_text().splitlines()
    return dict(line.split("==") for line in lines if "==" in line)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# The cuda13.0 set with every extra it pins, resolved together (tests/fixtures/cuda/README.md):
# swanlab (protobuf<7) and gptqmodel (protobuf>=7.34) cannot share one, so there are two.
TOGETHER = (
    "resolution_extras_swanlab_py3.12.txt",
    "resolution_extras_gptqmodel_py3.12.txt",
    "resolution_extras_aqlm_py3.12.txt",
)
NO_WHEEL = {"flash-attn"}  # built from source after torch (resolution_kernels_py3.12.txt)


def _compile_extras(folder: Path, extras: tuple[str, ...], loader: str) -> dict[str, str] | None:
    """requirements.txt's pins for a cuda13.0 spec asking for `extras`, None if refused."""
    sections: dict[str, Any] = {
        "pins": {"target": "cuda13.0"},
        "model": {**MODEL, "loader": loader},
    }
    for extra in extras:
        added = EXTRA_SECTIONS[extra]
        if "report_to" in added.get("train", {}) and "report_to" in sections.get("train", {}):
            trackers = [*sections["train"]["report_to"], *added["train"]["report_to"]]
            added = {**added, "train": {**added["train"], "report_to": trackers}}
        sections = _merged(sections, added)
    if "pillow" in extras:
        shutil.copytree(FIXTURES / "mllm", folder / "mllm")
    try:
        files = compile_file(write_variant(folder, sections)).files
    except SpecError as error:
        assert all(p.line is not None and p.key for p in error.problems), str(error)
        return None
    return _pins(files["requirements.txt"].decode())


def test_every_pair_of_extras_is_one_recorded_resolution_or_refused(tmp_path: Path) -> None:
    """Any two extras a cuda13.0 spec can combine are pinned at versions pip resolved
    together; the one pair that cannot resolve (swanlab with a GPTQ/AWQ base) is refused."""
    resolutions = [_resolution(name) for name in TOGETHER]
    compiled = 0
    for index, pair in enumerate(itertools.combinations(sorted(EXTRA_SECTIONS), 2)):
        folder = tmp_path / str(index)
        folder.mkdir()
        pins = _compile_extras(folder, pair, "transformers")
        if pins is None:
            continue
        compiled += 1
        wheels = {_normal(n): v for n, v in pins.items() if n not in NO_WHEEL}
        held = [r for r in resolutions if all(r.get(n) == v for n, v in wheels.items())]
        assert held, f"{pair}: {wheels} is in no recorded resolution"
    assert compiled >= 60  # most pairs compile; the walk is not all refusals
    for method in ("gptq", "awq"):
        folder = tmp_path / f"swanlab-{method}"
        folder.mkdir()
        assert _compile_extras(folder, ("swanlab", method), "transformers") is None
    (tmp_path / "swanlab-aqlm").mkdir()  # aqlm needs no gptqmodel: resolved with swanlab
    assert _compile_extras(tmp_path / "swanlab-aqlm", ("swanlab", "aqlm"), "transformers")


@pytest.mark.parametrize(
    "extras",
    [("tensorboard", "wandb", "mlflow", "swanlab", "deepspeed"), ("wandb", "bitsandbytes")],
    ids=["trackers-deepspeed", "wandb-qlora"],
)
def test_unsloth_with_trackers_pins_its_recorded_resolution(
    extras: tuple[str, ...], tmp_path: Path
) -> None:
    """The Unsloth set (transformers 5.17) with the trackers: pip resolved them together with
    the same tracker versions as the cuda13.0 set (resolution_unsloth_trackers_py3.12.txt)."""
    pins = _compile_extras(tmp_path, extras, "unsloth")
    assert pins is not None and pins["unsloth"] == "2026.10.9"
    resolved = _resolution("resolution_unsloth_trackers_py3.12.txt")
    assert {_normal(n): v for n, v in pins.items()} == {
        _normal(n): resolved[_normal(n)] for n in pins
    }
