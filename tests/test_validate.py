"""Spec validation: every problem is reported with file, line, column and key."""

from __future__ import annotations

import pytest

from lfc.errors import SpecError
from lfc.loader import parse_spec_text
from lfc.validate import validate_spec

VALID = """\
lfc: 1
model:
  name_or_path: org/model
template: llama3
adapter: {kind: lora, rank: 8}
data:
  datasets:
    - {path: data/a.json, format: alpaca}
train:
  epochs: 1
  learning_rate: 1.0e-4
"""


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        validate_spec(parse_spec_text(text.encode(), "spec.yaml"))
    return [str(p) for p in info.value.problems]


def test_valid_spec_fills_defaults() -> None:
    spec = validate_spec(parse_spec_text(VALID.encode(), "spec.yaml"))
    assert spec.adapter.kind == "lora" and spec.adapter.alpha == 16.0
    assert spec.stage.kind == "sft"
    assert spec.data.datasets[0].resolved_name == "a"
    assert spec.pins.target == "cpu"


def test_kind_shorthand() -> None:
    spec = validate_spec(
        parse_spec_text(VALID.replace("{kind: lora, rank: 8}", "full").encode(), "s")
    )
    assert spec.adapter.kind == "full"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "learning_rate: 1.0e-4",
            "learning_rate: 0",
            "spec.yaml:11:3: train.learning_rate: Input should be greater than 0",
        ),
        (
            "epochs: 1",
            "epoch: 1",
            "spec.yaml:10:3: train.epoch: unknown key 'epoch'; did you mean 'epochs'?",
        ),
        (
            "rank: 8",
            "rnak: 8",
            "spec.yaml:5:23: adapter.rnak: unknown key 'rnak'; did you mean 'rank'?",
        ),
        (
            "template: llama3",
            "template: lama3",
            "spec.yaml:4:1: template: unknown template 'lama3'; did you mean 'llama3'?",
        ),
        (
            "kind: lora",
            "kind: lorra",
            "spec.yaml:5:11: adapter.kind: unknown kind 'lorra'; did you mean 'lora'? expected one of: full, freeze, lora",
        ),
        ("lfc: 1", "lfc: 2", "spec.yaml:1:1: lfc: Input should be 1"),
        (
            "format: alpaca",
            "format: sharegtp",
            "spec.yaml:8:27: data.datasets[0].format: unknown format 'sharegtp'; did you mean 'sharegpt'?",
        ),
        (
            "path: data/a.json",
            "path: ../secret.json",
            "spec.yaml:8:8: data.datasets[0].path: path must stay inside the project folder",
        ),
        (
            "path: data/a.json",
            "path: /etc/passwd.json",
            "spec.yaml:8:8: data.datasets[0].path: path must be relative to the project folder",
        ),
        (
            "path: data/a.json",
            "path: data/a.xlsx",
            "spec.yaml:8:8: data.datasets[0].path: unsupported file type",
        ),
        (
            "epochs: 1",
            "epochs: many",
            "spec.yaml:10:3: train.epochs: Input should be a valid number",
        ),
        (
            "epochs: 1",
            "output_dir: ../../x",
            "spec.yaml:10:3: train.output_dir: output_dir must stay inside the project folder",
        ),
        (
            "  name_or_path: org/model\n",
            "  name_or_path: org/model\n  trust_remote_code: maybe\n",
            "spec.yaml:4:3: model.trust_remote_code: Input should be a valid boolean",
        ),
        ("lfc: 1\n", "", "spec.yaml: lfc: required key is missing"),
        (
            "adapter: {kind: lora, rank: 8}",
            "adapter: {rank: 8}",
            "spec.yaml:5:1: adapter: needs a 'kind' key",
        ),
        ("rank: 8", "rank: 0", "spec.yaml:5:23: adapter.rank: Input should be greater than 0"),
        (
            "epochs: 1",
            "report_to: [neptune]",
            "spec.yaml:10:15: train.report_to[0]: Input should be 'tensorboard', 'wandb', "
            "'mlflow' or 'swanlab'",
        ),
    ],
)
def test_invalid_specs(old: str, new: str, expected: str) -> None:
    assert old in VALID
    found = problems(VALID.replace(old, new, 1))
    assert any(p.startswith(expected) for p in found), found


def test_duplicate_dataset_names() -> None:
    text = VALID.replace(
        "    - {path: data/a.json, format: alpaca}",
        "    - {path: data/a.json, format: alpaca}\n    - {path: other/a.jsonl, format: alpaca}",
    )
    assert any(
        "both named 'a'" in p and p.startswith("spec.yaml:7:3: data") for p in problems(text)
    )


def test_every_problem_is_reported_at_once() -> None:
    text = VALID.replace("rank: 8", "rank: -1").replace("epochs: 1", "epochs: 0")
    assert len(problems(text)) == 2


def test_masking_modes_exclude_each_other() -> None:
    text = VALID + "stage: {kind: sft, train_on_prompt: true, mask_history: true}\n"
    assert any(
        p.startswith("spec.yaml:12:43: stage.mask_history: train_on_prompt labels every token")
        for p in problems(text)
    )
