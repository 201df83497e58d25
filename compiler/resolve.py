"""Resolve a validated `Spec` into a `Plan`: every default filled, every lookup done.

Pure: no file system access. The plan is what the blueprints render from.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lfc.chat_templates import ChatTemplate, get_template
from lfc.custom_template import custom_chat_template
from lfc.errors import InputError
from lfc.pins import PinSet, ServingPins, serving_pins, training_pins
from lfc.python_literals import py_pretty
from lfc.schemas.spec import (
    AUDIO_PLUGINS,
    CONVERTED_INITS,
    NAMED_TRACKERS,
    NOT_SERVED_BY_VLLM,
    STAGE_SHAPES,
    VIDEO_KEYS,
    ApolloOptimizer,
    BadamOptimizer,
    CustomTemplate,
    DeepspeedDistributed,
    GaloreOptimizer,
    Spec,
    TrackingSpec,
)
from lfc.tracking import tracker_env

PROCESSED_DIR = "data/processed"
EXPORT_DIR = "exported"
EXPANDED_DIR = "expanded"  # LLaMA Pro: expand.py's copy of the base model with the new blocks


# The reader function data.py uses for each local file type.
READERS = {
    ".json": "json",
    ".jsonl": "jsonl",
    ".txt": "txt",
    ".csv": "table",
    ".parquet": "table",
    ".arrow": "table",
}
TABULAR_BUILDERS = {".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}
# Media columns of a dataset; left out of data.py's DATASETS when unset.
MEDIA_COLUMNS = ("images", "videos", "audios")
# Image and video files a dataset's media_dir may hold (copied into the project).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
# Audio files a dataset's media_dir may hold (for an audios column; av decodes them all).
AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".ogg", ".m4a")


def media_suffixes(columns: object) -> tuple[str, ...]:
    """The file types a dataset's media_dir gives the project: its images, videos, audio."""
    suffixes: tuple[str, ...] = ()
    for column, kind in (
        ("images", IMAGE_SUFFIXES),
        ("videos", VIDEO_SUFFIXES),
        ("audios", AUDIO_SUFFIXES),
    ):
        if getattr(columns, column, None) is not None:
            suffixes += kind
    return suffixes


# What data.py makes for each stage (its docstring).
_PRODUCTS = {
    "pt": "blocks of token ids",
    "sft": "token ids and labels",
    "rm": "tokenized chosen and rejected conversations",
    "dpo": "tokenized prompts and chosen / rejected answers",
    "orpo": "rendered prompts and chosen / rejected answers",
    "simpo": "rendered prompts and chosen / rejected answers",
    "kto": "tokenized prompts, answers and their labels",
    "grpo": "rendered prompts (and reference answers)",
    "ppo": "tokenized prompts",
}
# The trainer and its config class, and where TRL keeps them, for each stage.
TRAINERS = {
    "pt": ("trl", "SFTTrainer", "SFTConfig"),
    "sft": ("trl", "SFTTrainer", "SFTConfig"),
    "rm": ("trl", "RewardTrainer", "RewardConfig"),
    "dpo": ("trl", "DPOTrainer", "DPOConfig"),
    "kto": ("trl", "KTOTrainer", "KTOConfig"),
    "orpo": ("trl.experimental.orpo", "ORPOTrainer", "ORPOConfig"),
    "simpo": ("trl.experimental.cpo", "CPOTrainer", "CPOConfig"),
    "grpo": ("trl", "GRPOTrainer", "GRPOConfig"),
    "ppo": ("trl.experimental.ppo", "PPOTrainer", "PPOConfig"),
}


