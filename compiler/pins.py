"""The version matrix: which exact packages a generated project pins, and why."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class PinSet:
    """Exact versions for one target, plus the reason the set was chosen."""

    target: str
    packages: dict[str, str]
    reason: str
    torch_index: str | None  # None: torch's default build from PyPI is the one this set wants
    python: str
    train_image: str = ""  # the training Dockerfile's base image (name:tag; digest separate)
    uv: str = ""  # the uv release the Dockerfile installs requirements with
    image_note: str = ""

    def requirement_lines(self) -> list[str]:
        return [f"{name}=={version}" for name, version in sorted(self.packages.items())]


@cache
def _matrix() -> dict[str, dict]:
    text = (resources.files("lfc.blueprints") / "pins" / "matrix.json").read_text("utf-8")
    return json.loads(text)


def training_pins(
    target: str,
    extras: tuple[str, ...],
    stage: str = "sft",
    plugin: str | None = None,
    loader: str = "transformers",
) -> PinSet:
    """The training pin set of `target` for `stage`, image `plugin` and model `loader`, plus
    the extras."""
    entry = _matrix()[target]
    packages = dict(entry["training"])
    reason = entry["description"]
    # Overrides of the set for one stage, image plugin or loader, each with the reason it needs.
    overrides = (
        ("stages", stage, "Stage"),
        ("plugins", plugin, "Plugin"),
        ("loaders", loader, "Loader"),
    )
    for group, key, label in overrides:
        override = entry.get(group, {}).get(key)
        if override:
            packages.update(override["packages"])
            reason += f" {label} {key}: {override['reason']}"
    for extra in extras:
        if extra not in entry["extras"]:  # the spec's rules refuse what a set does not pin
            raise AssertionError(f"pin set {target} has no pins for {extra}")
        packages.update(entry["extras"][extra])
    if extras:
        reason += f" Added for this spec: {', '.join(extras)}."
    docker = entry["docker"]
    return PinSet(
        target,
        packages,
        reason,
        entry["torch_index"],
        entry["python"],
        docker["train_image"],
        docker["uv"],
        docker["note"],
    )


@dataclass(frozen=True)
class ServingPins:
    """The vLLM serving stack: exact versions, its image and the LoRA ranks it accepts."""

    packages: dict[str, str]
    python: str
    image: str
    reason: str
    max_lora_ranks: tuple[int, ...]

    def requirement_lines(self) -> list[str]:
        return [f"{name}=={version}" for name, version in sorted(self.packages.items())]

    def max_lora_rank(self, rank: int) -> int:
        """The smallest --max-lora-rank vLLM accepts that holds an adapter of `rank`."""
        return min(r for r in self.max_lora_ranks if r >= rank)


def serving_pins(extras: tuple[str, ...] = ()) -> ServingPins:
    """The vLLM set, plus the packages of each named vLLM extra (e.g. `audio`)."""
    entry = _matrix()["serving"]["vllm"]
    packages, reason = dict(entry["packages"]), entry["reason"]
    for extra in extras:
        packages.update(entry["extras"][extra]["packages"])
        reason += f" Extra {extra}: {entry['extras'][extra]['reason']}"
    return ServingPins(
        packages,
        entry["python"],
        entry["image"],
        reason,
        tuple(entry["max_lora_ranks"]),
    )
