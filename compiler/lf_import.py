"""`lfc import llamafactory`: a LLaMA-Factory training YAML as an lfc spec.

Pure: takes the parsed YAML mapping, returns the spec mapping and what happened to every key.
Each LLaMA-Factory key is one of:

- mapped: it becomes a spec field (`learning_rate` -> `train.learning_rate`);
- without effect in lfc: the generated project already behaves that way or has its own
  mechanism (`overwrite_cache` -> `python data.py --overwrite true`); kept as a note in the
  written spec, never dropped silently;
- refused: lfc cannot do it (yet), and the import fails naming every such key and why.

Where LLaMA-Factory's default differs from lfc's (learning rate, batch size, scheduler,
cutoff_len, LoRA alpha, gradient checkpointing, ...), the import writes LLaMA-Factory's value
explicitly, so the imported run trains with the same settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from lfc.errors import Problem, SpecError

# LLaMA-Factory template -> lfc template, and why when the names differ.
TEMPLATES: dict[str, tuple[str, str | None]] = {
    "llama3": ("llama3", None),
    "llama2": ("llama2", None),
    "qwen": ("qwen", None),
    "qwen3": ("qwen3", None),
    "qwen3_nothink": (
        "chatml",
        "LLaMA-Factory's qwen3_nothink writes ChatML turns with no default system prompt and no "
        "thinking block: the same text as lfc's chatml for conversations without tools",
    ),
    "chatml": ("chatml", None),
    "deepseek": ("deepseek", None),
    "deepseekr1": ("deepseek-r1", None),
    "mistral": ("mistral", None),
    "gemma2": ("gemma2", None),
    "gemma3": ("gemma3", None),
    "glm4": ("glm4", None),
    "phi": ("phi3", None),
    "phi4": ("phi4", None),
    "yi": ("yi", None),
    "alpaca": ("alpaca", None),
    "vicuna": ("vicuna", None),
    "empty": ("empty", None),
}
MULTIMODAL_TEMPLATES = ("qwen2_vl", "qwen3_vl", "qwen3_vl_nothink", "moss_vl", "llava", "mllama")
# Multimodal templates lfc has an image plugin (and a template) of the same name for.
IMAGE_PLUGINS = ("llava", "qwen2_vl")
# ... and an audio plugin: Qwen2-Audio.
AUDIO_PLUGINS = ("qwen2_audio",)

STAGES = ("pt", "sft", "rm", "dpo", "kto", "ppo")
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
)

# LLaMA-Factory key -> (spec section, field): copied as they are.
DIRECT: dict[str, tuple[str, str]] = {
    "model_name_or_path": ("model", "name_or_path"),
    "model_revision": ("model", "revision"),
    "trust_remote_code": ("model", "trust_remote_code"),
    "cutoff_len": ("data", "cutoff_len"),
    "val_size": ("data", "val_size"),
    "preprocessing_num_workers": ("data", "num_proc"),
    "max_samples": ("data", "max_samples"),
    "packing": ("data", "packing"),
    "learning_rate": ("train", "learning_rate"),
    "num_train_epochs": ("train", "epochs"),
    "per_device_train_batch_size": ("train", "batch_size"),
    "gradient_accumulation_steps": ("train", "grad_accum"),
    "warmup_ratio": ("train", "warmup_ratio"),
    "weight_decay": ("train", "weight_decay"),
    "max_grad_norm": ("train", "max_grad_norm"),
    "seed": ("train", "seed"),
    "logging_steps": ("train", "logging_steps"),
    "save_steps": ("train", "save_steps"),
    "save_total_limit": ("train", "save_total_limit"),
    "output_dir": ("train", "output_dir"),
}

# Defaults of LLaMA-Factory / transformers' TrainingArguments that differ from lfc's.
LF_DEFAULTS: dict[str, Any] = {
    "learning_rate": 5e-5,
    "per_device_train_batch_size": 8,
    "lr_scheduler_type": "linear",
    "logging_steps": 500,
    "save_total_limit": None,
    "cutoff_len": 2048,
}

# Keys that change nothing in an lfc project, and why.
NO_EFFECT: dict[str, str] = {
    "do_train": "train.py always trains",
    "plot_loss": "losses are in outputs/trainer_state.json (and TensorBoard with report_to)",
    "overwrite_output_dir": "train.py resumes or starts over by train.auto_resume",
    "overwrite_cache": "data.py caches by content; `python data.py --overwrite true` redoes it",
    "ddp_timeout": "data.py runs before launching, so no rank waits on tokenization",
    "dataloader_num_workers": "the trainer's default loader is used (data is pre-tokenized)",
    "save_only_model": "lfc checkpoints keep the optimizer state, so runs can resume",
    "use_reentrant_gc": "lfc uses transformers' default gradient checkpointing",
    "tokenized_path": "data.py always keeps its tokenized output in data/processed/",
    "swanlab_logdir": "lfc's SwanLab logs go to output_dir/swanlog (tracking.mode offline)",
    "dataset_dir": "used to find dataset_info.json (data.registry)",
    "use_fast_tokenizer": "lfc always uses the model's fast tokenizer",
}

# Keys of features lfc does not offer (yet), and what to do instead.
UNSUPPORTED: dict[str, str] = {
    "deepspeed": "lfc writes ds_config.json itself: set `distributed: {kind: deepspeed, "
    "zero_stage: 2 or 3}` (and offload_optimizer / offload_params) with `pins.target: cuda13.0`",
    "fsdp": "set `distributed: fsdp` in the spec instead",
    "fsdp_transformer_layer_cls_to_wrap": "lfc's fsdp wraps every decoder layer",
    "adapter_name_or_path": "continuing from an existing adapter is not supported yet",
    "eval_dataset": "a separate evaluation dataset is not supported; use data.val_size",
    "do_predict": "prediction runs are not training: use chat.py or serve.py",
    "predict_with_generate": "prediction runs are not training: use chat.py or serve.py",
    "per_device_eval_batch_size": "evaluation batch size follows train.batch_size",
    "ray_num_workers": "Ray launching is not supported; use accelerate (distributed:)",
    "optim": "only AdamW is supported yet",
    "mixture_of_depths": "Mixture-of-Depths is not supported yet",
    "shift_attn": "LongLoRA's shift-short attention is not supported yet",
    "pref_ftx": "the SFT term in preference losses is not supported yet",
    "fp8": "FP8 training needs GPUs and is not supported",
    "fp8_backend": "FP8 training needs GPUs and is not supported",
    "fp8_enable_fsdp_float8_all_gather": "FP8 training is not supported",
    "export_dir": "an export config: lfc projects export with export.py",
    "export_size": "an export config: use export.max_shard_size",
    "export_device": "an export config: lfc projects export with export.py",
    "export_legacy_format": "an export config: lfc projects export safetensors",
    "export_quantization_bit": "an export config: use export.quantization",
    "export_quantization_dataset": "GPTQ export is not supported",
    "infer_backend": "an inference config: use chat.py, serve.py or serve_vllm.sh",
    "freeze_language_model": "not supported yet: a frozen language model",
    "train_mm_proj_only": "not supported yet: training the projector only",
    "use_adam_mini": "Adam-mini is not supported yet",
    "use_muon": "the Muon optimizer is not supported yet",
    "use_unsloth": "set `model.loader: unsloth` with `pins.target: cuda13.0` (LoRA or full "
    "fine-tuning; its pins take transformers 5.17.0, trl 1.15.0, datasets 4.8.5)",
    "use_liger_kernel": "set `train.liger_kernel: true` with `pins.target: cuda13.0`",
    "use_v1_kernels": "LLaMA-Factory's fused kernels are not supported",
    "use_kt": "KTransformers is not supported",
    "swanlab_api_key": "a secret does not belong in a spec: `swanlab login` or export "
    "SWANLAB_API_KEY before training",
    "swanlab_workspace": "SwanLab workspaces are not supported yet: runs go to the logged-in user",
    "swanlab_lark_webhook_url": "SwanLab's Lark notifications are not supported",
    "swanlab_lark_secret": "SwanLab's Lark notifications are not supported",
    "use_dft_loss": "the DFT loss is not supported",
    "use_asft_loss": "the ASFT loss is not supported",
    "use_eaft_loss": "the EAFT loss is not supported",
    "rope_scaling": "set model.rope_scaling {type, factor} in the spec: LLaMA-Factory derives "
    "the factor from the model's context length, which the import does not read",
}
# Method families whose switches all start alike.
UNSUPPORTED_PREFIXES: dict[str, str] = {
    "galore_": "lfc's GaLore (train.optimizer galore) has no such option",
    "apollo_": "lfc's APOLLO (train.optimizer apollo) has no such option",
    "badam_": "lfc's BAdam (train.optimizer badam) has no such option",
    "oft_": "OFT is not supported",
    "kt_": "KTransformers is not supported",
    "asft_": "ASFT is not supported",
    "use_": "this method is not supported yet",
}


@dataclass
class Imported:
    """The spec mapping, and what happened to the keys that did not map one to one."""

    spec: dict[str, Any]
    notes: list[tuple[str, str]] = field(default_factory=list)  # (key, what happened)


@dataclass
class _State:
    config: Mapping[str, Any]
    source: str
    spec: dict[str, Any]
    notes: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)

    def set(self, section: str, key: str, value: Any) -> None:
        self.spec.setdefault(section, {})[key] = value


def _names(value: Any) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list):
        return [str(part).strip() for part in value]
    raise ValueError(f"expected a comma-separated string, got {value!r}")


def _stage(state: _State, value: Any) -> None:
    if value not in STAGES:
        state.refused.append(("stage", f"stage {value!r} is not one of lfc's {', '.join(STAGES)}"))
        return
    kind = value
    loss = state.config.get("pref_loss", "sigmoid")
    if value == "dpo":
        if loss in ("orpo", "simpo"):
            kind = loss
        elif loss not in ("sigmoid", "hinge", "ipo"):
            state.refused.append(("pref_loss", f"preference loss {loss!r} is not supported"))
    stage: dict[str, Any] = {"kind": kind}
    if kind == "dpo" and loss != "sigmoid":
        stage["loss_type"] = loss
    beta = state.config.get("pref_beta", 0.1)
    if kind in ("dpo", "kto", "orpo", "simpo"):
        stage["beta"] = beta
    if kind == "simpo":
        stage["gamma"] = state.config.get("simpo_gamma", 0.5)
    if kind == "kto":
        weights = {"desirable_weight": "kto_chosen_weight"}
        weights["undesirable_weight"] = "kto_rejected_weight"
        for ours, theirs in weights.items():
            if theirs in state.config:
                stage[ours] = state.config[theirs]
    if kind == "ppo":
        if "reward_model" not in state.config:
            state.refused.append(("stage", "ppo needs reward_model (a reward model folder)"))
        else:
            stage["reward_model"] = state.config["reward_model"]
    if kind == "sft":
        for key in ("train_on_prompt", "mask_history"):
            if state.config.get(key):
                stage[key] = True
    state.spec["stage"] = stage


def _adapter(state: _State, value: Any) -> None:
    config = state.config
    if value == "full":
        state.spec["adapter"] = {"kind": "full"}
    elif value == "freeze":
        layers = config.get("freeze_trainable_layers", 2)
        if not isinstance(layers, int) or layers <= 0:
            message = "freeze_trainable_layers <= 0 (the first layers) is not supported"
            state.refused.append(("freeze_trainable_layers", message))
            return
        adapter: dict[str, Any] = {"kind": "freeze", "trainable_layers": layers}
        if config.get("use_llama_pro"):
            # LLaMA-Factory trains an already expanded model: the last block of each group.
            del adapter["trainable_layers"]
            adapter["llama_pro"] = {"new_layers": layers, "expand": False}
            message = (
                "true: the model is taken as already expanded (LLaMA-Factory's llama_pro.py); "
                "for lfc's expand.py name the base model and set llama_pro.expand: true"
            )
            state.notes.append(("use_llama_pro", message))
        if config.get("freeze_extra_modules"):
            adapter["extra_modules"] = _names(config["freeze_extra_modules"])
        modules = _names(config.get("freeze_trainable_modules", "all"))
        if modules != ["all"]:
            adapter["trainable_modules"] = modules
        state.spec["adapter"] = adapter
    elif value == "lora":
        rank = config.get("lora_rank", 8)
        target = config.get("lora_target", "all")
        names = _names(target)
        adapter = {
            "kind": "lora",
            "rank": rank,
            # LLaMA-Factory's lora_alpha defaults to twice the rank.
            "alpha": config.get("lora_alpha") or rank * 2,
            "dropout": config.get("lora_dropout", 0.0),
            "target": "all-linear" if names == ["all"] else names,
        }
        for flag in ("dora", "rslora"):
            if config.get(f"use_{flag}"):
                adapter[flag] = True
        if config.get("additional_target"):
            adapter["modules_to_save"] = _names(config["additional_target"])
        if config.get("loraplus_lr_ratio"):
            adapter["loraplus_lr_ratio"] = config["loraplus_lr_ratio"]
        if config.get("pissa_init"):
            adapter["init"] = "pissa"
            # LLaMA-Factory's pissa_iter: -1 is the exact SVD, otherwise fast SVD iterations.
            niter = config.get("pissa_iter", 16)
            if isinstance(niter, int) and niter > 0:
                adapter["pissa_niter"] = niter
            if not config.get("pissa_convert"):
                message = "train.py always saves PiSSA adapters converted to plain LoRA"
                state.notes.append(("pissa_convert", message))
        state.spec["adapter"] = adapter
    else:
        state.refused.append(("finetuning_type", f"finetuning_type {value!r} is not supported"))


# LLaMA-Factory quantizes these on load (HqqConfig, EetqConfig); why lfc cannot.
ON_LOAD_QUANTIZATION = {
    "hqq": "LLaMA-Factory quantizes on load with HqqConfig, which transformers 5.24 refuses "
    "(its HQQ quantizer raises 'HQQ is not available yet')",
    "eetq": "LLaMA-Factory quantizes on load with EetqConfig, and peft 0.21.2 puts LoRA on EETQ "
    "layers only with the eetq package, which has no release on PyPI",
}


def _quantization(state: _State, value: Any) -> None:
    config = state.config
    method = config.get("quantization_method", "bnb")
    if method != "bnb":
        reason = ON_LOAD_QUANTIZATION.get(method, "lfc trains on bitsandbytes (bnb) only")
        message = f"quantization_method {method!r}: {reason}; use quantization_method bnb"
        state.refused.append(("quantization_method", message))
        return
    if value not in (4, 8):
        state.refused.append(("quantization_bit", f"quantization_bit {value!r}: use 4 or 8"))
        return
    quantization: dict[str, Any] = {"bits": value}
    if value == 4:
        quantization["type"] = config.get("quantization_type", "nf4")
        quantization["double_quant"] = bool(config.get("double_quantization", True))
    state.set("model", "quantization", quantization)


# LLaMA-Factory's image keys -> model.multimodal fields (with template llava or qwen2_vl).
IMAGE_KEYS = {
    "image_max_pixels": "image_max_pixels",
    "image_min_pixels": "image_min_pixels",
    "freeze_vision_tower": "freeze_vision_tower",
    "freeze_multi_modal_projector": "freeze_projector",
}


# LLaMA-Factory's video keys -> model.multimodal fields (with template qwen2_vl).
VIDEO_KEYS = ("video_fps", "video_maxlen", "video_max_pixels", "video_min_pixels")


def _plugin(state: _State, template: str) -> str:
    """LLaMA-Factory renders Qwen2-VL and Qwen2.5-VL with one template, qwen2_vl: lfc's
    plugin follows the model's name."""
    name = str(state.config.get("model_name_or_path", "")).lower()
    if template == "qwen2_vl" and ("qwen2.5-vl" in name or "qwen2_5_vl" in name):
        why = "a Qwen2.5-VL model (by its name): plugin qwen2_5_vl, template qwen2_vl"
        state.notes.append(("template", why))
        return "qwen2_5_vl"
    return template