@dataclass(frozen=True)
class DatasetPlan:
    """One dataset: where the spec found it, where the project keeps it, how data.py reads it."""

    name: str
    format: str
    shape: str
    columns: dict[str, Any]
    source_files: tuple[str, ...]  # spec-relative paths of the input files
    files: tuple[str, ...]  # their paths inside the project
    hub: dict[str, Any] | None
    options: dict[str, Any]  # max_samples, num_samples, placeholders (only those set)
    media_sources: tuple[str, ...] = ()  # spec-relative paths of the media_dir's images
    media_files: tuple[str, ...] = ()  # their paths inside the project

    @property
    def media_dir(self) -> str | None:
        """The project folder the image paths of the rows are relative to."""
        return f"data/{self.name}-media" if self.media_sources else None

    @property
    def label(self) -> str:
        if self.hub is not None:
            return f"{self.hub['hub']} (hub)"
        if len(self.files) == 1:
            return self.files[0]
        return f"{self.files[0].rsplit('/', 1)[0]}/ ({len(self.files)} files)"

    @property
    def readers(self) -> set[str]:
        if self.hub is not None:
            return {"hub"}
        return {READERS["." + f.rsplit(".", 1)[-1]] for f in self.files}

    def literal(self) -> dict[str, Any]:
        """The entry of data.py's DATASETS list."""
        entry: dict[str, Any] = {"name": self.name, "format": self.format}
        if self.hub is not None:
            entry.update(self.hub)
        else:
            entry["files"] = list(self.files)
        entry["columns"] = self.columns
        if self.media_dir is not None:
            entry["media_dir"] = self.media_dir
        entry.update(self.options)
        return entry


