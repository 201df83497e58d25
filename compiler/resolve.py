"""Resolve a validated `Spec` into a `Plan`: every default filled, every lookup done.

Pure: no file system access. The plan is what the blueprints render from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lfc.chat_templates import ChatTemplate, get_template
from lfc.custom_template import custom_chat_template
from lfc.errors import InputError
from lfc.pins import PinSet, training_pins
from lfc.schemas.spec import CustomTemplate, Spec

PROCESSED_DIR = "data/processed"
EXPORT_DIR = "exported"


@dataclass(frozen=True)
class DatasetPlan:
    """One dataset: where the spec found it and where the project keeps it."""

    name: str
    source_path: str
    project_path: str
    format: str
    columns: dict[str, Any]


@dataclass(frozen=True)
class Plan:
    spec: Spec
    template: ChatTemplate
    pins: PinSet
    datasets: tuple[DatasetPlan, ...]
    config: dict[str, dict[str, Any]]

    @property
    def adapter(self) -> str:
        return self.spec.adapter.kind

    @property
    def has_jsonl(self) -> bool:
        return any(d.project_path.endswith(".jsonl") for d in self.datasets)

    @property
    def formats(self) -> list[str]:
        return sorted({d.format for d in self.datasets})


def _config(spec: Spec) -> dict[str, dict[str, Any]]:
    """config.yaml as ordered groups of flat keys (HfArgumentParser is flat)."""
    model = spec.model
    groups: dict[str, dict[str, Any]] = {
        "model": {
            "model_name_or_path": model.name_or_path,
            "model_revision": model.revision,
            "trust_remote_code": model.trust_remote_code,
            "dtype": model.dtype,
            "attn_implementation": model.attn_implementation,
        }
    }
    adapter = spec.adapter
    if adapter.kind == "lora":
        target = ["all-linear"] if adapter.target == "all-linear" else list(adapter.target)
        groups["adapter (LoRA)"] = {
            "lora_r": adapter.rank,
            "lora_alpha": adapter.alpha,
            "lora_dropout": adapter.dropout,
            "lora_target_modules": target,
        }
    elif adapter.kind == "freeze":
        groups["adapter (freeze)"] = {
            "freeze_trainable_layers": adapter.trainable_layers,
            "freeze_extra_modules": list(adapter.extra_modules),
        }
    data = spec.data
    groups["data"] = {
        "cutoff_len": data.cutoff_len,
        "val_size": data.val_size,
        "processed_dir": PROCESSED_DIR,
    }
    train = spec.train
    training: dict[str, Any] = {
        "output_dir": train.output_dir,
        "learning_rate": train.learning_rate,
        "num_train_epochs": train.epochs,
        "max_steps": train.max_steps if train.max_steps is not None else -1,
        "per_device_train_batch_size": train.batch_size,
        "gradient_accumulation_steps": train.grad_accum,
        "lr_scheduler_type": train.scheduler,
        "warmup_steps": train.warmup_ratio,
        "weight_decay": train.weight_decay,
        "max_grad_norm": train.max_grad_norm,
        "seed": train.seed,
        "logging_steps": train.logging_steps,
        "save_steps": train.save_steps,
        "save_total_limit": train.save_total_limit,
        "report_to": list(train.report_to) or ["none"],
        "activation_checkpointing": train.gradient_checkpointing,
        "max_length": None,
    }
    if data.val_size > 0:
        training["eval_strategy"] = "steps"
        training["eval_steps"] = train.save_steps
        training["per_device_eval_batch_size"] = train.batch_size
    if spec.pins.target == "cpu":
        training["use_cpu"] = True
        training["bf16"] = False
    groups["training (TRL SFTConfig)"] = training
    groups["export and chat"] = {
        "export_dir": EXPORT_DIR,
        "max_new_tokens": 128,
        "temperature": 0.0,
    }
    return groups


def resolve(spec: Spec, template_source: bytes | None = None, source: str = "spec.yaml") -> Plan:
    """Fill in everything the blueprints need from a validated spec.

    `template_source` holds the bytes of a custom template file (`template: {jinja: ...}`).
    """
    if isinstance(spec.template, CustomTemplate):
        if template_source is None:
            raise InputError(f"template file {spec.template.jinja!r} was not read")
        template = custom_chat_template(spec.template, template_source, source)
    else:
        template = get_template(spec.template)
    datasets = tuple(
        DatasetPlan(
            name=d.resolved_name,
            source_path=d.path,
            project_path=f"data/{d.resolved_name}{d.suffix}",
            format=d.format,
            columns=d.columns.model_dump(),
        )
        for d in spec.data.datasets
    )
    return Plan(
        spec=spec,
        template=template,
        pins=training_pins(spec.pins.target, tuple(spec.train.report_to)),
        datasets=datasets,
        config=_config(spec),
    )