# LLaMA-Factory's audio keys -> model.multimodal fields (with template qwen2_audio). Its
# freeze_vision_tower freezes what it registers as Qwen2-Audio's vision tower: audio_tower.
AUDIO_KEYS = {
    "audio_sampling_rate": "audio_sampling_rate",
    "freeze_vision_tower": "freeze_audio_tower",
    "freeze_multi_modal_projector": "freeze_projector",
}


def _template(state: _State, value: Any) -> None:
    if value in AUDIO_PLUGINS:
        state.spec["template"] = value
        multimodal = state.spec.setdefault("model", {}).setdefault("multimodal", {})
        multimodal["plugin"] = value
        for key, field_name in AUDIO_KEYS.items():
            if key in state.config:
                multimodal[field_name] = state.config[key]
        state.notes.append(
            (
                "template",
                f"{value} -> {value}: lfc writes each clip as transformers' Qwen2AudioProcessor "
                "template does, 'Audio N: <|audio_bos|>...<|audio_eos|>' and a newline; "
                "LLaMA-Factory writes <|audio_bos|>...<|audio_eos|> alone",
            )
        )
    elif value in IMAGE_PLUGINS:
        state.spec["template"] = value
        multimodal = state.spec.setdefault("model", {}).setdefault("multimodal", {})
        multimodal["plugin"] = _plugin(state, value)
        for key, field_name in IMAGE_KEYS.items():
            if key in state.config:
                multimodal[field_name] = state.config[key]
        for key in VIDEO_KEYS if value == "qwen2_vl" else ():
            if key in state.config:
                multimodal[key] = state.config[key]
    elif value in MULTIMODAL_TEMPLATES:
        why = "lfc has the llava and qwen2_vl (Qwen2-VL, Qwen2.5-VL) plugins only"
        state.refused.append(("template", f"{value!r} is multimodal; not supported yet: {why}"))
    elif value not in TEMPLATES:
        known = ", ".join(sorted(TEMPLATES))
        state.refused.append(("template", f"no lfc template for {value!r} (mapped: {known})"))
    else:
        name, why = TEMPLATES[value]
        state.spec["template"] = name
        if why:
            state.notes.append(("template", f"{value} -> {name}: {why}"))