@dataclass(frozen=True)
class Plan:
    spec: Spec
    template: ChatTemplate
    pins: PinSet
    datasets: tuple[DatasetPlan, ...]
    config: dict[str, dict[str, Any]]
    serving: ServingPins

    @property
    def image_name(self) -> str:
        """Docker image name stem: the served model name, as Docker spells names."""
        name = re.sub(r"[^a-z0-9._-]+", "-", self.spec.serve.served_model_name.lower())
        return name.strip("-._") or "lfc-model"

    @property
    def stop_token_strings(self) -> list[str]:
        """Tokens that end generation, as far as the template names them (for Ollama)."""
        template = self.template
        tokens = [template.end_of_turn, *template.stop_tokens, template.eos_token]
        return list(dict.fromkeys(t for t in tokens if t))

    @property
    def trackers(self) -> list[str]:
        """The spec's wandb, mlflow and swanlab trackers (tensorboard needs no settings)."""
        return [t for t in self.spec.train.report_to if t in NAMED_TRACKERS]

    @property
    def tracking(self) -> TrackingSpec | None:
        """The tracking settings, defaults filled in when a tracker reads them; else None."""
        if not self.trackers:
            return None
        return self.spec.tracking or TrackingSpec()

    @property
    def tracking_env(self) -> dict[str, dict[str, str]]:
        """Per tracker, the environment variables config.yaml's `env:` sets for it."""
        tracking = self.tracking
        if tracking is None:
            return {}
        return {t: tracker_env(t, tracking, self.spec.train.output_dir) for t in self.trackers}

    @property
    def adapter(self) -> str:
        return self.spec.adapter.kind

    @property
    def deepspeed_config(self) -> dict[str, Any]:
        """ds_config.json of a `distributed: deepspeed` spec."""
        distributed = self.spec.distributed
        if not isinstance(distributed, DeepspeedDistributed):
            raise AssertionError("only a deepspeed spec has a DeepSpeed config")
        return deepspeed_config(distributed)

    @property
    def multimodal(self) -> bool:
        """An image- or audio-text model: data.py, train.py and export.py use its processor."""
        return self.spec.model.multimodal is not None

    @property
    def audio(self) -> bool:
        """An audio-text model (plugin qwen2_audio): its rows carry audio files, not images."""
        multimodal = self.spec.model.multimodal
        return multimodal is not None and multimodal.plugin in AUDIO_PLUGINS

    @property
    def writes_modelfile(self) -> bool:
        """An Ollama Modelfile: for chat models, unless turned off; never for an image model,
        nor for a pre-quantized base (its export is an adapter, with no merged model to import)."""
        return (
            self.generative
            and self.spec.export.ollama
            and not self.multimodal
            and self.spec.model.prequantized is None
        )

    @property
    def serves_with_vllm(self) -> bool:
        """serve_vllm.sh and its image: for chat models, unless vLLM cannot load the base."""
        return self.generative and self.spec.model.prequantized not in NOT_SERVED_BY_VLLM

    @property
    def has_images(self) -> bool:
        """A dataset has an images, videos or audios column (rows carry media files)."""
        return any(d.media_dir is not None for d in self.datasets)

    @property
    def qwen_vl(self) -> bool:
        """A Qwen2-VL or Qwen2.5-VL model (patch-merger ViT, 3D rotary positions)."""
        multimodal = self.spec.model.multimodal
        return multimodal is not None and multimodal.plugin in ("qwen2_vl", "qwen2_5_vl")

    @property
    def has_videos(self) -> bool:
        """A dataset has a videos column: data.py, chat.py and serve.py decode videos."""
        return any(
            getattr(getattr(d, "columns", None), "videos", None) is not None
            for d in self.spec.data.resolved
        )

    @property
    def stage(self) -> str:
        return self.spec.stage.kind

    @property
    def unsloth(self) -> bool:
        """Unsloth's FastLanguageModel loads the model for training and adds its LoRA."""
        return self.spec.model.loader == "unsloth"

    @property
    def peft_config(self) -> bool:
        """The trainer adds the LoRA adapters from model.py's lora_config (not Unsloth)."""
        return self.adapter == "lora" and not self.unsloth

    @property
    def loraplus(self) -> bool:
        """LoRA+: train.py's trainer builds model.py's LoRA+ optimizer."""
        return getattr(self.spec.adapter, "loraplus_lr_ratio", None) is not None

    @property
    def llama_pro(self) -> Any:
        """LLaMA Pro's settings (new_layers, expand), or None."""
        return getattr(self.spec.adapter, "llama_pro", None)

    @property
    def expands(self) -> bool:
        """LLaMA Pro with expand.py: training loads the expanded copy in expanded/."""
        return self.llama_pro is not None and self.llama_pro.expand

    @property
    def badam(self) -> bool:
        """BAdam: train.py's trainer wraps its optimizer in model.py's block optimizer."""
        return self.spec.train.optimizer.kind == "badam"

    @property
    def converts_adapter(self) -> bool:
        """PiSSA / OLoRA / LoftQ: the trained adapter is rewritten as plain LoRA on the original
        base (their adapters do not start at zero)."""
        return getattr(self.spec.adapter, "init", "default") in CONVERTED_INITS

    @property
    def reference_adapter(self) -> bool:
        """PiSSA / OLoRA / LoftQ in a stage whose reference model is the policy with its adapter
        disabled (dpo, kto, grpo with beta > 0): that is not the starting model, so train.py
        keeps a frozen copy of the starting adapter as the reference."""
        stage = self.spec.stage
        uses_reference = stage.kind in ("dpo", "kto") or (stage.kind == "grpo" and stage.beta > 0)
        return self.converts_adapter and uses_reference

    @property
    def loftq(self) -> bool:
        """LoftQ: train.py fits the LoRA pairs to the 4-bit error of the QLoRA base."""
        return getattr(self.spec.adapter, "init", "default") == "loftq"

    @property
    def stage_shape(self) -> str:
        """The rows data.py makes: text, conversation, pairwise, kto or prompt."""
        if self.stage in ("grpo", "ppo"):
            return "prompt"
        return STAGE_SHAPES[self.stage]

    @property
    def generative(self) -> bool:
        """The trained model answers chats (every stage but rm, which trains a scorer)."""
        return self.stage != "rm"

    @property
    def data_product(self) -> str:
        return _PRODUCTS[self.stage]

    @property
    def trainer(self) -> tuple[str, str, str]:
        return TRAINERS[self.stage]

    @property
    def trainer_config(self) -> str:
        return TRAINERS[self.stage][2]

    @property
    def formats(self) -> list[str]:
        return sorted({d.format for d in self.datasets})

    @property
    def readers(self) -> set[str]:
        return set().union(*(d.readers for d in self.datasets))

    @property
    def readers_local(self) -> list[str]:
        return sorted(self.readers - {"hub"})

    @property
    def file_suffixes(self) -> list[str]:
        """The suffixes of every local data file, sorted."""
        return sorted({"." + f.rsplit(".", 1)[-1] for d in self.datasets for f in d.files})

    @property
    def tabular_suffixes(self) -> list[str]:
        return [s for s in self.file_suffixes if s in TABULAR_BUILDERS]

    @property
    def tabular_builders(self) -> dict[str, str]:
        return {s: TABULAR_BUILDERS[s] for s in self.tabular_suffixes}

    @property
    def tabular_readers(self) -> list[str]:
        return [TABULAR_BUILDERS[s] for s in self.tabular_suffixes]

    @property
    def readers_table(self) -> str:
        """data.py's READERS: file suffix -> reader function, for the suffixes in use."""
        lines = "".join(f'    "{s}": read_{READERS[s]},\n' for s in self.file_suffixes)
        return "{\n" + lines + "}"

    @property
    def datasets_literal(self) -> str:
        return py_pretty([d.literal() for d in self.datasets], len("DATASETS = "))

    @property
    def probabilities(self) -> list[float]:
        given = self.spec.data.probabilities
        if given is not None:
            return list(given)
        return [round(1 / len(self.datasets), 6)] * len(self.datasets)

    @property
    def has_placeholders(self) -> bool:
        return any("placeholders" in d.options for d in self.datasets)

    @property
    def has_tools(self) -> bool:
        """The template renders tools, and a dataset format can carry them."""
        return self.template.supports_tools and bool({"sharegpt", "openai"} & set(self.formats))

    @property
    def alpaca_answer_doc(self) -> str:
        return {
            "pairwise": "chosen and rejected answers",
            "prompt": "the output as reference answer (optional)",
            "kto": "output and its label",
        }.get(self.stage_shape, "output")

    @property
    def reward_builtins(self) -> list[dict[str, Any]]:
        """The built-in rewards of a grpo spec, each with its function name in rewards.py."""
        rewards = getattr(self.spec.stage, "rewards", ())
        return [
            {**reward.model_dump(), "function": f"{reward.builtin}_reward_{index}"}
            for index, reward in enumerate(rewards)
            if hasattr(reward, "builtin")
        ]

    @property
    def user_rewards(self) -> list[dict[str, str]]:
        """The spec's own reward functions: the file, its copy in the project, the import."""
        out = []
        for reward in getattr(self.spec.stage, "rewards", ()):
            if hasattr(reward, "function"):
                stem = reward.file.rsplit("/", 1)[-1].removesuffix(".py")
                out.append(
                    {
                        "source": reward.file,
                        "target": f"reward_functions/{stem}.py",
                        "module": f"reward_functions.{stem}",
                        "name": reward.name,
                    }
                )
        return out

    @property
    def reward_functions_literal(self) -> str:
        rewards = getattr(self.spec.stage, "rewards", ())
        names = []
        for index, reward in enumerate(rewards):
            builtin = getattr(reward, "builtin", None)
            names.append(f"{builtin}_reward_{index}" if builtin else reward.name)
        flat = "[" + ", ".join(names) + "]"
        if len("REWARD_FUNCTIONS = ") + len(flat) <= 88:
            return flat
        return "[\n" + "".join(f"    {name},\n" for name in names) + "]"

    @property
    def output_columns(self) -> list[tuple[str, str]]:
        """data.py's output columns and their Arrow type names (ids, bool or text)."""
        stage = self.stage
        if stage in ("pt", "ppo"):
            return [("input_ids", "ids")]
        if stage == "sft" and self.multimodal:
            # image_files (video_files, audio_files): the row's media for train.py's collator
            # (not "images": TRL would take the rows for raw vision data and process them again).
            if self.audio:
                return [("input_ids", "ids"), ("labels", "ids"), ("audio_files", "paths")]
            media = [("image_files", "paths")]
            media += [("video_files", "paths")] if self.has_videos else []
            return [("input_ids", "ids"), ("labels", "ids"), *media]
        if stage == "sft":
            return [("input_ids", "ids"), ("labels", "ids")]
        if stage == "rm":
            return [("chosen_ids", "ids"), ("rejected_ids", "ids")]
        if stage == "dpo":
            return [("prompt_ids", "ids"), ("chosen_ids", "ids"), ("rejected_ids", "ids")]
        if stage == "kto":
            return [("prompt_ids", "ids"), ("completion_ids", "ids"), ("label", "bool")]
        if stage in ("orpo", "simpo"):
            return [("prompt", "text"), ("chosen", "text"), ("rejected", "text")]
        return [("prompt", "text"), ("reference", "text")]

    @property
    def arrow_schema(self) -> str:
        """The `pa.schema([...])` expression of data.py's output (explicit: no type inference)."""
        types = {
            "ids": "ids",
            "bool": "pa.bool_()",
            "text": "pa.string()",
            "paths": "pa.list_(pa.string())",
        }
        fields = [f'("{name}", {types[kind]})' for name, kind in self.output_columns]
        flat = "pa.schema([" + ", ".join(fields) + "])"
        if len("    schema = ") + len(flat) <= 88:
            return flat
        items = "".join(f"            {f},\n" for f in fields)
        return "pa.schema(\n        [\n" + items + "        ]\n    )"

    @property
    def nothing_left_message(self) -> str:
        if self.stage_shape == "conversation":
            return "no rows left: each was malformed or had no assistant tokens"
        if self.stage_shape == "text":
            return "no blocks: all documents together are shorter than cutoff_len"
        return "no rows left: each was malformed or too long"


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
        lora = groups["adapter (LoRA)"]
        for flag in ("dora", "rslora"):  # only what the spec turned on
            if getattr(adapter, flag):
                lora[f"lora_use_{flag}"] = True
        if adapter.init not in ("default", "loftq"):  # loftq is a step in train.py
            lora["lora_init"] = adapter.init
        if adapter.pissa_niter is not None:
            lora["lora_pissa_niter"] = adapter.pissa_niter
        if adapter.loraplus_lr_ratio is not None:
            lora["loraplus_lr_ratio"] = adapter.loraplus_lr_ratio
        if adapter.bias != "none":
            lora["lora_bias"] = adapter.bias
        if adapter.modules_to_save:
            lora["lora_modules_to_save"] = list(adapter.modules_to_save)
    elif adapter.kind == "freeze" and adapter.llama_pro is not None:
        groups["adapter (freeze, LLaMA Pro)"] = {
            "freeze_new_layers": adapter.llama_pro.new_layers,
            "freeze_extra_modules": list(adapter.extra_modules),
        }
        if adapter.llama_pro.expand:
            groups["model"] = {
                "model_name_or_path": EXPANDED_DIR,
                "expand_base_model": model.name_or_path,
                **{k: v for k, v in groups["model"].items() if k != "model_name_or_path"},
            }
    elif adapter.kind == "freeze":
        groups["adapter (freeze)"] = {
            "freeze_trainable_layers": adapter.trainable_layers,
            "freeze_extra_modules": list(adapter.extra_modules),
        }
    if adapter.kind == "freeze" and adapter.trainable_modules:
        freeze_group = next(key for key in groups if key.startswith("adapter (freeze"))
        groups[freeze_group]["freeze_trainable_modules"] = list(adapter.trainable_modules)
    if model.quantization is not None:
        quant = model.quantization
        groups["quantization (bitsandbytes)"] = {"quantization_bits": quant.bits}
        if quant.bits == 4:
            groups["quantization (bitsandbytes)"].update(
                {
                    "bnb_4bit_quant_type": quant.type,
                    "bnb_4bit_use_double_quant": quant.double_quant,
                    "bnb_4bit_compute_dtype": quant.compute_dtype,
                }
            )
    if model.multimodal is not None and model.multimodal.plugin in AUDIO_PLUGINS:
        groups["model"].update(
            {
                "audio_sampling_rate": model.multimodal.audio_sampling_rate,
                "audio_max_seconds": model.multimodal.audio_max_seconds,
                "freeze_audio_tower": model.multimodal.freeze_audio_tower,
                "freeze_projector": model.multimodal.freeze_projector,
            }
        )
    elif model.multimodal is not None:
        groups["model"].update(
            {
                "image_max_pixels": model.multimodal.image_max_pixels,
                "image_min_pixels": model.multimodal.image_min_pixels,
                "freeze_vision_tower": model.multimodal.freeze_vision_tower,
                "freeze_projector": model.multimodal.freeze_projector,
            }
        )
        if any(getattr(getattr(d, "columns", None), "videos", None) for d in spec.data.resolved):
            groups["model"].update({key: getattr(model.multimodal, key) for key in VIDEO_KEYS})
    if model.rope_scaling is not None:
        groups["model"]["rope_scaling_type"] = model.rope_scaling.type
        groups["model"]["rope_scaling_factor"] = model.rope_scaling.factor
    data = spec.data
    groups["data"] = {
        "cutoff_len": data.cutoff_len,
        "val_size": data.val_size,
        "shuffle": data.shuffle,
        "num_proc": data.num_proc,
        "on_bad_row": data.on_bad_row,
        "processed_dir": PROCESSED_DIR,
    }
    train = spec.train
    run_name = spec.tracking.run_name if spec.tracking else None
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
        **({"run_name": run_name} if run_name else {}),
        # transformers 5.24's name; 5.17 (the Unsloth set) has only gradient_checkpointing.
        checkpointing_key(spec): train.gradient_checkpointing,
    }
    if train.neftune_alpha is not None:
        training["neftune_noise_alpha"] = train.neftune_alpha
    training.update(_low_rank_optimizer(train.optimizer))
    if train.liger_kernel:
        training["use_liger_kernel"] = True
    training.update(_stage_training(spec))
    if data.val_size > 0:
        training["eval_strategy"] = "steps"
        training["eval_steps"] = train.save_steps
        training["per_device_eval_batch_size"] = train.batch_size
    if spec.pins.target == "cpu":
        training["use_cpu"] = True
        training["bf16"] = False
    groups[f"training (TRL {TRAINERS[spec.stage.kind][2]})"] = training
    if isinstance(train.optimizer, BadamOptimizer):
        badam = train.optimizer
        groups["optimizer (BAdam)"] = {
            "badam_switch_mode": badam.switch_mode,
            "badam_switch_interval": badam.switch_interval,
            "badam_start_block": badam.start_block,
            "badam_include_embedding": badam.include_embedding,
            "badam_include_lm_head": badam.include_lm_head,
        }
    groups["run"] = {"auto_resume": train.auto_resume}
    if spec.stage.kind == "rm":
        return groups
    export: dict[str, Any] = {"export_dir": EXPORT_DIR}
    if spec.model.prequantized is None:  # a pre-quantized base exports its adapter as trained
        export["export_dtype"] = spec.export.dtype
        export["export_max_shard_size"] = spec.export.max_shard_size
    if adapter.kind == "lora" and spec.model.prequantized is None:
        export["export_extra_adapters"] = list(spec.export.extra_adapters)
    groups["export and chat"] = {**export, "chat_max_new_tokens": 128, "chat_temperature": 0.0}
    serve = spec.serve
    groups["serve (serve.py)"] = {
        "serve_host": serve.host,
        "serve_port": serve.port,
        "served_model_name": serve.served_model_name,
        "serve_max_model_len": serve.max_model_len,
    }
    return groups


