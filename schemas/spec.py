"""The lfc spec, version 1: Pydantic models, frozen, with a description on every field.

The models are the single source of truth for validation, for `spec.schema.json` (editor
completion) and for `lfc explain`. Cross-field rules live in validators whose messages say what
to change.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SPEC_VERSION = 1

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Section(BaseModel):
    """Base of every spec section: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=False)


def _relative_path(value: str, what: str) -> str:
    """A path inside the project: relative, normalized, never escaping with `..`."""
    if not value or value.strip() != value:
        raise ValueError(f"{what} must be a non-empty path without surrounding spaces")
    if value.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", value):
        raise ValueError(f"{what} must be relative to the project folder, got absolute {value!r}")
    parts = value.replace("\\", "/").split("/")
    if ".." in parts:
        raise ValueError(f"{what} must stay inside the project folder; {value!r} contains '..'")
    if any(ord(c) < 32 for c in value):
        raise ValueError(f"{what} contains a control character")
    return "/".join(p for p in parts if p not in ("", "."))


class ModelSpec(Section):
    name_or_path: str = Field(
        min_length=1,
        description="Hub model id (e.g. `Qwen/Qwen2.5-7B-Instruct`) or a local folder holding a "
        "model saved with `save_pretrained`. Loaded when the project runs, never at compile time.",
    )
    revision: str | None = Field(
        default=None,
        description="Hub revision (branch, tag or commit) to pin the model to. "
        "Ignored for local folders.",
    )
    trust_remote_code: bool = Field(
        default=False,
        description="Allow the model repository to run its own Python code. "
        "Off unless you trust it.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto",
        description="Data type the weights are loaded in. "
        "`auto` uses the dtype saved with the model.",
    )
    add_special_tokens: bool = Field(
        default=False,
        description="Add the chat template's special tokens the tokenizer lacks (and grow the "
        "embeddings). Off: a missing token is an error, at compile time when the model is a "
        "local folder.",
    )
    attn_implementation: Literal["sdpa", "eager"] = Field(
        default="sdpa",
        description="Attention kernel: `sdpa` (PyTorch scaled dot-product) or `eager`.",
    )


class FullAdapter(Section):
    kind: Literal["full"] = Field(description="Train every parameter of the model.")


class FreezeAdapter(Section):
    kind: Literal["freeze"] = Field(
        description="Freeze the model except its last decoder layers (and optional extra modules)."
    )
    trainable_layers: int = Field(
        default=2, gt=0, description="How many of the last decoder layers are trained."
    )
    extra_modules: tuple[str, ...] = Field(
        default=(),
        description="Parameter name prefixes trained besides the layers, e.g. `lm_head`.",
    )


class LoraAdapter(Section):
    kind: Literal["lora"] = Field(description="Low-rank adapters (LoRA) on the target modules.")
    rank: int = Field(default=8, gt=0, le=1024, description="LoRA rank r.")
    alpha: float = Field(
        default=16.0, gt=0, description="LoRA scaling alpha (scale = alpha / rank)."
    )
    dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    target: Literal["all-linear"] | tuple[str, ...] = Field(
        default="all-linear",
        description="Modules that get adapters: `all-linear` or a list of module names "
        "such as `[q_proj, v_proj]`.",
    )

    @field_validator("target")
    @classmethod
    def _target_not_empty(cls, value: Any) -> Any:
        if isinstance(value, tuple) and not value:
            raise ValueError("list at least one module, or use `all-linear`")
        return value


Adapter = Annotated[FullAdapter | FreezeAdapter | LoraAdapter, Field(discriminator="kind")]


class SftStage(Section):
    kind: Literal["sft"] = Field(description="Supervised fine-tuning on conversations.")
    train_on_prompt: bool = Field(
        default=False,
        description="Also compute the loss on prompt tokens (system, user, tool turns and the "
        "template's markup). Off: only the assistant turns are labelled.",
    )
    mask_history: bool = Field(
        default=False,
        description="Label only the last assistant turn of each conversation; earlier turns "
        "are context. Rows whose last turn does not fit in cutoff_len are dropped and counted.",
    )

    @model_validator(mode="after")
    def _one_masking_mode(self) -> SftStage:
        if self.train_on_prompt and self.mask_history:
            raise ValueError(
                "train_on_prompt labels every token and mask_history only the last answer; "
                "choose one"
            )
        return self