def _dataset(state: _State, value: Any) -> None:
    folder = str(state.config.get("dataset_dir", "data")).rstrip("/")
    data = state.spec.setdefault("data", {})
    data["registry"] = f"{folder}/dataset_info.json"
    data["datasets"] = _names(value)
    strategy = state.config.get("mix_strategy", "concat")
    if strategy == "interleave_under":
        data["mix"], data["stopping_strategy"] = "interleave", "first_exhausted"
    elif strategy == "interleave_over":
        data["mix"], data["stopping_strategy"] = "interleave", "all_exhausted"
    elif strategy != "concat":
        state.refused.append(("mix_strategy", f"mix_strategy {strategy!r} is not supported"))
    if "interleave_probs" in state.config:
        data["probabilities"] = [float(p) for p in _names(state.config["interleave_probs"])]


def _scheduler(state: _State, value: Any) -> None:
    if value not in SCHEDULERS:
        state.refused.append(("lr_scheduler_type", f"scheduler {value!r} is not supported"))
    else:
        state.set("train", "scheduler", value)


TRACKERS = ("tensorboard", "wandb", "mlflow", "swanlab")
NAMED_TRACKERS = ("wandb", "mlflow", "swanlab")
# LLaMA-Factory's tracking keys, read by _tracking once every key is seen.
TRACKING_KEYS = ("run_name", "swanlab_project", "swanlab_run_name", "swanlab_mode")