def _low_rank_optimizer(optimizer: Any) -> dict[str, Any]:
    """GaLore / APOLLO as transformers' `optim` name, its target modules and its optim_args."""
    if not isinstance(optimizer, GaloreOptimizer | ApolloOptimizer):
        return {}
    name = {"galore": "galore_adamw", "apollo": "apollo_adamw"}[optimizer.kind]
    settings: dict[str, Any] = {"rank": optimizer.rank}
    if isinstance(optimizer, ApolloOptimizer):
        settings.update(proj=optimizer.proj, scale_type=optimizer.scale_type)
    settings.update(
        update_proj_gap=optimizer.update_proj_gap,
        scale=optimizer.scale,
        proj_type=optimizer.proj_type,
    )
    target = optimizer.target
    return {
        "optim": f"{name}_layerwise" if optimizer.layerwise else name,
        "optim_target_modules": target if target == "all-linear" else list(target),
        "optim_args": ",".join(f"{key}={value}" for key, value in settings.items()),
    }


def _stage_training(spec: Spec) -> dict[str, Any]:
    """The trainer config keys of the spec's stage."""
    stage, cutoff = spec.stage, spec.data.cutoff_len
    if stage.kind == "sft" and spec.data.packing:
        # Best-fit decreasing packing; position ids restart per example (no cross attention).
        return {"max_length": cutoff, "packing": True, "packing_strategy": "bfd"}
    if stage.kind == "sft" and spec.model.multimodal is not None:
        # The rows keep their image files for train.py's collator: no column is dropped.
        return {"max_length": None, "remove_unused_columns": False}
    if stage.kind in ("sft", "pt"):
        return {"max_length": None}  # data.py already cut every example to cutoff_len
    if stage.kind == "rm":
        center = stage.center_rewards_coefficient
        return {"max_length": cutoff, "center_rewards_coefficient": center}
    if stage.kind == "dpo":
        return {
            "beta": stage.beta,
            "loss_type": [stage.loss_type],
            "max_length": cutoff,
            "precompute_ref_log_probs": stage.precompute_ref_log_probs,
        }
    if stage.kind == "kto":
        return {
            "beta": stage.beta,
            "desirable_weight": stage.desirable_weight,
            "undesirable_weight": stage.undesirable_weight,
            "loss_type": stage.loss_type,
            "max_length": cutoff,
        }
    if stage.kind == "orpo":
        return {"beta": stage.beta, "max_length": cutoff}
    if stage.kind == "simpo":
        return {
            "loss_type": "simpo",
            "beta": stage.beta,
            "simpo_gamma": stage.gamma,
            "cpo_alpha": stage.sft_weight,
            "max_length": cutoff,
        }
    if stage.kind == "grpo":
        return {
            "num_generations": stage.num_generations,
            "max_completion_length": stage.max_completion_length,
            "temperature": stage.temperature,
            "beta": stage.beta,
            "reward_weights": [reward.weight for reward in stage.rewards],
        }
    if stage.kind == "ppo":
        return {
            "reward_model_path": stage.reward_model,
            "response_length": stage.response_length,
            "num_ppo_epochs": stage.num_ppo_epochs,
            "kl_coef": stage.kl_coef,
            "cliprange": stage.cliprange,
            "vf_coef": stage.vf_coef,
            "temperature": stage.temperature,
            "stop_token": "eos",
            "num_sample_generations": 0,
        }
    raise AssertionError(f"no trainer settings for stage {stage.kind}")


