"""Property tests: any bytes, any YAML, any mapping give a Spec or a SpecError, nothing else."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lfc import lf_import
from lfc.errors import SpecError
from lfc.loader import parse_spec_text
from lfc.schemas.spec import Spec
from lfc.validate import validate_spec

KEYS = [
    "lfc",
    "model",
    "template",
    "adapter",
    "stage",
    "data",
    "train",
    "pins",
    "kind",
    "rank",
    "name_or_path",
    "datasets",
    "path",
    "format",
    "columns",
    "learning_rate",
    "epochs",
    "jinja",
    "cutoff_len",
    "target",
    "mask_history",
    "train_on_prompt",
    "lora",
    "sft",
    "alpaca",
    "distributed",
    "serve",
    "export",
    "docker",
    "port",
    "lora_adapter",
    "max_samples",
    "quantization",
    "tracking",
    "report_to",
    "mode",
    "tags",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(KEYS),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner, max_size=5),
    ),
    max_leaves=25,
)


def _outcome(text: bytes) -> Spec | SpecError:
    try:
        return validate_spec(parse_spec_text(text, "fuzz.yaml"))
    except SpecError as error:
        assert error.problems and all(str(p).startswith("fuzz.yaml") for p in error.problems)
        return error


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_any_bytes(text: bytes) -> None:
    _outcome(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=8))
def test_any_mapping(data: dict) -> None:
    _outcome(yaml.safe_dump(data, allow_unicode=True).encode())


@settings(max_examples=200, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "lfc": st.just(1),
            "model": st.fixed_dictionaries({"name_or_path": st.text(min_size=1, max_size=10)}),
            "template": st.one_of(st.sampled_from(["chatml", "qwen", "llama3"]), values),
            "adapter": values,
            "data": st.fixed_dictionaries({"datasets": st.lists(values, max_size=2)}),
            "train": values,
            "serve": values,
            "export": values,
        }
    )
)
def test_near_valid_specs(data: dict) -> None:
    _outcome(yaml.safe_dump(data, allow_unicode=True).encode())


LF_KEYS = [*lf_import.DIRECT, *lf_import.HANDLERS, *lf_import.NO_EFFECT, *lf_import.CONSUMED]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(LF_KEYS), values, max_size=12))
def test_llamafactory_import_of_any_mapping(data: dict) -> None:
    """Any LLaMA-Factory-shaped mapping imports to a spec lfc validates, or is refused."""
    try:
        imported = lf_import.import_llamafactory(data, "lf.yaml")
    except SpecError as error:
        assert error.problems and all(str(p).startswith("lf.yaml") for p in error.problems)
        return
    _outcome(lf_import.spec_text(imported, "lf.yaml").encode())