def _report_to(state: _State, value: Any) -> None:
    trackers = [t for t in _names(value) if t != "none"]
    if "all" in trackers:
        message = "report_to all depends on what is installed: name the trackers"
        state.refused.append(("report_to", message))
        return
    unsupported = [t for t in trackers if t not in TRACKERS]
    if unsupported:
        message = f"trackers {unsupported} are not supported (lfc has {', '.join(TRACKERS)})"
        state.refused.append(("report_to", message))
    state.set("train", "report_to", list(dict.fromkeys(trackers)))


def _tracking(state: _State) -> None:
    """use_swanlab, run_name and swanlab_* as train.report_to and the tracking section."""
    config = state.config
    trackers = list(state.spec.get("train", {}).get("report_to", []))
    if config.get("use_swanlab") and "swanlab" not in trackers:
        trackers.append("swanlab")
        state.set("train", "report_to", trackers)
    named = [t for t in trackers if t in NAMED_TRACKERS]
    given = {k: config[k] for k in TRACKING_KEYS if config.get(k) is not None}
    if "swanlab" not in named:
        for key in [k for k in given if k.startswith("swanlab_")]:
            state.notes.append((key, f"{given.pop(key)!r}: no effect: swanlab is not a tracker"))
    if not named:
        for key, value in given.items():
            message = f"{value!r}: no effect: no wandb, mlflow or swanlab in report_to"
            state.notes.append((key, message))
        return
    tracking: dict[str, Any] = {}
    run_name = given.get("run_name")
    if "swanlab_run_name" in given:
        if run_name is not None and run_name != given["swanlab_run_name"] and named != ["swanlab"]:
            message = f"lfc names the run once for every tracker; run_name is {run_name!r}"
            state.refused.append(("swanlab_run_name", message))
        run_name = given["swanlab_run_name"]
    if run_name is not None:
        tracking["run_name"] = str(run_name)
    if "swanlab_project" in given:
        tracking["project"] = str(given["swanlab_project"])
    mode = given.get("swanlab_mode")
    if mode in ("cloud", "local"):
        tracking["mode"] = "online" if mode == "cloud" else "offline"
    elif mode is not None:
        state.refused.append(("swanlab_mode", f"swanlab_mode {mode!r}: cloud or local"))
    elif {"wandb", "swanlab"} & set(named):
        message = (
            "LLaMA-Factory's wandb and swanlab log online unless told otherwise; lfc's "
            "trackers run offline until tracking.mode is online"
        )
        state.notes.append(("report_to", message))
    if tracking:
        state.spec["tracking"] = tracking