def _dataset_plan(
    dataset: Any, input_paths: Sequence[str], max_samples: int | None = None
) -> DatasetPlan:
    name = dataset.resolved_name
    options = {
        key: getattr(dataset, key)
        for key in ("max_samples", "num_samples", "placeholders")
        if getattr(dataset, key)
    }
    if max_samples and not ({"max_samples", "num_samples"} & set(options)):
        options["max_samples"] = max_samples  # data.max_samples: the default of every dataset
    columns = {
        key: value
        for key, value in dataset.columns.model_dump().items()
        if not (key in MEDIA_COLUMNS and value is None)
    }
    if dataset.hub is not None:
        hub = {
            "hub": dataset.hub,
            "subset": dataset.subset,
            "split": dataset.split,
            "revision": dataset.revision,
            "streaming": dataset.streaming,
        }
        return DatasetPlan(name, dataset.format, dataset.shape, columns, (), (), hub, options)
    if dataset.is_file:
        sources = (dataset.path,)
        files = (f"data/{name}{dataset.suffix}",)
    else:
        prefix = dataset.path.rstrip("/") + "/"
        sources = tuple(sorted(p for p in input_paths if p.startswith(prefix)))
        files = tuple(f"data/{name}/{p[len(prefix) :]}" for p in sources)
    media_sources: tuple[str, ...] = ()
    media_files: tuple[str, ...] = ()
    if dataset.media_dir is not None:
        media = dataset.media_dir.rstrip("/") + "/"
        media = "" if media == "./" else media
        suffixes = media_suffixes(dataset.columns)
        files_here = [p for p in input_paths if p.lower().endswith(suffixes)]
        media_sources = tuple(sorted(p for p in files_here if p.startswith(media)))
        media_files = tuple(f"data/{name}-media/{p[len(media) :]}" for p in media_sources)
    return DatasetPlan(
        name,
        dataset.format,
        dataset.shape,
        columns,
        sources,
        files,
        None,
        options,
        media_sources,
        media_files,
    )