Stage = Annotated[SftStage, Field(discriminator="kind")]


class AlpacaColumns(Section):
    instruction: str = Field(default="instruction", description="Column of the user instruction.")
    input: str = Field(
        default="input", description="Column appended to the instruction (may be empty)."
    )
    output: str = Field(default="output", description="Column of the assistant answer.")
    system: str | None = Field(default=None, description="Column of a per-row system prompt.")
    history: str | None = Field(
        default=None,
        description="Column of earlier turns as a list of `[instruction, answer]` pairs.",
    )


class SharegptColumns(Section):
    messages: str = Field(default="conversations", description="Column holding the list of turns.")
    system: str | None = Field(default="system", description="Column of a per-row system prompt.")
    role_tag: str = Field(default="from", description="Key of a turn's role.")
    content_tag: str = Field(default="value", description="Key of a turn's text.")
    user_tag: str = Field(default="human", description="Role value of user turns.")
    assistant_tag: str = Field(default="gpt", description="Role value of assistant turns.")
    system_tag: str = Field(default="system", description="Role value of a system turn.")


class OpenaiColumns(Section):
    messages: str = Field(default="messages", description="Column holding the list of messages.")


class _DatasetBase(Section):
    path: str = Field(
        description="A local .json or .jsonl file, relative to the spec file. It is copied into "
        "the project's `data/` folder, so the project is self-contained."
    )
    name: str | None = Field(
        default=None,
        description="Name of the dataset inside the project (`data/<name>.<ext>`); "
        "defaults to the file name without extension.",
    )

    @field_validator("path")
    @classmethod
    def _path_is_local_json(cls, value: str) -> str:
        value = _relative_path(value, "path")
        if not value.endswith((".json", ".jsonl")):
            raise ValueError(f"only .json and .jsonl files are supported, got {value!r}")
        return value

    @field_validator("name")
    @classmethod
    def _name_is_simple(cls, value: str | None) -> str | None:
        if value is not None and not _NAME_RE.match(value):
            raise ValueError(
                "use 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit"
            )
        return value

    @property
    def resolved_name(self) -> str:
        if self.name is not None:
            return self.name
        stem = self.path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        return re.sub(r"[^A-Za-z0-9_.-]", "_", stem)[:64] or "dataset"

    @property
    def suffix(self) -> str:
        return "." + self.path.rsplit(".", 1)[-1]


class AlpacaDataset(_DatasetBase):
    format: Literal["alpaca"] = Field(
        description="Rows of instruction / input / output (+ optional system and history)."
    )
    columns: AlpacaColumns = Field(default_factory=AlpacaColumns, description="Column names.")


class SharegptDataset(_DatasetBase):
    format: Literal["sharegpt"] = Field(
        description="Rows holding a list of turns with role and text keys (`from`/`value`)."
    )
    columns: SharegptColumns = Field(default_factory=SharegptColumns, description="Column names.")


class OpenaiDataset(_DatasetBase):
    format: Literal["openai"] = Field(
        description="Rows holding OpenAI-style `messages` with `role` and `content`."
    )
    columns: OpenaiColumns = Field(default_factory=OpenaiColumns, description="Column names.")


Dataset = Annotated[AlpacaDataset | SharegptDataset | OpenaiDataset, Field(discriminator="format")]


class DataSpec(Section):
    datasets: tuple[Dataset, ...] = Field(
        min_length=1, description="Datasets to train on, concatenated in this order."
    )
    cutoff_len: int = Field(
        default=1024,
        gt=0,
        le=1_048_576,
        description="Maximum tokens per example. Longer conversations are cut after whole turns "
        "where possible (see the project README).",
    )
    val_size: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="Fraction of rows held out for evaluation (0 disables evaluation).",
    )

    @field_validator("datasets")
    @classmethod
    def _unique_names(cls, datasets: tuple[Any, ...]) -> tuple[Any, ...]:
        seen: dict[str, int] = {}
        for index, dataset in enumerate(datasets):
            name = dataset.resolved_name
            if name in seen:
                raise ValueError(
                    f"datasets {seen[name]} and {index} are both named {name!r} in the project; "
                    "give one of them a distinct `name:`"
                )
            seen[name] = index
        return datasets


ReportTo = Literal["tensorboard"]