def _precision(state: _State, key: str, value: Any) -> None:
    if value:
        message = "lfc's cpu pin set trains in float32, without mixed precision"
        state.notes.append((key, f"{value!r}: not applied: {message}"))


def _flash_attn(state: _State, value: Any) -> None:
    implementation = {"auto": "sdpa", "sdpa": "sdpa", "disabled": "eager"}.get(value)
    if value == "fa2":
        message = (
            "set `model.attn_implementation: flash_attention_2` (model.dtype bfloat16 or "
            "float16) with `pins.target: cuda13.0`"
        )
        state.refused.append(("flash_attn", message))
    elif implementation is None:
        state.refused.append(("flash_attn", f"flash_attn {value!r} is not supported yet"))
    else:
        state.set("model", "attn_implementation", implementation)


def _max_steps(state: _State, value: Any) -> None:
    if isinstance(value, int) and value > 0:
        state.set("train", "max_steps", value)


def _resume(state: _State, value: Any) -> None:
    if value is None:
        state.notes.append(("resume_from_checkpoint", "null: train.auto_resume decides"))
    else:
        message = "give it when running: train.py --resume_from_checkpoint PATH"
        state.refused.append(("resume_from_checkpoint", message))


# LLaMA-Factory's optimizer switches: use_X, and X_key -> train.optimizer field.
OPTIMIZER_KEYS: dict[str, dict[str, str]] = {
    "galore": {
        "galore_rank": "rank",
        "galore_update_interval": "update_proj_gap",
        "galore_scale": "scale",
        "galore_proj_type": "proj_type",
        "galore_target": "target",
        "galore_layerwise": "layerwise",
    },
    "apollo": {
        "apollo_rank": "rank",
        "apollo_update_interval": "update_proj_gap",
        "apollo_scale": "scale",
        "apollo_proj": "proj",
        "apollo_proj_type": "proj_type",
        "apollo_scale_type": "scale_type",
        "apollo_target": "target",
        "apollo_layerwise": "layerwise",
    },
    "badam": {
        "badam_switch_mode": "switch_mode",
        "badam_switch_interval": "switch_interval",
        "badam_start_block": "start_block",
    },
}