def resolve(
    spec: Spec,
    template_source: bytes | None = None,
    source: str = "spec.yaml",
    input_paths: Sequence[str] = (),
) -> Plan:
    """Fill in everything the blueprints need from a validated spec.

    `template_source` holds the bytes of a custom template file (`template: {jinja: ...}`);
    `input_paths` the spec-relative paths of every input file (a folder dataset's files).
    """
    if isinstance(spec.template, CustomTemplate):
        if template_source is None:
            raise InputError(f"template file {spec.template.jinja!r} was not read")
        template = custom_chat_template(spec.template, template_source, source)
    else:
        template = get_template(spec.template)
    limit = spec.data.max_samples
    datasets = tuple(_dataset_plan(d, input_paths, limit) for d in spec.data.resolved)
    return Plan(
        spec=spec,
        template=template,
        pins=training_pins(
            spec.pins.target, _extras(spec), spec.stage.kind, _plugin(spec), spec.model.loader
        ),
        datasets=datasets,
        config=_config(spec),
        serving=serving_pins(("audio",) if _plugin(spec) in AUDIO_PLUGINS else ()),
    )


def checkpointing_key(spec: Spec) -> str:
    """config.yaml's name of activation checkpointing for the transformers release pinned."""
    if spec.model.loader == "unsloth":
        return "gradient_checkpointing"
    return "activation_checkpointing"