class TrainSpec(Section):
    learning_rate: float = Field(default=1e-4, gt=0, lt=1, description="Peak learning rate.")
    epochs: float = Field(default=3.0, gt=0, description="Passes over the training data.")
    max_steps: int | None = Field(
        default=None, gt=0, description="Stop after this many optimizer steps (overrides epochs)."
    )
    batch_size: int = Field(default=1, gt=0, description="Examples per device per step.")
    grad_accum: int = Field(default=1, gt=0, description="Gradient accumulation steps.")
    scheduler: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"
    ] = Field(default="cosine", description="Learning-rate schedule.")
    warmup_ratio: float = Field(
        default=0.0, ge=0, lt=1, description="Fraction of steps spent warming up."
    )
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradient clipping norm.")
    seed: int = Field(default=42, ge=0, description="Seed for data shuffling and initialisation.")
    logging_steps: int = Field(default=10, gt=0, description="Log every N steps.")
    save_steps: int = Field(default=500, gt=0, description="Save a checkpoint every N steps.")
    save_total_limit: int | None = Field(
        default=2, gt=0, description="Keep at most this many checkpoints (None keeps all)."
    )
    output_dir: str = Field(
        default="outputs", description="Where checkpoints and the final adapter/model are saved."
    )
    report_to: tuple[ReportTo, ...] = Field(
        default=(),
        description="Experiment trackers. Supported now: `tensorboard` "
        "(logs under output_dir/runs).",
    )
    gradient_checkpointing: bool = Field(
        default=False,
        description="Recompute activations in the backward pass: less memory, ~20% slower.",
    )

    @field_validator("output_dir")
    @classmethod
    def _output_inside(cls, value: str) -> str:
        return _relative_path(value, "output_dir")


class PinsSpec(Section):
    target: Literal["cpu"] = Field(
        default="cpu",
        description="Hardware target whose tested version set is pinned in requirements.txt.",
    )


class CustomTemplate(Section):
    jinja: str = Field(
        description="A Hugging Face-style Jinja chat template file, relative to the spec. "
        "Assistant turns must be wrapped in {% generation %}...{% endgeneration %}. It is "
        "copied into the project as chat_template.jinja and rendered in a sandbox."
    )
    end_of_turn: str | None = Field(
        default=None,
        description="Token that ends an assistant turn (generation stops on it); "
        "None: the tokenizer's eos.",
    )
    stop_tokens: tuple[str, ...] = Field(default=(), description="More tokens that end generation.")
    special_tokens: tuple[str, ...] = Field(
        default=(), description="Tokens the template writes that the tokenizer must have."
    )

    @field_validator("jinja")
    @classmethod
    def _jinja_file(cls, value: str) -> str:
        value = _relative_path(value, "jinja")
        if not value.endswith(".jinja"):
            raise ValueError(f"a chat template file ends in .jinja, got {value!r}")
        return value


class Spec(Section):
    lfc: Literal[1] = Field(description="Spec format version. Always 1 for this compiler.")
    model: ModelSpec = Field(description="The base model.")
    template: str | CustomTemplate = Field(
        description="Chat template: a registry name (`lfc templates` lists them), or "
        "`{jinja: file.jinja, end_of_turn: ...}` for a template of your own."
    )
    adapter: Adapter = Field(
        default_factory=lambda: LoraAdapter(kind="lora"), description="Fine-tuning method."
    )
    stage: Stage = Field(
        default_factory=lambda: SftStage(kind="sft"), description="Training stage."
    )
    data: DataSpec = Field(description="Training data and how it is processed.")
    train: TrainSpec = Field(default_factory=TrainSpec, description="Training hyperparameters.")
    pins: PinsSpec = Field(default_factory=PinsSpec, description="Pinned dependency set.")

    @field_validator("adapter", "stage", mode="before")
    @classmethod
    def _kind_shorthand(cls, value: Any) -> Any:
        """`adapter: full` is short for `adapter: {kind: full}`."""
        return {"kind": value} if isinstance(value, str) else value

    @field_validator("template")
    @classmethod
    def _known_template(cls, value: str | CustomTemplate) -> str | CustomTemplate:
        from lfc.chat_templates import template_names
        from lfc.suggest import did_you_mean

        if isinstance(value, CustomTemplate):
            return value
        names = template_names()
        if value not in names:
            raise ValueError(
                f"unknown template {value!r}{did_you_mean(value, names)}; "
                f"known: {', '.join(sorted(names))}"
            )
        return value