def _optimizer(kind: str) -> Callable[[_State, Any], None]:
    """The handler of use_galore / use_apollo / use_badam: train.optimizer from its keys."""

    def handle(state: _State, value: Any) -> None:
        if not value:
            state.notes.append((f"use_{kind}", f"{value!r}: off, nothing to do"))
            return
        optimizer: dict[str, Any] = {"kind": kind}
        for key, field_name in OPTIMIZER_KEYS[kind].items():
            if key not in state.config:
                continue
            value = state.config[key]
            if field_name == "target":
                names = _names(value)
                value = "all-linear" if names == ["all"] else names
                if value == "all-linear":
                    message = "all: lfc's all-linear also projects the output head (lm_head)"
                    state.notes.append((key, message))
            optimizer[field_name] = value
        if kind == "badam":
            mode = state.config.get("badam_mode", "layer")
            if mode != "layer":
                message = f"badam_mode {mode!r}: lfc runs BAdam's layer-wise block mode only"
                state.refused.append(("badam_mode", message))
            if "badam_verbose" in state.config:
                state.notes.append(("badam_verbose", "no effect: BAdam prints each switch"))
        state.set("train", "optimizer", optimizer)

    return handle


HANDLERS: dict[str, Callable[[_State, Any], None]] = {
    "use_galore": _optimizer("galore"),
    "use_apollo": _optimizer("apollo"),
    "use_badam": _optimizer("badam"),
    "stage": _stage,
    "finetuning_type": _adapter,
    "template": _template,
    "dataset": _dataset,
    "lr_scheduler_type": _scheduler,
    "report_to": _report_to,
    "flash_attn": _flash_attn,
    "max_steps": _max_steps,
    "quantization_bit": _quantization,
    "neftune_noise_alpha": lambda state, value: (
        value and state.set("train", "neftune_alpha", value)
    ),
    "resume_from_checkpoint": _resume,
    **{
        key: lambda state, value, key=key: (
            state.config.get("template") in IMAGE_PLUGINS
            or (state.config.get("template") in AUDIO_PLUGINS and key in AUDIO_KEYS)
            or state.notes.append((key, f"{value!r}: no effect without an image model"))
        )
        for key in IMAGE_KEYS
    },
    **{
        key: lambda state, value, key=key: (
            state.config.get("template") == "qwen2_vl"
            or state.refused.append(
                (key, f"{value!r}: video needs template qwen2_vl (Qwen2-VL, Qwen2.5-VL)")
            )
        )
        for key in VIDEO_KEYS
    },
    "audio_sampling_rate": lambda state, value: (
        state.config.get("template") in AUDIO_PLUGINS
        or state.notes.append(
            ("audio_sampling_rate", f"{value!r}: no effect without an audio model")
        )
    ),
    "bf16": lambda state, value: _precision(state, "bf16", value),
    "fp16": lambda state, value: _precision(state, "fp16", value),
    "pure_bf16": lambda state, value: _precision(state, "pure_bf16", value),
    "disable_gradient_checkpointing": lambda state, value: state.set(
        "train", "gradient_checkpointing", not value
    ),
}
# Read by the handlers above as part of another key.
CONSUMED = {
    "pref_loss",
    "pref_beta",
    "simpo_gamma",
    "kto_chosen_weight",
    "kto_rejected_weight",
    "reward_model",
    "train_on_prompt",
    "mask_history",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "lora_target",
    "use_dora",
    "use_rslora",
    "additional_target",
    "loraplus_lr_ratio",
    "pissa_init",
    "pissa_iter",
    "pissa_convert",
    "quantization_method",
    "quantization_type",
    "double_quantization",
    "freeze_trainable_layers",
    "freeze_extra_modules",
    "freeze_trainable_modules",
    "mix_strategy",
    "interleave_probs",
    "use_swanlab",
    *TRACKING_KEYS,
    *(key for keys in OPTIMIZER_KEYS.values() for key in keys),
    "badam_mode",
    "badam_verbose",
    "use_llama_pro",
}