def _plugin(spec: Spec) -> str | None:
    """The media plugin, whose pin overrides (if any) the training set takes."""
    return spec.model.multimodal.plugin if spec.model.multimodal is not None else None


def _extras(spec: Spec) -> tuple[str, ...]:
    """The optional packages this spec uses (each pinned only then)."""
    extras = list(spec.train.report_to)
    if spec.export.quantization != "none" or spec.model.quantization is not None:
        extras.append("bitsandbytes")
    if spec.model.attn_implementation == "flash_attention_2":
        extras.append("flash-attn")
    if spec.train.liger_kernel:
        extras.append("liger-kernel")
    if spec.distributed.kind == "deepspeed":
        extras.append("deepspeed")
    if spec.train.optimizer.kind != "adamw":
        extras.append(spec.train.optimizer.kind)  # galore, apollo or badam
    if spec.model.multimodal is not None and spec.model.multimodal.plugin in AUDIO_PLUGINS:
        extras.append("av")  # data.py, train.py, chat.py and serve.py decode the audio
    elif spec.model.multimodal is not None:
        extras.append("pillow")  # data.py and train.py open the images
    if any(getattr(getattr(d, "columns", None), "videos", None) for d in spec.data.resolved):
        extras.append("av")  # PyAV (ffmpeg inside its wheel) decodes the videos
    if spec.model.prequantized is not None:
        extras.append(spec.model.prequantized)  # gptqmodel (+ optimum) or aqlm loads the base
    return tuple(extras)


def deepspeed_config(distributed: DeepspeedDistributed) -> dict[str, Any]:
    """ds_config.json: the ZeRO settings; "auto" values are filled from the training settings.

    transformers' DeepSpeed integration fills every "auto" from the trainer's arguments
    (batch sizes, accumulation, clipping, bf16, the optimizer's lr/betas/eps/weight decay), so
    config.yaml stays the one place they are set.
    """
    zero: dict[str, Any] = {
        "stage": distributed.zero_stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
    }
    if distributed.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if distributed.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    if distributed.zero_stage == 3:
        # Trainer.save_model then writes one full 16-bit state dict, not only ZeRO shards.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    config: dict[str, Any] = {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "zero_optimization": zero,
    }
    if distributed.offload_optimizer:
        # ZeRO-Offload refuses a client optimizer: DeepSpeed builds AdamW (its CPU Adam) itself.
        params = {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}
        config["optimizer"] = {"type": "AdamW", "params": params}
    return config
