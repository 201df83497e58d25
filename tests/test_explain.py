"""`lfc explain KEY` describes every key of the spec from the models themselves."""

from __future__ import annotations

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from lfc.cli import app
from lfc.errors import InputError
from lfc.explain import explain
from lfc.schemas.spec import Spec
from lfc.validate import _models_in


def _every_key(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        keys.append(key)
        for inner in _models_in(info.annotation):
            keys.extend(_every_key(inner, key + "."))
    return sorted(set(keys))


@pytest.mark.parametrize("key", _every_key(Spec))
def test_every_key_is_explained(key: str) -> None:
    explanation = explain(key)
    assert explanation.description and explanation.type and explanation.default


def test_explanations_carry_type_default_and_choices() -> None:
    rate = explain("train.learning_rate")
    assert (rate.type, rate.default, rate.description) == ("float", "0.0001", "Peak learning rate.")
    kind = explain("adapter.kind")
    assert (
        kind.choices == ("full", "freeze", "lora") and "lora: Low-rank adapters" in kind.description
    )
    assert "gemma2" in explain("template").choices
    assert explain("model.trust_remote_code").default == "false"


def test_unknown_key_suggests_and_exits_2() -> None:
    with pytest.raises(
        InputError, match="train has no key 'lerning_rate'; did you mean 'learning_rate'"
    ):
        explain("train.lerning_rate")
    result = CliRunner().invoke(app, ["explain", "adapter.rnak"])
    assert result.exit_code == 2 and "did you mean 'rank'" in result.output
    result = CliRunner().invoke(app, ["explain", "data.cutoff_len"])
    assert result.exit_code == 0 and "default: 1024" in result.output


@pytest.mark.parametrize("key", _every_key(Spec))
def test_every_leaf_key_has_an_example_that_reaches_it(key: str) -> None:
    import yaml

    explanation = explain(key)
    if not explanation.example:
        assert explanation.default == "(a section of defaults)", key
        return
    node = yaml.safe_load(explanation.example)
    for part in key.split("."):
        node = node[0] if isinstance(node, list) else node
        assert part in node, (key, explanation.example)
        node = node[part]


def test_bounds_and_examples_come_from_the_model() -> None:
    rate = explain("train.learning_rate")
    assert rate.bounds == "> 0, < 1"
    assert rate.example == "train:\n  learning_rate: 0.0001"
    assert explain("serve.port").bounds == ">= 1, <= 65535"
    assert "datasets:\n  - columns:" in explain("data.datasets.columns.messages").example