def _unsupported_reason(key: str) -> str | None:
    if key in UNSUPPORTED:
        return UNSUPPORTED[key]
    for prefix, reason in UNSUPPORTED_PREFIXES.items():
        if key.startswith(prefix) and key not in CONSUMED:
            return reason
    return None


def _not_training(config: Mapping[str, Any]) -> str | None:
    """What a YAML that is not a LLaMA-Factory (v0) training config is, if it is one of those."""
    keys = set(map(str, config))
    if {"compute_environment", "distributed_type"} <= keys:
        return "an accelerate config, not a training config (lfc writes its own: distributed:)"
    if {"model", "model_class"} & keys or "peft_config" in keys:
        return "a LLaMA-Factory v1 config: lfc imports the v0 format (flat keys, `stage:`)"
    if any(key.startswith("tensor_model_parallel") for key in keys):
        return "a Megatron training config: Megatron is not supported"
    if "stage" not in keys and ({"infer_backend", "export_dir"} & keys):
        return (
            "an inference or export config, not a training config "
            "(an lfc project has chat.py, serve.py and export.py)"
        )
    if keys and all(key.startswith("<|") for key in keys):
        return "a list of special tokens, not a training config"
    return None


def import_llamafactory(
    config: Any,
    source: str = "config.yaml",
    locate: Callable[[tuple[str, ...]], tuple[int, int] | None] | None = None,
) -> Imported:
    """The lfc spec for a LLaMA-Factory training config; SpecError naming every refused key.

    `locate` gives the line and column of a key in the YAML, for the error messages.
    """
    if not isinstance(config, dict) or not config:
        raise SpecError([Problem(source, None, None, "", "not a LLaMA-Factory YAML mapping")])
    kind = _not_training(config)
    if kind:
        raise SpecError([Problem(source, None, None, "", kind)])
    state = _State(config, source, {"lfc": 1})
    for key, value in config.items():
        key = str(key)
        try:
            if key in DIRECT:
                state.set(*DIRECT[key], value)
            elif key in HANDLERS:
                HANDLERS[key](state, value)
            elif key in NO_EFFECT:
                state.notes.append((key, f"{value!r}: no effect: {NO_EFFECT[key]}"))
            elif key in CONSUMED:
                continue
            elif reason := _unsupported_reason(key):
                if value in (False, None) and key.startswith("use_"):
                    state.notes.append((key, f"{value!r}: off, nothing to do"))
                else:
                    state.refused.append((key, reason))
            else:
                state.refused.append((key, "lfc has no mapping for this option"))
        except (TypeError, ValueError) as exc:
            state.refused.append((key, str(exc)))
    _check_method_keys(state)
    _tracking(state)
    _fill_defaults(state)
    if state.refused:
        problems = []
        for key, reason in state.refused:
            line, column = (locate((key,)) if locate else None) or (None, None)
            problems.append(Problem(source, line, column, key, reason))
        raise SpecError(problems)
    return Imported(_ordered(state.spec), state.notes)


