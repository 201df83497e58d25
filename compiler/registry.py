"""LLaMA-Factory's `dataset_info.json`: expand dataset names in a spec into lfc datasets.

Pure: takes the registry's bytes. A spec saying

    data: {registry: lf/dataset_info.json, datasets: [alpaca_en_demo, identity]}

compiles as if each name were written out as `{path: lf/<file_name>, format: ..., columns: ...}`;
the project's normalized spec.yaml holds the expanded form, so it needs no registry.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

from lfc.errors import Problem, SpecError
from lfc.loader import LoadedSpec
from lfc.schemas.spec import Spec
from lfc.suggest import did_you_mean
from lfc.validate import validate_spec

# LLaMA-Factory column names -> lfc alpaca column names.
_ALPACA_COLUMNS = {
    "prompt": "instruction",
    "query": "input",
    "response": "output",
    "system": "system",
    "history": "history",
    "chosen": "chosen",
    "rejected": "rejected",
    "kto_tag": "kto_tag",
}
_SHAREGPT_COLUMNS = (
    "messages",
    "system",
    "tools",
    "chosen",
    "rejected",
    "kto_tag",
    "images",
    "videos",
    "audios",
)
_SHAREGPT_TAGS = (
    "role_tag",
    "content_tag",
    "user_tag",
    "assistant_tag",
    "system_tag",
    "function_tag",
    "observation_tag",
)
_MEDIA_COLUMNS = ("images", "videos", "audios")
_KNOWN_KEYS = {
    "file_name",
    "hf_hub_url",
    "ms_hub_url",
    "om_hub_url",
    "formatting",
    "ranking",
    "subset",
    "split",
    "folder",
    "num_samples",
    "columns",
    "tags",
}


class RegistryError(ValueError):
    """An entry lfc cannot translate; the message says why."""


def parse_registry(data: bytes) -> dict[str, dict[str, Any]]:
    """The registry's entries; raises RegistryError for bad JSON or shapes."""
    try:
        entries = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryError(f"not a JSON file: {exc}") from None
    if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
        raise RegistryError("expected an object mapping dataset names to objects")
    return entries


def translate_entry(
    name: str, entry: dict[str, Any], registry_dir: str, stage: str
) -> dict[str, Any]:
    """One registry entry as lfc dataset data (validated later with the whole spec)."""
    unknown = sorted(set(entry) - _KNOWN_KEYS)
    if unknown:
        raise RegistryError(f"unknown keys {unknown}")
    columns = dict(entry.get("columns") or {})
    dataset: dict[str, Any] = {"name": name}
    if "file_name" in entry:
        dataset["path"] = posixpath.normpath(posixpath.join(registry_dir, entry["file_name"]))
    elif "hf_hub_url" in entry:
        dataset["hub"] = entry["hf_hub_url"]
        if entry.get("subset"):
            dataset["subset"] = entry["subset"]
        if entry.get("folder"):
            raise RegistryError("`folder` inside a hub dataset is not supported")
    else:
        hubs = [key for key in ("ms_hub_url", "om_hub_url") if key in entry]
        raise RegistryError(
            f"only {hubs} given: lfc reads local files and the Hugging Face Hub (hf_hub_url)"
        )
    if entry.get("split", "train") != "train":
        if "hub" not in dataset:
            raise RegistryError("`split` applies to hub datasets only")
        dataset["split"] = entry["split"]
    if entry.get("num_samples"):
        dataset["num_samples"] = entry["num_samples"]
    if stage == "pt":
        dataset["format"] = "text"
        dataset["columns"] = {"text": columns.get("prompt", "instruction")}
        return dataset
    if entry.get("ranking"):
        dataset["ranking"] = True
    formatting = entry.get("formatting", "alpaca")
    if formatting == "alpaca":
        dataset["format"] = "alpaca"
        bad = sorted(set(columns) - set(_ALPACA_COLUMNS))
        if bad:
            raise RegistryError(f"unknown alpaca columns {bad}")
        dataset["columns"] = {_ALPACA_COLUMNS[key]: value for key, value in columns.items()}
    elif formatting == "sharegpt":
        dataset["format"] = "sharegpt"
        bad = sorted(set(columns) - set(_SHAREGPT_COLUMNS))
        if bad:
            raise RegistryError(f"unknown sharegpt columns {bad}")
        tags = dict(entry.get("tags") or {})
        bad = sorted(set(tags) - set(_SHAREGPT_TAGS))
        if bad:
            raise RegistryError(f"unknown sharegpt tags {bad}")
        dataset["columns"] = {**columns, **tags}
        if any(key in columns for key in _MEDIA_COLUMNS):
            # LLaMA-Factory's media_dir defaults to the dataset folder: the registry's.
            dataset["media_dir"] = registry_dir or "."
    else:
        raise RegistryError(f"unknown formatting {formatting!r} (alpaca or sharegpt)")
    return dataset


def expand_registry(spec: Spec, registry: bytes, loaded: LoadedSpec) -> Spec:
    """`spec` with every dataset name replaced by its registry entry.

    `loaded` is the spec as read, for the positions of its dataset entries in errors.
    """
    source = loaded.source
    data_section = spec.data
    assert data_section.registry is not None
    registry_dir = posixpath.dirname(data_section.registry)
    key = "data.registry"
    try:
        entries = parse_registry(registry)
    except RegistryError as exc:
        message = f"{data_section.registry}: {exc}"
        raise SpecError([Problem(source, None, None, key, message)]) from None
    problems: list[Problem] = []
    datasets: list[Any] = []
    for index, item in enumerate(data_section.datasets):
        if not isinstance(item, str):
            datasets.append(item.model_dump(exclude_defaults=True))
            continue
        line, column = loaded.locate(("data", "datasets", index)) or (None, None)
        at = f"data.datasets[{index}]"
        if item not in entries:
            hint = did_you_mean(item, list(entries))
            message = f"{item!r} is not in {data_section.registry}{hint}"
            problems.append(Problem(source, line, column, at, message))
            continue
        try:
            datasets.append(translate_entry(item, entries[item], registry_dir, spec.stage.kind))
        except RegistryError as exc:
            message = f"{data_section.registry} entry {item!r}: {exc}"
            problems.append(Problem(source, line, column, at, message))
    if problems:
        raise SpecError(problems)
    data = spec.model_dump(mode="json", exclude_defaults=True)
    data.setdefault("data", {})
    data["data"]["datasets"] = datasets
    data["data"].pop("registry", None)
    return validate_spec(LoadedSpec(source, data, loaded.positions))