def _check_method_keys(state: _State) -> None:
    """A LoRA key on a full run (and the like) would be silently meaningless: refuse it."""
    kind = state.spec.get("adapter", {}).get("kind")
    owners = {"lora": ("lora_", "use_dora", "use_rslora"), "freeze": ("freeze_",)}
    for method, prefixes in owners.items():
        stray = [
            k
            for k in state.config
            if str(k).startswith(prefixes)
            and kind != method
            and k not in IMAGE_KEYS
            and k not in AUDIO_KEYS
        ]
        for key in stray:
            state.refused.append((key, f"a {method} option, but finetuning_type is {kind}"))
    for name in OPTIMIZER_KEYS:
        if not state.config.get(f"use_{name}"):
            stray = [k for k in state.config if str(k) in CONSUMED and str(k).startswith(name)]
            for key in stray:
                state.refused.append((key, f"a {name} option, but use_{name} is not set"))
    if state.config.get("use_llama_pro") and kind != "freeze":
        message = f"LLaMA Pro trains new blocks with finetuning_type freeze, not {kind}"
        state.refused.append(("use_llama_pro", message))
    stage = state.spec.get("stage", {}).get("kind")
    preference = ("pref_beta", "pref_loss", "simpo_gamma")
    for key in preference:
        if key in state.config and stage not in ("dpo", "kto", "orpo", "simpo"):
            state.refused.append((key, f"a preference option, but stage is {stage}"))


def _fill_defaults(state: _State) -> None:
    if "template" not in state.config and state.config.get("stage") == "pt":
        # Pre-training reads raw text: the template only ends documents with eos.
        state.spec["template"] = "empty"
        state.notes.append(("template", "unset for pt: lfc's `empty` template"))
    for key in ("model_name_or_path", "stage", "finetuning_type", "dataset", "template"):
        if key not in state.config and key not in state.spec:
            state.refused.append((key, "required: lfc needs it to compile a project"))
    for key, value in LF_DEFAULTS.items():
        section, name = DIRECT.get(key) or ("train", "scheduler")
        if key not in state.config:
            state.set(section, name, value)
    if "disable_gradient_checkpointing" not in state.config:
        # LLaMA-Factory checkpoints activations unless told not to.
        state.set("train", "gradient_checkpointing", True)
    if state.spec.get("stage", {}).get("kind") == "simpo" and "pref_beta" not in state.config:
        state.spec["stage"]["beta"] = 0.1  # LLaMA-Factory's pref_beta, shared by every loss


def _ordered(spec: dict[str, Any]) -> dict[str, Any]:
    order = ("lfc", "model", "template", "adapter", "stage", "data", "train", "tracking")
    return {key: spec[key] for key in order if key in spec}


def spec_text(imported: Imported, source: str) -> str:
    """The spec as YAML, headed by where it came from and every key that did not map."""
    lines = [f"# Imported from {source} by `lfc import llamafactory`."]
    if imported.notes:
        lines.append("# LLaMA-Factory keys without an lfc field:")
        lines += [f"#   {key}: {what}" for key, what in imported.notes]
    body = yaml.safe_dump(imported.spec, sort_keys=False, allow_unicode=True, width=100)
    return "\n".join(lines) + "\n" + body
