"""The lfc spec, version 1: Pydantic models, frozen, with a description on every field.

The models are the single source of truth for validation, for `spec.schema.json` (editor
completion) and for `lfc explain`. Cross-field rules live in validators whose messages say what
to change.
"""

from __future__ import annotations

import math
import re
import typing
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

SPEC_VERSION = 1
# Inits whose adapter does not start at zero: train.py rewrites it as plain LoRA on the base.
CONVERTED_INITS = ("pissa", "olora", "loftq")
# Pre-quantized formats transformers 5.24 has a quantizer for, which lfc cannot train on, and
# why (each checked against the installed libraries in tests/test_prequantized_formats.py).
UNSUPPORTED_PREQUANTIZED = {
    "hqq": "transformers 5.24's HQQ quantizer never builds HQQ layers: quantizing on load "
    "raises 'HQQ is not available yet', and a saved HQQ model loads as plain Linear layers "
    "with its quantized weights dropped and random ones in their place",
    "eetq": "peft 0.21.2 puts LoRA on EETQ layers only when the eetq package is installed, and "
    "eetq has no release on PyPI (transformers 5.24 also fetches its EETQ kernels from the "
    "Hugging Face Hub at load time)",
}
# Pre-quantized formats vLLM 0.33.0 cannot load (its QUANTIZATION_METHODS has no such name):
# their projects serve with serve.py only.
NOT_SERVED_BY_VLLM = ("aqlm",)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class RuleError(ValueError):
    """A rule across fields, broken at the key path `at` (relative to the model checking it),
    which is where the error is reported."""

    def __init__(self, at: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.at = at


class Section(BaseModel):
    """Base of every spec section: immutable, unknown keys rejected."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", use_attribute_docstrings=False, allow_inf_nan=False
    )

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, data: Any) -> Any:
        """YAML's true/false are not 1/0: a number field given a boolean is an error."""
        if isinstance(data, dict):
            for key, value in data.items():
                info = cls.model_fields.get(key) if isinstance(key, str) else None
                if isinstance(value, bool) and info and not _allows_bool(info.annotation):
                    message = f"expected {_expected(info.annotation)}, got {str(value).lower()}"
                    raise RuleError((key,), message)
        return data


def _allows_bool(annotation: Any) -> bool:
    if annotation is bool or annotation is Any:
        return True
    return any(_allows_bool(arg) for arg in typing.get_args(annotation))


def _expected(annotation: Any) -> str:
    """A short name of what a field holds, for the boolean error."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if annotation in (int, float) or set(args) & {int, float}:
        return "a number"
    return "a value of another type"


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


class QuantizationSpec(Section):
    bits: Literal[4, 8] = Field(
        description="Load the base model in 4-bit or 8-bit (bitsandbytes) and train LoRA "
        "adapters on it (QLoRA). The frozen weights stay quantized; the adapters train in "
        "compute_dtype."
    )
    type: Literal["nf4", "fp4"] = Field(
        default="nf4", description="4-bit only: NormalFloat4 (nf4) or plain fp4 weights."
    )
    double_quant: bool = Field(
        default=True,
        description="4-bit only: quantize the quantization constants too (~0.4 bits/weight saved).",
    )
    compute_dtype: Literal["float32", "bfloat16", "float16"] = Field(
        default="bfloat16",
        description="4-bit only: dtype the quantized layers compute in.",
    )

    @model_validator(mode="after")
    def _four_bit_only(self) -> QuantizationSpec:
        if self.bits == 8:
            for key in ("type", "double_quant", "compute_dtype"):
                if key in self.model_fields_set:
                    raise RuleError((key,), f"{key} applies to 4-bit quantization (bits: 4)")
        return self


class RopeScalingSpec(Section):
    type: Literal["linear", "dynamic", "yarn"] = Field(
        description="How RoPE positions are stretched: linear (position interpolation), "
        "dynamic (NTK-aware, grows with the sequence), or yarn."
    )
    factor: float = Field(
        gt=1, le=64, description="Context length multiple, e.g. 2.0 doubles the usable context."
    )


class MultimodalSpec(Section):
    plugin: Literal["llava", "qwen2_vl", "qwen2_5_vl", "qwen2_audio"] = Field(
        description="The model family's media plugin: how images, videos or audio become "
        "tokens. `llava` (LLaVA-1.5 style: CLIP vision tower, projector, `<image>` expanded to "
        "one token per patch; images only); `qwen2_vl` (Qwen2-VL: its ViT with a patch merger, "
        "`<|image_pad|>` / `<|video_pad|>` expanded to one token per merged 28x28 patch, two "
        "video frames per temporal patch); `qwen2_5_vl` (Qwen2.5-VL: the same processing, plus "
        "each video's seconds per temporal patch for its time-aligned rotary positions). Both "
        "Qwen vision plugins use the `qwen2_vl` template and pin torch 2.14.1 and torchvision "
        "0.29.1; `qwen2_audio` (Qwen2-Audio: a Whisper-style audio encoder and projector, "
        "`<|AUDIO|>` expanded to one token per 40 ms of audio; audios columns, pins av)."
    )
    image_max_pixels: int = Field(
        default=768 * 768,
        gt=0,
        le=2**26,
        description="Images larger than this many pixels are scaled down (aspect kept) before "
        "the image processor sees them (LLaMA-Factory's image_max_pixels); with the Qwen "
        "plugins also the image processor's max_pixels.",
    )
    image_min_pixels: int = Field(
        default=32 * 32,
        gt=0,
        le=2**26,
        description="Images smaller than this many pixels are scaled up (aspect kept) first; "
        "with the Qwen plugins also the image processor's min_pixels.",
    )
    video_fps: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="Video frames sampled per second of video, evenly spread over it "
        "(LLaMA-Factory's video_fps); Qwen plugins only.",
    )
    video_maxlen: int = Field(
        default=128,
        ge=1,
        le=768,
        description="At most this many frames per video (LLaMA-Factory's video_maxlen); an odd "
        "count gets its last frame repeated, as Qwen's two-frame temporal patches need.",
    )
    video_max_pixels: int = Field(
        default=256 * 256,
        gt=0,
        le=2**26,
        description="Video frames larger than this many pixels are scaled down (aspect kept, "
        "to multiples of 28) by the video processor (LLaMA-Factory's video_max_pixels).",
    )
    video_min_pixels: int = Field(
        default=16 * 16,
        gt=0,
        le=2**26,
        description="Video frames smaller than this many pixels are scaled up "
        "(LLaMA-Factory's video_min_pixels).",
    )
    freeze_vision_tower: bool = Field(
        default=True,
        description="Keep the vision encoder's weights as they are (no LoRA on it either).",
    )
    freeze_projector: bool = Field(
        default=True,
        description="Keep the projector (vision or audio features to the language model) as "
        "it is. Off: it trains fully (with LoRA it is saved beside the adapter, "
        "modules_to_save).",
    )
    audio_sampling_rate: int = Field(
        default=16000,
        gt=0,
        le=192000,
        description="qwen2_audio: the rate (Hz) audio is resampled to (mono) before the "
        "feature extractor, which reads only its own rate: 16000 for Qwen2-Audio's Whisper "
        "feature extractor (LLaMA-Factory's audio_sampling_rate).",
    )
    audio_max_seconds: float = Field(
        default=30.0,
        gt=0,
        le=30,
        description="qwen2_audio: audio longer than this is cut to its first audio_max_seconds "
        "in data.py, train.py, chat.py and serve.py (at most 30: Qwen2-Audio's feature "
        "extractor reads one 30 s window, which is also all that vLLM reads).",
    )
    freeze_audio_tower: bool = Field(
        default=True,
        description="qwen2_audio: keep the audio encoder's weights as they are (no LoRA on it "
        "either).",
    )

    @model_validator(mode="after")
    def _pixels(self) -> MultimodalSpec:
        if self.image_min_pixels > self.image_max_pixels:
            message = "image_min_pixels is larger than image_max_pixels"
            raise RuleError(("image_min_pixels",), message)
        if self.video_min_pixels > self.video_max_pixels:
            message = "video_min_pixels is larger than video_max_pixels"
            raise RuleError(("video_min_pixels",), message)
        if self.plugin == "llava":
            for key in self.changed(VIDEO_KEYS):
                raise RuleError(
                    (key,),
                    "the llava plugin reads images only: video settings need qwen2_vl "
                    "or qwen2_5_vl",
                )
        return self

    @model_validator(mode="after")
    def _media_settings(self) -> MultimodalSpec:
        """Image or video settings with the audio plugin, audio settings with an image plugin:
        refused."""
        hears = self.plugin in AUDIO_PLUGINS
        own = AUDIO_SETTINGS if hears else IMAGE_SETTINGS | VIDEO_SETTINGS
        media = AUDIO_SETTINGS | IMAGE_SETTINGS | VIDEO_SETTINGS
        for key in sorted(self.model_fields_set & media - own):
            kind = "an audio" if key in AUDIO_SETTINGS else "an image"
            if key in VIDEO_SETTINGS:
                kind = "a video"
            message = f"{key} is {kind} setting; plugin {self.plugin} has no use for it"
            raise RuleError((key,), message)
        if hears and self.audio_sampling_rate != QWEN2_AUDIO_SAMPLING_RATE:
            raise RuleError(
                ("audio_sampling_rate",),
                f"qwen2_audio's Whisper feature extractor reads {QWEN2_AUDIO_SAMPLING_RATE} Hz "
                f"audio only; got {self.audio_sampling_rate} (data.py resamples every file to it)",
            )
        return self

    def changed(self, keys: tuple[str, ...]) -> list[str]:
        """The `keys` whose value is not the default (a normalized spec writes every default,
        so being set is not enough to be meant)."""
        fields = type(self).model_fields
        return [key for key in keys if getattr(self, key) != fields[key].default]


# model.multimodal keys that only a video plugin reads.
VIDEO_KEYS = ("video_fps", "video_maxlen", "video_max_pixels", "video_min_pixels")
# The plugins that read videos, and the template each renders with.
VIDEO_PLUGINS = ("qwen2_vl", "qwen2_5_vl")
PLUGIN_TEMPLATES = {
    "llava": "llava",
    "qwen2_vl": "qwen2_vl",
    "qwen2_5_vl": "qwen2_vl",
    "qwen2_audio": "qwen2_audio",
}
# The plugins that hear (audios columns); the others see (images, and videos for VIDEO_PLUGINS).
AUDIO_PLUGINS = ("qwen2_audio",)
AUDIO_SETTINGS = frozenset({"audio_sampling_rate", "audio_max_seconds", "freeze_audio_tower"})
IMAGE_SETTINGS = frozenset({"image_max_pixels", "image_min_pixels", "freeze_vision_tower"})
VIDEO_SETTINGS = frozenset(VIDEO_KEYS)
# transformers' WhisperFeatureExtractor default rate, which Whisper-style encoders are trained at
# (the generated load_processor checks the model's own feature extractor says the same).
QWEN2_AUDIO_SAMPLING_RATE = 16000


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
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = Field(
        default="sdpa",
        description="Attention kernel: `sdpa` (PyTorch scaled dot-product), `eager`, or "
        "`flash_attention_2` (the flash-attn package: CUDA GPUs only, dtype bfloat16 or "
        "float16).",
    )
    quantization: QuantizationSpec | None = Field(
        default=None,
        description="QLoRA: train LoRA adapters on a bitsandbytes 4-bit or 8-bit base model "
        "(pins bitsandbytes). export.py merges into the unquantized base.",
    )
    rope_scaling: RopeScalingSpec | None = Field(
        default=None,
        description="Stretch the model's rotary position embeddings to train on longer "
        "sequences than it was pre-trained on.",
    )
    prequantized: Literal["gptq", "awq", "hqq", "eetq", "aqlm"] | None = Field(
        default=None,
        description="The base model is already quantized (its config.json holds a GPTQ, AWQ "
        "or AQLM `quantization_config`): LoRA adapters train on the frozen quantized weights, "
        "and requirements pin what transformers loads them with: gptqmodel (and optimum for "
        "GPTQ; pins.target cuda13.0 only), or aqlm (any target). peft cannot merge LoRA into "
        "these layers: export.py exports the adapter with the tokenizer and generation config; "
        "serve_vllm.sh serves GPTQ/AWQ base + adapter (serve.lora_adapter: true), while vLLM "
        "cannot load AQLM, so an AQLM project serves with serve.py. `hqq` and `eetq` are "
        "refused with the reason (transformers 5.24 / peft 0.21.2 cannot train on them). "
        "None: a full-precision base model.",
    )
    loader: Literal["transformers", "unsloth"] = Field(
        default="transformers",
        description="Library that loads the model and adds the adapters: transformers + peft, "
        "or Unsloth's FastLanguageModel (pins.target cuda13.0 only; requirements pin unsloth "
        "and the transformers, trl and datasets releases it accepts: 5.17.0, 1.15.0, 4.8.5). "
        "Training loads the model and adds LoRA through Unsloth; chat.py and export.py load "
        "the saved adapter with transformers + peft.",
    )
    multimodal: MultimodalSpec | None = Field(
        default=None,
        description="An image-text or audio-text model: its media plugin, image sizes or "
        "audio settings, and what of the vision or audio side trains. None: a text-only model.",
    )


class FullAdapter(Section):
    kind: Literal["full"] = Field(description="Train every parameter of the model.")


class LlamaProSpec(Section):
    new_layers: int = Field(
        gt=0,
        le=1024,
        description="LLaMA Pro block expansion: how many decoder blocks are added, one after "
        "each group of (layers / new_layers) original ones; the model's layer count must be a "
        "multiple of it. Each new block copies the block before it with o_proj and down_proj "
        "zeroed, so the expanded model computes exactly what the base did; only the new blocks "
        "train.",
    )
    expand: bool = Field(
        default=True,
        description="true: expand.py writes the expanded copy of model.name_or_path into "
        "expanded/ and training loads it. false: model.name_or_path is already expanded (e.g. "
        "by LLaMA-Factory's llama_pro.py) with new_layers new blocks; train only those.",
    )


class FreezeAdapter(Section):
    kind: Literal["freeze"] = Field(
        description="Freeze the model except its last decoder layers (and optional extra modules)."
    )
    trainable_layers: int = Field(
        default=2, gt=0, description="How many of the last decoder layers are trained."
    )
    trainable_modules: tuple[str, ...] = Field(
        default=(),
        description="Within the trained layers, only these modules (e.g. `[mlp]` or "
        "`[self_attn.q_proj, mlp]`); empty trains the whole layers.",
    )
    extra_modules: tuple[str, ...] = Field(
        default=(),
        description="Parameter name prefixes trained besides the layers, e.g. `lm_head`.",
    )
    llama_pro: LlamaProSpec | None = Field(
        default=None,
        description="LLaMA Pro: insert new decoder blocks and train only them (instead of the "
        "last trainable_layers). None: plain freeze tuning.",
    )

    @field_validator("trainable_modules", "extra_modules")
    @classmethod
    def _module_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_.]*$", name):
                raise ValueError(f"{name!r} is not a module name (like mlp or lm_head)")
        return value

    @model_validator(mode="after")
    def _llama_pro_trains_new_blocks(self) -> FreezeAdapter:
        if self.llama_pro is not None and "trainable_layers" in self.model_fields_set:
            raise RuleError(
                ("trainable_layers",),
                "with llama_pro the new blocks are the trained layers: remove trainable_layers",
            )
        return self


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
    dora: bool = Field(
        default=False,
        description="DoRA: split each update into a magnitude vector (trained) and a LoRA "
        "direction. Adds one parameter per output feature of every target module.",
    )
    rslora: bool = Field(
        default=False,
        description="rsLoRA: scale updates by alpha / sqrt(rank) instead of alpha / rank, "
        "which keeps high ranks stable.",
    )

    init: Literal["default", "gaussian", "pissa", "olora", "loftq"] = Field(
        default="default",
        description="How the adapters start. default: A random, B zero (the update starts at "
        "0); gaussian: A from a Gaussian; pissa: A and B from the top singular vectors of each "
        "weight, the rest stays in the base (PiSSA); olora: from a QR decomposition (OLoRA); "
        "loftq (QLoRA: model.quantization bits 4, pins.target cuda13.0, and alpha = rank, "
        "or sqrt(rank) with rslora, so the LoRA scale is 1): "
        "after the adapters are added, peft's replace_lora_weights_loftq sets B x A to the "
        "best rank-r fit of (full-precision weight - its 4-bit copy), read from the model's "
        "safetensors, so the quantized base + adapter starts close to the original model. "
        "pissa, olora and loftq start from a non-zero adapter, so train.py rewrites the "
        "final adapter as plain LoRA on the original base (rank 2 x rank).",
    )
    pissa_niter: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="init pissa only: use a fast randomized SVD with this many subspace "
        "iterations instead of the exact SVD (LLaMA-Factory's pissa_iter).",
    )
    loraplus_lr_ratio: float | None = Field(
        default=None,
        gt=0,
        le=1024,
        description="LoRA+: the B matrices learn this many times faster than the A matrices "
        "(the LoRA+ paper suggests 16). None: one learning rate for both.",
    )
    bias: Literal["none", "all", "lora_only"] = Field(
        default="none",
        description="Biases trained with the adapters: none, all of the model's, or only "
        "those of the target modules.",
    )
    modules_to_save: tuple[str, ...] = Field(
        default=(),
        description="Modules trained in full and saved with the adapter, e.g. "
        "`[lm_head, embed_tokens]` (needed when new tokens were added).",
    )

    @field_validator("target")
    @classmethod
    def _target_not_empty(cls, value: Any) -> Any:
        if isinstance(value, tuple) and not value:
            raise ValueError("list at least one module, or use `all-linear`")
        return value

    @field_validator("modules_to_save")
    @classmethod
    def _module_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_.]*$", name):
                raise ValueError(f"{name!r} is not a module name (like lm_head)")
        return value

    @model_validator(mode="after")
    def _init_options(self) -> LoraAdapter:
        if self.pissa_niter is not None and self.init != "pissa":
            raise RuleError(("pissa_niter",), "pissa_niter needs init: pissa")
        if self.init == "loftq" and self.dora:
            raise RuleError(
                ("dora",),
                "DoRA's magnitudes are computed when the adapters are created (B = 0), before "
                "LoftQ sets A and B, so the model would not start at quantized base + B x A: "
                "choose init loftq or dora",
            )
        if self.init == "loftq" and self.scale != 1:
            rule = "alpha / sqrt(rank)" if self.rslora else "alpha / rank"
            raise RuleError(
                ("alpha",),
                f"LoftQ fits B x A to the quantization error, but the adapter adds "
                f"{rule} x B x A (= {self.scale:g} here), which undoes the fit: set alpha "
                f"to {self.unit_alpha:g}",
            )
        if self.init in ("pissa", "olora") and self.dora:
            raise RuleError(
                ("init",),
                f"peft rewrites {self.init} adapters as plain LoRA only without DoRA: "
                "choose init or dora",
            )
        if self.init in CONVERTED_INITS and self.modules_to_save:
            raise RuleError(
                ("modules_to_save",),
                f"peft 0.21's rewrite of {self.init} adapters as plain LoRA drops the "
                "modules_to_save weights: use init default with modules_to_save",
            )
        if self.init in CONVERTED_INITS and self.bias != "none":
            raise RuleError(
                ("bias",),
                f"peft's rewrite of {self.init} adapters as plain LoRA loads a second adapter, "
                "and only one adapter may train biases: use bias none with this init",
            )
        return self

    @property
    def scale(self) -> float:
        """The factor peft multiplies B x A by: alpha / rank, or alpha / sqrt(rank) (rsLoRA)."""
        return self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)

    @property
    def unit_alpha(self) -> float:
        """The alpha whose scale is 1 at this rank."""
        return math.sqrt(self.rank) if self.rslora else float(self.rank)

    @property
    def saved_rank(self) -> int:
        """Rank of the adapter train.py saves: pissa/olora/loftq ones are rewritten at twice it."""
        return 2 * self.rank if self.init in CONVERTED_INITS else self.rank


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
            raise RuleError(
                ("mask_history",),
                "train_on_prompt labels every token and mask_history only the last answer; "
                "choose one",
            )
        return self


class PtStage(Section):
    kind: Literal["pt"] = Field(
        description="Pre-training: next-token prediction on raw text, packed into blocks of "
        "cutoff_len tokens."
    )


class RmStage(Section):
    kind: Literal["rm"] = Field(
        description="Reward model: a scalar head trained so chosen answers outscore rejected "
        "ones. Its output folder can be a ppo project's `reward_model`."
    )
    center_rewards_coefficient: float | None = Field(
        default=None, ge=0, description="Weight of a loss keeping rewards centred on zero."
    )


DpoLoss = Literal[
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sigmoid_norm",
]


class DpoStage(Section):
    kind: Literal["dpo"] = Field(description="Direct preference optimization on pairwise data.")
    beta: float = Field(default=0.1, gt=0, description="Strength of the pull to the reference.")
    loss_type: DpoLoss = Field(
        default="sigmoid", description="DPO loss variant (TRL's names): sigmoid is the paper's."
    )
    precompute_ref_log_probs: bool = Field(
        default=False,
        description="Score the data with the reference model once before training (saves "
        "memory during training, costs one pass).",
    )


class KtoStage(Section):
    kind: Literal["kto"] = Field(
        description="Kahneman-Tversky optimization on answers labelled desirable or not."
    )
    beta: float = Field(default=0.1, gt=0, description="Strength of the pull to the reference.")
    desirable_weight: float = Field(default=1.0, gt=0, description="Loss weight of good answers.")
    undesirable_weight: float = Field(default=1.0, gt=0, description="Loss weight of bad answers.")
    loss_type: Literal["kto", "apo_zero_unpaired"] = Field(
        default="kto", description="KTO loss variant."
    )


class OrpoStage(Section):
    kind: Literal["orpo"] = Field(
        description="Odds-ratio preference optimization: SFT and preference in one loss, no "
        "reference model."
    )
    beta: float = Field(default=0.1, gt=0, description="Weight of the odds-ratio term (lambda).")


class SimpoStage(Section):
    kind: Literal["simpo"] = Field(
        description="SimPO: length-normalized preference loss with a margin, no reference model "
        "(TRL's CPO trainer with loss_type simpo)."
    )
    beta: float = Field(default=2.0, gt=0, description="Reward scale.")
    gamma: float = Field(default=0.5, ge=0, description="Target reward margin (simpo_gamma).")
    sft_weight: float = Field(
        default=0.0, ge=0, description="Weight of an added SFT loss on chosen answers (cpo_alpha)."
    )


class RegexReward(Section):
    builtin: Literal["regex"] = Field(
        description="1.0 when the completion matches `pattern` (re.search), else 0.0."
    )
    pattern: str = Field(min_length=1, description="A Python regular expression.")
    weight: float = Field(default=1.0, description="Weight of this reward in the sum.")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class LengthReward(Section):
    builtin: Literal["length"] = Field(
        description="1.0 at `target` characters, falling linearly to 0.0 at 0 and 2 x target."
    )
    target: int = Field(gt=0, description="The ideal completion length in characters.")
    weight: float = Field(default=1.0, description="Weight of this reward in the sum.")


class ExactMatchReward(Section):
    builtin: Literal["exact_match"] = Field(
        description="1.0 when the completion, stripped, equals the row's reference answer "
        "(its last assistant turn / output column), else 0.0."
    )
    weight: float = Field(default=1.0, description="Weight of this reward in the sum.")


class FunctionReward(Section):
    function: str = Field(
        description="`file.py:name`, relative to the spec: a function "
        "`(prompts, completions, reference, **kwargs) -> list[float]`, copied into the project."
    )
    weight: float = Field(default=1.0, description="Weight of this reward in the sum.")

    @field_validator("function")
    @classmethod
    def _file_and_name(cls, value: str) -> str:
        match = re.match(r"^(.+\.py):([A-Za-z_][A-Za-z0-9_]*)$", value)
        if not match:
            raise ValueError(f"expected `file.py:function_name`, got {value!r}")
        _relative_path(match.group(1), "function file")
        return value

    @property
    def file(self) -> str:
        return _relative_path(self.function.rsplit(":", 1)[0], "function file")

    @property
    def name(self) -> str:
        return self.function.rsplit(":", 1)[1]


def _reward_kind(value: Any) -> str | None:
    """Which reward a rewards item is: its `builtin`, or `function` for a function of yours."""
    if isinstance(value, dict):
        return "function" if "function" in value else value.get("builtin")
    return "function" if isinstance(value, FunctionReward) else getattr(value, "builtin", None)


Reward = Annotated[
    Annotated[RegexReward, Tag("regex")]
    | Annotated[LengthReward, Tag("length")]
    | Annotated[ExactMatchReward, Tag("exact_match")]
    | Annotated[FunctionReward, Tag("function")],
    Discriminator(_reward_kind),
]


class GrpoStage(Section):
    kind: Literal["grpo"] = Field(
        description="Group relative policy optimization: sample completions per prompt, score "
        "them with reward functions, no value model."
    )
    rewards: tuple[Reward, ...] = Field(
        min_length=1, description="Reward functions, summed with their weights."
    )
    num_generations: int = Field(
        default=4, ge=2, description="Completions sampled per prompt (the group)."
    )
    max_completion_length: int = Field(
        default=128, gt=0, description="Maximum new tokens per completion."
    )
    temperature: float = Field(default=1.0, gt=0, description="Sampling temperature.")
    beta: float = Field(
        default=0.0, ge=0, description="KL weight to the reference model (0: no reference)."
    )


class PpoStage(Section):
    kind: Literal["ppo"] = Field(
        description="PPO (RLHF): the policy generates, a reward model scores, a value model "
        "and a KL penalty to the reference keep it stable. Pins TRL 1.12.0, the last with PPO."
    )
    reward_model: str = Field(
        min_length=1,
        description="A reward model folder (e.g. an lfc `rm` project's output folder, relative "
        "to the generated project) or hub id; also the value model's starting point.",
    )
    response_length: int = Field(default=64, gt=0, description="New tokens per response.")
    num_ppo_epochs: int = Field(default=4, gt=0, description="PPO epochs per batch of rollouts.")
    kl_coef: float = Field(default=0.05, ge=0, description="KL penalty to the reference.")
    cliprange: float = Field(default=0.2, gt=0, description="Policy ratio clip range.")
    vf_coef: float = Field(default=0.1, gt=0, description="Value loss weight.")
    temperature: float = Field(default=0.7, gt=0, description="Sampling temperature.")


Stage = Annotated[
    PtStage
    | SftStage
    | RmStage
    | DpoStage
    | KtoStage
    | OrpoStage
    | SimpoStage
    | GrpoStage
    | PpoStage,
    Field(discriminator="kind"),
]

# The rows each stage trains on, as `_DatasetBase.shape` names them.
STAGE_SHAPES = {
    "pt": "text",
    "sft": "conversation",
    "rm": "pairwise",
    "dpo": "pairwise",
    "orpo": "pairwise",
    "simpo": "pairwise",
    "kto": "kto",
    "grpo": "conversation",
    "ppo": "conversation",
}
_SHAPE_HINTS = {
    "text": "`format: text` (raw documents)",
    "conversation": "conversations (alpaca, sharegpt or openai without `ranking` or `kto_tag`)",
    "pairwise": "pairwise rows: `ranking: true` with `chosen` and `rejected` columns",
    "kto": "rows with a desirable/undesirable label: set `columns.kto_tag`",
}


class AlpacaColumns(Section):
    instruction: str = Field(default="instruction", description="Column of the user instruction.")
    input: str = Field(
        default="input", description="Column appended to the instruction (may be empty)."
    )
    output: str = Field(
        default="output",
        description="Column of the assistant answer (optional for prompt-only stages: grpo, ppo).",
    )
    system: str | None = Field(default=None, description="Column of a per-row system prompt.")
    history: str | None = Field(
        default=None,
        description="Column of earlier turns as a list of `[instruction, answer]` pairs.",
    )
    chosen: str = Field(
        default="chosen", description="With `ranking: true`: column of the preferred answer."
    )
    rejected: str = Field(
        default="rejected", description="With `ranking: true`: column of the dispreferred answer."
    )
    kto_tag: str | None = Field(
        default=None,
        description="Column of a boolean KTO label (true: desirable answer). Set it for `kto`.",
    )


class SharegptColumns(Section):
    messages: str = Field(default="conversations", description="Column holding the list of turns.")
    system: str | None = Field(default="system", description="Column of a per-row system prompt.")
    tools: str | None = Field(
        default="tools",
        description="Column of the tool definitions (a JSON string or list) the turns may call.",
    )
    role_tag: str = Field(default="from", description="Key of a turn's role.")
    content_tag: str = Field(default="value", description="Key of a turn's text.")
    user_tag: str = Field(default="human", description="Role value of user turns.")
    assistant_tag: str = Field(default="gpt", description="Role value of assistant turns.")
    system_tag: str = Field(default="system", description="Role value of a system turn.")
    function_tag: str = Field(
        default="function_call",
        description="Role value of an assistant tool call (its text is JSON {name, arguments}).",
    )
    observation_tag: str = Field(
        default="observation", description="Role value of a tool result turn."
    )
    chosen: str = Field(
        default="chosen", description="With `ranking: true`: column of the preferred last turn."
    )
    rejected: str = Field(
        default="rejected",
        description="With `ranking: true`: column of the dispreferred last turn.",
    )
    kto_tag: str | None = Field(
        default=None,
        description="Column of a boolean KTO label (true: desirable answer). Set it for `kto`.",
    )
    images: str | None = Field(
        default=None,
        description="Column of a row's image files (a list, paths relative to the dataset's "
        "media_dir); each `<image>` in the turns takes the next one. Needs model.multimodal.",
    )
    videos: str | None = Field(
        default=None,
        description="Column of a row's video files (a list, paths relative to the dataset's "
        "media_dir); each `<video>` in the turns takes the next one. Needs model.multimodal "
        "plugin qwen2_vl or qwen2_5_vl.",
    )
    audios: str | None = Field(
        default=None,
        description="Column of a row's audio files (a list, paths relative to the dataset's "
        "media_dir); each `<audio>` in the turns takes the next one. Needs model.multimodal "
        "plugin qwen2_audio.",
    )


class OpenaiColumns(Section):
    messages: str = Field(default="messages", description="Column holding the list of messages.")
    tools: str | None = Field(
        default="tools", description="Column of the tool definitions the messages may call."
    )
    chosen: str = Field(
        default="chosen", description="With `ranking: true`: column of the preferred message."
    )
    rejected: str = Field(
        default="rejected", description="With `ranking: true`: column of the dispreferred message."
    )
    kto_tag: str | None = Field(
        default=None,
        description="Column of a boolean KTO label (true: desirable answer). Set it for `kto`.",
    )
    images: str | None = Field(
        default=None,
        description="Column of a row's image files (a list, paths relative to the dataset's "
        "media_dir); each `<image>` in the turns takes the next one. Needs model.multimodal.",
    )
    videos: str | None = Field(
        default=None,
        description="Column of a row's video files (a list, paths relative to the dataset's "
        "media_dir); each `<video>` in the turns takes the next one. Needs model.multimodal "
        "plugin qwen2_vl or qwen2_5_vl.",
    )
    audios: str | None = Field(
        default=None,
        description="Column of a row's audio files (a list, paths relative to the dataset's "
        "media_dir); each `<audio>` in the turns takes the next one. Needs model.multimodal "
        "plugin qwen2_audio.",
    )


class TextColumns(Section):
    text: str = Field(default="text", description="Column of the raw text.")


# File types a local dataset may be; `.txt` (one document per line) only for `format: text`.
DATA_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".arrow", ".txt")


class _DatasetBase(Section):
    path: str | None = Field(
        default=None,
        description="A local file (.json, .jsonl, .csv, .parquet, .arrow, or .txt for text) or "
        "a folder of such files, relative to the spec. It is copied into the project's `data/` "
        "folder, so the project is self-contained.",
    )
    hub: str | None = Field(
        default=None,
        description="A dataset on the Hugging Face Hub (`org/name`), or anything "
        "`datasets.load_dataset` accepts. Loaded when data.py runs, never at compile time.",
    )
    subset: str | None = Field(default=None, description="Hub only: the configuration name.")
    split: str = Field(default="train", description="Hub only: the split to read.")
    revision: str | None = Field(
        default=None, description="Hub only: branch, tag or commit to pin the dataset to."
    )
    streaming: bool = Field(
        default=False,
        description="Hub only: stream rows instead of downloading the whole dataset first.",
    )
    name: str | None = Field(
        default=None,
        description="Name of the dataset inside the project (`data/<name>.<ext>`); "
        "defaults to the file name without extension.",
    )
    ranking: bool = Field(
        default=False,
        description="Pairwise preference rows: a prompt plus `chosen` and `rejected` answers "
        "(for rm, dpo, orpo, simpo).",
    )
    max_samples: int | None = Field(
        default=None, gt=0, description="Read at most the first N rows of this dataset."
    )
    num_samples: int | None = Field(
        default=None,
        gt=0,
        description="Draw N rows at random (seeded by train.seed; with repetition when N "
        "exceeds the dataset), like LLaMA-Factory's `num_samples`.",
    )
    placeholders: dict[str, str] = Field(
        default_factory=dict,
        description="Replace `{{key}}` by its value in every text of this dataset, e.g. "
        "`{name: Lfc, author: You}` for LLaMA-Factory's identity.json.",
    )
    media_dir: str | None = Field(
        default=None,
        description="With an `images` or `audios` column: the folder the media paths are "
        "relative to (relative to the spec). Its image files (.jpg, .jpeg, .png, .webp, .bmp, "
        ".gif) or audio files (.wav, .mp3, .flac, .ogg, .m4a) are copied into the project "
        "beside the dataset.",
    )

    @field_validator("path")
    @classmethod
    def _path_is_data(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = _relative_path(value, "path")
        last = value.rsplit("/", 1)[-1]
        if "." in last and not value.endswith(DATA_SUFFIXES):
            raise ValueError(
                f"unsupported file type {value!r}: use {', '.join(DATA_SUFFIXES)}, or a folder"
            )
        return value

    @field_validator("name")
    @classmethod
    def _name_is_simple(cls, value: str | None) -> str | None:
        if value is not None and not _NAME_RE.match(value):
            raise ValueError(
                "use 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit"
            )
        return value

    @field_validator("media_dir")
    @classmethod
    def _media_folder(cls, value: str | None) -> str | None:
        return None if value is None else _relative_path(value, "media_dir")

    @field_validator("placeholders")
    @classmethod
    def _placeholder_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
                raise ValueError(f"placeholder {key!r} should be a name like `author`")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> _DatasetBase:
        if (self.path is None) == (self.hub is None):
            raise RuleError(
                ("path",), "give exactly one of `path` (a local file or folder) and `hub`"
            )
        if self.path is not None:
            for key in ("subset", "revision"):
                if getattr(self, key) is not None:
                    raise RuleError((key,), f"`{key}` is for hub datasets; remove it or use `hub:`")
            if self.streaming:
                message = "`streaming` is for hub datasets; local files are read lazily"
                raise RuleError(("streaming",), message)
        if self.max_samples is not None and self.num_samples is not None:
            message = "choose one of max_samples (first N rows) and num_samples (random N)"
            raise RuleError(("num_samples",), message)
        if self.path is not None and self.path.endswith(".txt") and self.format != "text":
            raise RuleError(("format",), ".txt files hold plain text: use `format: text`")
        self._media_rules()
        return self

    def _media_rules(self) -> None:
        kinds = [
            k for k in ("images", "videos", "audios") if getattr(self.columns, k, None) is not None
        ]
        if "audios" in kinds and len(kinds) > 1:
            message = (
                f"not supported yet: {' and '.join(kinds)} in one dataset (no plugin reads "
                "audio with images or videos)"
            )
            raise RuleError(("columns", "audios"), message)
        if not kinds:
            if self.media_dir is not None:
                message = (
                    "media_dir holds the files of an `images`, `videos` or `audios` column: set "
                    "columns.images, columns.videos or columns.audios"
                )
                raise RuleError(("media_dir",), message)
            return
        kind = kinds[0]
        if self.hub is not None:
            raise RuleError(
                ("columns", kind),
                f"not supported yet: {kind} of a hub dataset (give a local file and media_dir)",
            )
        if self.ranking or getattr(self.columns, "kto_tag", None):
            raise RuleError(("columns", kind), f"not supported yet: {kind} in preference data")
        if self.media_dir is None:
            article = "a" if kind == "videos" else "an"
            raise RuleError(
                ("columns", kind),
                f"{article} `{kind}` column needs `media_dir`: the folder its paths are "
                "relative to",
            )

    @property
    def resolved_name(self) -> str:
        if self.name is not None:
            return self.name
        source = self.path if self.path is not None else (self.hub or "")
        stem = source.rstrip("/").rsplit("/", 1)[-1]
        if self.path is not None and stem.endswith(DATA_SUFFIXES):
            stem = stem.rsplit(".", 1)[0]
        return re.sub(r"[^A-Za-z0-9_.-]", "_", stem)[:64].lstrip("._-") or "dataset"

    @property
    def is_file(self) -> bool:
        """A local path with a data suffix (else a folder, or a hub dataset)."""
        return self.path is not None and self.path.endswith(DATA_SUFFIXES)

    @property
    def suffix(self) -> str:
        return "." + self.path.rsplit(".", 1)[-1] if self.is_file and self.path else ""

    @property
    def shape(self) -> str:
        """What a row holds: conversation, pairwise, kto or text."""
        if self.ranking:
            return "pairwise"
        if getattr(self.columns, "kto_tag", None):
            return "kto"
        return "conversation"


class AlpacaDataset(_DatasetBase):
    format: Literal["alpaca"] = Field(
        description="Rows of instruction / input / output (+ optional system and history)."
    )
    columns: AlpacaColumns = Field(default_factory=AlpacaColumns, description="Column names.")


class SharegptDataset(_DatasetBase):
    format: Literal["sharegpt"] = Field(
        description="Rows holding a list of turns with role and text keys (`from`/`value`); "
        "tool calls and results as `function_call` / `observation` turns."
    )
    columns: SharegptColumns = Field(default_factory=SharegptColumns, description="Column names.")


class OpenaiDataset(_DatasetBase):
    format: Literal["openai"] = Field(
        description="Rows holding OpenAI-style `messages` with `role` and `content` "
        "(and `tool_calls` / `tool` messages)."
    )
    columns: OpenaiColumns = Field(default_factory=OpenaiColumns, description="Column names.")


class TextDataset(_DatasetBase):
    format: Literal["text"] = Field(description="Raw text for pre-training (stage pt).")
    columns: TextColumns = Field(default_factory=TextColumns, description="Column names.")

    @model_validator(mode="after")
    def _no_pairs(self) -> TextDataset:
        if self.ranking:
            raise RuleError(("ranking",), "text datasets cannot be `ranking`")
        return self

    @property
    def shape(self) -> str:
        return "text"


Dataset = Annotated[
    AlpacaDataset | SharegptDataset | OpenaiDataset | TextDataset, Field(discriminator="format")
]


class DataSpec(Section):
    registry: str | None = Field(
        default=None,
        description="A LLaMA-Factory `dataset_info.json`, relative to the spec. Datasets may then "
        "be named by their entry (`datasets: [alpaca_en_demo, identity]`); files are found "
        "beside it.",
    )
    datasets: tuple[Dataset | str, ...] = Field(
        min_length=1,
        description="Datasets to train on: `{path|hub, format, ...}`, or a name in `registry`.",
    )
    mix: Literal["concat", "interleave"] = Field(
        default="concat",
        description="`concat`: one after the other; `interleave`: draw rows from the datasets "
        "at random with `probabilities`.",
    )
    probabilities: tuple[float, ...] | None = Field(
        default=None,
        description="interleave: chance of drawing from each dataset (same order; sums to 1). "
        "None: equal.",
    )
    stopping_strategy: Literal["first_exhausted", "all_exhausted"] = Field(
        default="first_exhausted",
        description="interleave: stop when the first dataset runs out, or when all have "
        "(restarting the finished ones, i.e. oversampling).",
    )
    shuffle: bool = Field(
        default=False,
        description="Shuffle the processed rows (seeded by train.seed) before the "
        "validation split.",
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
    packing: bool = Field(
        default=False,
        description="sft: pack several examples into each row (best-fit decreasing) with "
        "position ids that restart per example, so no example attends to another.",
    )
    max_samples: int | None = Field(
        default=None,
        gt=0,
        description="Read at most the first N rows of every dataset that sets neither "
        "max_samples nor num_samples itself (LLaMA-Factory's `max_samples`).",
    )
    num_proc: int = Field(
        default=1, gt=0, le=256, description="Processes data.py renders and tokenizes with."
    )
    on_bad_row: Literal["error", "skip"] = Field(
        default="error",
        description="A malformed row stops data.py (`error`, listing each by dataset and row) "
        "or is skipped and listed in data/processed/rejected.jsonl (`skip`).",
    )

    @field_validator("datasets")
    @classmethod
    def _unique_names(cls, datasets: tuple[Any, ...]) -> tuple[Any, ...]:
        seen: dict[str, int] = {}
        for index, dataset in enumerate(datasets):
            name = dataset if isinstance(dataset, str) else dataset.resolved_name
            if name in seen:
                raise ValueError(
                    f"datasets {seen[name]} and {index} are both named {name!r} in the project; "
                    "give one of them a distinct `name:`"
                )
            seen[name] = index
        return datasets

    @model_validator(mode="after")
    def _mixing(self) -> DataSpec:
        named = [d for d in self.datasets if isinstance(d, str)]
        if named and self.registry is None:
            raise RuleError(
                ("datasets", self.datasets.index(named[0])),
                f"dataset {named[0]!r} is a name: set `registry: path/to/dataset_info.json`, "
                "or describe it as {path: ..., format: ...}",
            )
        if self.probabilities is not None:
            if self.mix != "interleave":
                raise RuleError(("probabilities",), "`probabilities` needs `mix: interleave`")
            if len(self.probabilities) != len(self.datasets):
                raise RuleError(
                    ("probabilities",),
                    f"{len(self.probabilities)} probabilities for {len(self.datasets)} datasets",
                )
            if any(p < 0 for p in self.probabilities) or abs(sum(self.probabilities) - 1) > 1e-6:
                raise RuleError(("probabilities",), "probabilities must be >= 0 and sum to 1")
        return self

    @field_validator("registry")
    @classmethod
    def _registry_file(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = _relative_path(value, "registry")
        if not value.endswith(".json"):
            raise ValueError(f"a dataset registry is a .json file, got {value!r}")
        return value

    @property
    def resolved(self) -> tuple[Any, ...]:
        """The datasets, once the registry names are expanded (see lfc.registry)."""
        if any(isinstance(d, str) for d in self.datasets):
            raise RuntimeError("registry names were not expanded")
        return self.datasets


ReportTo = Literal["tensorboard", "wandb", "mlflow", "swanlab"]
# The trackers that name their runs and take tracking.project / tags / mode.
NAMED_TRACKERS = ("wandb", "mlflow", "swanlab")


class AdamwOptimizer(Section):
    kind: Literal["adamw"] = Field(
        description="AdamW (torch's) on every trained parameter, with train.weight_decay."
    )


def _target_modules(value: Any) -> Any:
    if isinstance(value, tuple):
        if not value:
            raise ValueError("list at least one module, or use `all-linear`")
        for name in value:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_.]*$", name):
                raise ValueError(f"{name!r} is not a module name (like q_proj or mlp.down_proj)")
    return value


class _LowRankOptimizer(Section):
    """What GaLore and APOLLO share: low-rank projections of the target weights' gradients."""

    rank: int = Field(
        default=128,
        gt=0,
        le=8192,
        description="Rank of the projection: the optimizer state of each target matrix is "
        "rank x its longer side instead of the whole matrix.",
    )
    update_proj_gap: int = Field(
        default=200, gt=0, description="Optimizer steps between recomputing each projection."
    )
    proj_type: Literal["std", "reverse_std", "left", "right"] = Field(
        default="std",
        description="Which side of each matrix is projected: std the shorter one (the state "
        "is longer side x rank), reverse_std the longer one, left or right always that side.",
    )
    target: Literal["all-linear"] | tuple[str, ...] = Field(
        default="all-linear",
        description="Linear modules whose weights get the low-rank optimizer: `all-linear` "
        "(every nn.Linear, the output head too) or names such as `[q_proj, v_proj, mlp]`; "
        "the other parameters get plain AdamW.",
    )
    layerwise: bool = Field(
        default=False,
        description="Step each parameter's optimizer as soon as its gradient is ready and free "
        "the gradient (less memory). Needs train.grad_accum 1 and one process.",
    )

    @field_validator("target")
    @classmethod
    def _target_names(cls, value: Any) -> Any:
        return _target_modules(value)


class GaloreOptimizer(_LowRankOptimizer):
    kind: Literal["galore"] = Field(
        description="GaLore (galore-torch): AdamW whose moments of the target matrices live in "
        "a low-rank projection of their gradients, updated every update_proj_gap steps."
    )
    scale: float = Field(
        default=0.25, gt=0, le=1000, description="Scale of the projected-back update."
    )


class ApolloOptimizer(_LowRankOptimizer):
    kind: Literal["apollo"] = Field(
        description="APOLLO (apollo-torch): AdamW whose low-rank moments only set a scaling "
        "of the raw gradient, per channel or per tensor (SGD-like memory)."
    )
    scale: float = Field(
        default=1.0, gt=0, le=1000, description="Scale of the gradient-scaling factor."
    )
    proj: Literal["random", "svd"] = Field(
        default="random",
        description="The projection: a random Gaussian one (cheap) or the gradient's top "
        "singular vectors.",
    )
    scale_type: Literal["channel", "tensor"] = Field(
        default="channel",
        description="One gradient scaling factor per channel, or one per tensor (APOLLO-Mini "
        "uses tensor with rank 1).",
    )


class BadamOptimizer(Section):
    kind: Literal["badam"] = Field(
        description="BAdam (badam): block-coordinate descent; only one decoder layer trains at "
        "a time (Adam state for that block only), switching every switch_interval steps. "
        "Needs adapter full."
    )
    switch_mode: Literal["ascending", "descending", "random", "fixed"] = Field(
        default="descending",
        description="Order the layers take turns in: first to last, last to first, a random "
        "order per round, or always start_block.",
    )
    switch_interval: int = Field(
        default=50,
        gt=0,
        description="Optimizer steps each block trains before the next one (badam counts from "
        "step 1, so the first block gets one step less).",
    )
    start_block: int | None = Field(
        default=None,
        ge=0,
        description="Index of the first block to train (required by switch_mode fixed); "
        "None: the first in switch_mode's order.",
    )
    include_embedding: bool = Field(
        default=False, description="Make the input embeddings one more block."
    )
    include_lm_head: bool = Field(
        default=False,
        description="Make the output head and the parameters outside the layers (the final "
        "norm) one more block.",
    )

    @model_validator(mode="after")
    def _fixed_needs_start(self) -> BadamOptimizer:
        if self.switch_mode == "fixed" and self.start_block is None:
            raise RuleError(("start_block",), "switch_mode fixed trains start_block: set it")
        return self


Optimizer = Annotated[
    AdamwOptimizer | GaloreOptimizer | ApolloOptimizer | BadamOptimizer,
    Field(discriminator="kind"),
]


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
    seed: int = Field(
        default=42,
        ge=0,
        le=2**32 - 1,
        description="Seed for data shuffling and initialisation (numpy takes < 2**32).",
    )
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
        description="Experiment trackers, any of: `tensorboard` (event files in "
        "output_dir/runs), `wandb` (Weights & Biases), `mlflow`, `swanlab`; each one's package "
        "is pinned only when chosen. wandb, mlflow and swanlab take their run name, project, "
        "tags and mode from the `tracking` section.",
    )
    auto_resume: bool = Field(
        default=True,
        description="Rerunning train.py after a crash resumes from the newest complete "
        "checkpoint in output_dir (a half-written one is never used). Off: start over.",
    )
    gradient_checkpointing: bool = Field(
        default=False,
        description="Recompute activations in the backward pass: less memory, ~20% slower.",
    )
    neftune_alpha: float | None = Field(
        default=None,
        gt=0,
        le=100,
        description="NEFTune: add uniform noise scaled by alpha / sqrt(length x hidden) to the "
        "input embeddings while training (the paper uses 5). None: off.",
    )
    liger_kernel: bool = Field(
        default=False,
        description="Liger's fused Triton kernels (RMSNorm, RoPE, SwiGLU, fused linear cross "
        "entropy) patched into the model by the trainer (use_liger_kernel); CUDA GPUs only, "
        "pins liger-kernel.",
    )

    optimizer: Optimizer = Field(
        default_factory=lambda: AdamwOptimizer(kind="adamw"),
        description="The optimizer: adamw, galore, apollo or badam (`optimizer: galore` is "
        "short for `{kind: galore}`).",
    )

    @field_validator("optimizer", mode="before")
    @classmethod
    def _optimizer_shorthand(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value

    @field_validator("output_dir")
    @classmethod
    def _output_inside(cls, value: str) -> str:
        return _relative_path(value, "output_dir")

    @field_validator("report_to")
    @classmethod
    def _trackers_once(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        twice = sorted({t for t in value if value.count(t) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} listed more than once")
        return value


_PROJECT_RE = re.compile(r"^[A-Za-z0-9_.+-]{1,100}$")


class TrackingSpec(Section):
    project: str = Field(
        default="lfc",
        description="The project the runs are filed under: the W&B project (WANDB_PROJECT), "
        "the MLflow experiment (MLFLOW_EXPERIMENT_NAME) and the SwanLab project "
        "(SWANLAB_PROJECT). Letters, digits and _ . + - (SwanLab's rule), at most 100.",
    )
    run_name: str | None = Field(
        default=None,
        description="The name of this run in every tracker (the trainer's run_name). "
        "None: each tracker makes one up.",
    )
    tags: tuple[str, ...] = Field(
        default=(),
        description="Tags of the run: W&B and SwanLab tags (WANDB_TAGS, SWANLAB_TAGS), MLflow "
        "tags with empty values (MLFLOW_TAGS). No commas (the variables are comma-separated).",
    )
    mode: Literal["offline", "online"] = Field(
        default="offline",
        description="offline: every tracker writes only local files under train.output_dir "
        "(W&B and SwanLab runs can be uploaded later with `wandb sync` / `swanlab sync`; MLflow "
        "keeps a file store in output_dir/mlruns). online: W&B and SwanLab stream to their "
        "servers (log in first), MLflow logs to tracking.mlflow_tracking_uri.",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="mode online with mlflow only: the MLflow tracking server "
        "(http:// or https://), written as MLFLOW_TRACKING_URI.",
    )

    @field_validator("project")
    @classmethod
    def _project(cls, value: str) -> str:
        if not _PROJECT_RE.match(value):
            raise ValueError(
                "project may hold letters, digits and _ . + - (at most 100), "
                f"as SwanLab requires, got {value!r}"
            )
        return value

    @field_validator("run_name")
    @classmethod
    def _run_name(cls, value: str | None) -> str | None:
        if value is not None and (
            not value or value.strip() != value or any(ord(c) < 32 for c in value)
        ):
            raise ValueError(
                "run_name must be non-empty, without surrounding spaces or control characters"
            )
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for tag in value:
            if not tag or tag.strip() != tag or "," in tag or any(ord(c) < 32 for c in tag):
                raise ValueError(
                    f"tag {tag!r}: tags are non-empty, without commas, surrounding spaces "
                    "or control characters"
                )
        if len(set(value)) != len(value):
            raise ValueError("a tag is listed more than once")
        return value

    @field_validator("mlflow_tracking_uri")
    @classmethod
    def _server(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s\x00-\x1f]+$", value):
            raise ValueError(
                f"an MLflow server address starts with http:// or https://, got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _uri_needs_online(self) -> TrackingSpec:
        if self.mlflow_tracking_uri is not None and self.mode == "offline":
            raise RuleError(
                ("mlflow_tracking_uri",),
                "mode offline keeps MLflow runs in output_dir/mlruns: set mode online to log "
                "to this server",
            )
        return self


class SingleDistributed(Section):
    kind: Literal["single"] = Field(description="One process on one machine.")


class _MultiProcess(Section):
    num_processes: int = Field(
        default=2, ge=1, le=1024, description="Processes (ranks) per machine: one per GPU."
    )
    num_machines: int = Field(
        default=1,
        ge=1,
        le=1024,
        description="Machines. Each one's rank and the main machine's address are given when "
        "launching (launch.sh / slurm.sbatch), never written into the project.",
    )


class DdpDistributed(_MultiProcess):
    kind: Literal["ddp"] = Field(
        description="Data parallel: every rank holds the whole model, gradients are averaged."
    )


class FsdpDistributed(_MultiProcess):
    kind: Literal["fsdp"] = Field(
        description="FSDP2 (torch fully_shard): parameters, gradients and optimizer state "
        "sharded over the ranks, decoder layers wrapped one by one."
    )
    reshard_after_forward: bool = Field(
        default=True, description="Free the gathered parameters after each layer's forward."
    )
    state_dict_type: Literal["FULL_STATE_DICT", "SHARDED_STATE_DICT"] = Field(
        default="FULL_STATE_DICT",
        description="Checkpoints as one full state dict (loadable anywhere) or per-rank shards.",
    )
    cpu_ram_efficient_loading: bool = Field(
        default=True,
        description="Only rank 0 reads the weights; the others receive them (saves host RAM).",
    )
    offload_params: bool = Field(
        default=False, description="Keep sharded parameters in CPU memory between uses."
    )
    activation_checkpointing: bool = Field(
        default=False, description="FSDP's own activation checkpointing of each wrapped layer."
    )


class DeepspeedDistributed(_MultiProcess):
    kind: Literal["deepspeed"] = Field(
        description="DeepSpeed ZeRO (needs CUDA GPUs and a GPU pin set)."
    )
    zero_stage: Literal[2, 3] = Field(
        default=2,
        description="ZeRO stage 2 (optimizer state and gradients sharded) or 3 (parameters "
        "too; the saved model is gathered into one 16-bit state dict).",
    )
    offload_optimizer: bool = Field(
        default=False,
        description="Optimizer state in CPU memory; DeepSpeed then builds its own AdamW (its "
        "CPU Adam, compiled on first use) from the training settings.",
    )
    offload_params: bool = Field(
        default=False, description="Parameters in CPU memory (ZeRO-3 only)."
    )


Distributed = Annotated[
    SingleDistributed | DdpDistributed | FsdpDistributed | DeepspeedDistributed,
    Field(discriminator="kind"),
]


class PinsSpec(Section):
    target: Literal["cpu", "cuda13.0"] = Field(
        default="cpu",
        description="Hardware target whose version set is pinned in requirements.txt: cpu "
        "(tested here), or cuda13.0 for NVIDIA GPUs (torch's CUDA 13.0 build from PyPI; needs a "
        "driver that runs CUDA 13.0).",
    )


_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_SIZE_RE = re.compile(r"^[1-9][0-9]*(KB|MB|GB|KiB|MiB|GiB)$")


class ExportSpec(Section):
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto",
        description="dtype of the exported weights; auto keeps the dtype the model trained in.",
    )
    max_shard_size: str = Field(
        default="5GB",
        description="Largest safetensors shard export.py writes (e.g. 2GB, 500MB).",
    )
    extra_adapters: tuple[str, ...] = Field(
        default=(),
        description="LoRA only: more adapter folders (paths as seen from the project) merged, "
        "in order, after this project's own adapter.",
    )
    quantization: Literal["none", "bnb-8bit", "bnb-4bit"] = Field(
        default="none",
        description="Also write a bitsandbytes-quantized copy (exported-bnb-8bit/ or "
        "exported-bnb-4bit/, nf4 with double quantization); pins bitsandbytes.",
    )
    ollama: bool = Field(
        default=True,
        description="Write an Ollama `Modelfile` (TEMPLATE derived from the chat template, "
        "stop tokens) for `ollama create NAME -f Modelfile`.",
    )

    @field_validator("max_shard_size")
    @classmethod
    def _size(cls, value: str) -> str:
        if not _SIZE_RE.match(value):
            raise ValueError(f"max_shard_size is a number and a unit (5GB, 500MB), got {value!r}")
        return value

    @field_validator("extra_adapters")
    @classmethod
    def _adapter_paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for path in value:
            if not path.strip() or any(ord(c) < 32 for c in path):
                raise ValueError(f"extra adapter path {path!r} is empty or has control characters")
        return value


class ServeSpec(Section):
    host: str = Field(
        default="127.0.0.1",
        description="Address the servers bind (0.0.0.0 to accept other machines; the serving "
        "image always binds 0.0.0.0 inside its container).",
    )
    port: int = Field(default=8000, ge=1, le=65535, description="TCP port of the servers.")
    served_model_name: str = Field(
        default="lfc-model",
        description="The model name clients send (`model=` in the OpenAI client).",
    )
    lora_adapter: bool = Field(
        default=False,
        description="LoRA only: vLLM serves the base model plus this project's adapter "
        "(--enable-lora) under served_model_name, instead of the merged export.",
    )
    max_model_len: int | None = Field(
        default=None,
        gt=0,
        description="Longest prompt plus answer in tokens; None: the model's own limit.",
    )
    tensor_parallel_size: int = Field(
        default=1, ge=1, le=64, description="vLLM: GPUs one model is split over."
    )
    gpu_memory_utilization: float = Field(
        default=0.9, gt=0, le=1, description="vLLM: fraction of GPU memory it may take."
    )
    max_images_per_prompt: int = Field(
        default=1,
        ge=1,
        le=64,
        description="vLLM, image models only: most images one request may hold "
        "(--limit-mm-per-prompt).",
    )
    max_videos_per_prompt: int = Field(
        default=1,
        ge=1,
        le=16,
        description="vLLM, projects trained on videos only: most videos one request may hold "
        "(--limit-mm-per-prompt).",
    )
    max_audios_per_prompt: int = Field(
        default=1,
        ge=1,
        le=64,
        description="vLLM, audio models only: most audio clips one request may hold "
        "(--limit-mm-per-prompt).",
    )

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9.:-]{1,253}$", value):
            raise ValueError(f"host must be an IP address or host name, got {value!r}")
        return value

    @field_validator("served_model_name")
    @classmethod
    def _served_name(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$", value):
            raise ValueError(
                "served_model_name may hold letters, digits and _ . : / - "
                f"(starting with a letter or digit), got {value!r}"
            )
        return value


class DockerSpec(Section):
    train_base_digest: str | None = Field(
        default=None,
        description="sha256 digest of the training image's base (see the project README for "
        "the command that reads it); None: give it at build time with --build-arg BASE_DIGEST.",
    )
    serve_base_digest: str | None = Field(
        default=None,
        description="sha256 digest of the vllm/vllm-openai image; None: give it at build time "
        "with --build-arg VLLM_DIGEST.",
    )

    @field_validator("train_base_digest", "serve_base_digest")
    @classmethod
    def _digest(cls, value: str | None) -> str | None:
        if value is not None and not _DIGEST_RE.match(value):
            raise ValueError(f"an image digest looks like sha256:<64 hex digits>, got {value!r}")
        return value


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
    distributed: Distributed = Field(
        default_factory=lambda: SingleDistributed(kind="single"),
        description="How train.py is launched: single, ddp, fsdp or deepspeed "
        "(`distributed: ddp` is short for `{kind: ddp}`).",
    )
    pins: PinsSpec = Field(default_factory=PinsSpec, description="Pinned dependency set.")
    export: ExportSpec = Field(
        default_factory=ExportSpec, description="What export.py writes: the standalone model."
    )
    serve: ServeSpec = Field(
        default_factory=ServeSpec,
        description="serve.py (CPU, transformers) and serve_vllm.sh (vLLM) settings.",
    )
    docker: DockerSpec = Field(
        default_factory=DockerSpec, description="Base image digests of the two Dockerfiles."
    )
    tracking: TrackingSpec | None = Field(
        default=None,
        description="Run name, project, tags and mode of the wandb, mlflow and swanlab "
        "trackers (train.report_to). None: project lfc, no run name or tags, offline.",
    )

    @model_validator(mode="after")
    def _data_fits_stage(self) -> Spec:
        needed = STAGE_SHAPES[self.stage.kind]
        for index, dataset in enumerate(self.data.datasets):
            if isinstance(dataset, str) or dataset.shape == needed:
                continue
            raise RuleError(
                ("data", "datasets", index),
                f"data.datasets[{index}] ({dataset.resolved_name}) holds {dataset.shape} rows, "
                f"but stage {self.stage.kind} trains on {_SHAPE_HINTS[needed]}",
            )
        stage, train = self.stage, self.train
        if isinstance(stage, GrpoStage):
            per_step = train.batch_size * train.grad_accum
            if per_step % stage.num_generations:
                raise RuleError(
                    ("stage", "num_generations"),
                    f"grpo samples {stage.num_generations} completions per prompt: "
                    f"train.batch_size x train.grad_accum ({per_step}) must be a multiple "
                    "of stage.num_generations",
                )
            stems = [r.file.rsplit("/", 1)[-1] for r in stage.rewards if hasattr(r, "file")]
            for stem in stems:
                if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*\.py$", stem):
                    message = f"reward file {stem!r} must be an importable module name"
                    raise RuleError(("stage", "rewards"), message)
            if len(set(stems)) != len(stems):
                message = "two reward functions come from files with the same name"
                raise RuleError(("stage", "rewards"), message)
        if isinstance(stage, KtoStage) and stage.loss_type == "kto" and train.batch_size < 2:
            raise RuleError(
                ("train", "batch_size"),
                "the kto loss estimates its KL term within a batch: set train.batch_size >= 2",
            )
        distributed = self.distributed
        if distributed.kind == "deepspeed" and self.pins.target == "cpu":
            raise RuleError(
                ("distributed", "kind"),
                "DeepSpeed needs CUDA GPUs, but pins.target is cpu: set pins.target: cuda13.0, "
                "or use distributed: ddp or fsdp",
            )
        if (
            distributed.kind != "single"
            and distributed.num_machines > 1
            and (self.pins.target == "cpu")
        ):
            raise RuleError(
                ("distributed", "num_machines"),
                "multi-node training needs a GPU pin set (pins.target cpu is for one machine): "
                "set pins.target: cuda13.0",
            )
        if (
            isinstance(distributed, DeepspeedDistributed)
            and distributed.offload_params
            and (distributed.zero_stage != 3)
        ):
            raise RuleError(
                ("distributed", "offload_params"), "distributed.offload_params needs zero_stage 3"
            )
        if self.stage.kind == "ppo" and distributed.kind != "single":
            message = "the ppo stage (TRL 1.12 PPOTrainer) runs as a single process here"
            raise RuleError(("distributed",), message)
        if self.adapter.kind != "lora" and self.export.extra_adapters:
            message = "export.extra_adapters merges LoRA adapters: it needs adapter lora"
            raise RuleError(("export", "extra_adapters"), message)
        if self.adapter.kind != "lora" and self.serve.lora_adapter:
            message = "serve.lora_adapter serves a LoRA adapter: it needs adapter lora"
            raise RuleError(("serve", "lora_adapter"), message)
        # A pre-quantized base has no merged export to fall back on (see _kernel_rules).
        merged = "serve the merged export (lora_adapter: false)"
        if self.serve.lora_adapter and self.adapter.dora:
            fix = "remove adapter.dora" if self.model.prequantized else merged
            raise RuleError(
                ("serve", "lora_adapter"),
                f"vLLM 0.33 does not load DoRA adapters (its peft_helper refuses use_dora): {fix}",
            )
        if self.serve.lora_adapter and self.adapter.saved_rank > 512:
            raise RuleError(
                ("serve", "lora_adapter"),
                f"vLLM serves LoRA adapters up to rank 512 (--max-lora-rank); the saved "
                f"adapter has rank {self.adapter.saved_rank}: lower adapter.rank"
                + ("" if self.model.prequantized else ", or " + merged),
            )
        if self.stage.kind == "rm" and (
            "serve" in self.model_fields_set or "export" in self.model_fields_set
        ):
            raise RuleError(
                ("serve" if "serve" in self.model_fields_set else "export",),
                "stage rm trains a reward model (a scorer, not a chat model): it has no "
                "serve or export settings; remove them",
            )
        self._method_rules()
        self._tracking_rules()
        self._multimodal_rules()
        if self.data.packing and self.stage.kind != "sft":
            raise RuleError(
                ("data", "packing"),
                "data.packing applies to stage sft (pt always packs into blocks); remove it",
            )
        return self

    def _multimodal_rules(self) -> None:
        """A media model (images, videos or audio): what is supported with it, each refusal at its
        key."""
        multimodal = self.model.multimodal
        plugin = None if multimodal is None else multimodal.plugin
        hears = plugin in AUDIO_PLUGINS
        videos = False
        for index, dataset in enumerate(self.data.datasets):
            columns = getattr(dataset, "columns", None)
            at = ("data", "datasets", index, "columns")
            if getattr(columns, "images", None) is not None:
                if plugin is None:
                    message = "an images column needs an image model: set model.multimodal"
                    raise RuleError((*at, "images"), message)
                if hears:
                    message = (
                        f"plugin {plugin} hears audio and sees no images: images need plugin "
                        "llava, qwen2_vl or qwen2_5_vl"
                    )
                    raise RuleError((*at, "images"), message)
            if getattr(columns, "videos", None) is not None:
                videos = True
                if plugin is None:
                    message = (
                        "a videos column needs a video model: set model.multimodal "
                        "(plugin qwen2_vl or qwen2_5_vl)"
                    )
                    raise RuleError((*at, "videos"), message)
                if plugin not in VIDEO_PLUGINS:
                    reads = "hears audio only" if hears else "reads images only"
                    raise RuleError(
                        (*at, "videos"),
                        f"the {plugin} plugin {reads}: a videos column needs "
                        "model.multimodal plugin qwen2_vl or qwen2_5_vl",
                    )
            if getattr(columns, "audios", None) is not None and not hears:
                what = "no model.multimodal" if plugin is None else f"plugin {plugin} reads images"
                what += " and videos" if plugin in VIDEO_PLUGINS else ""
                raise RuleError(
                    (*at, "audios"),
                    f"an audios column needs an audio model ({what}): set model.multimodal "
                    "plugin qwen2_audio (Qwen2-Audio, the family lfc can fine-tune on audio)",
                )
        default = type(self.serve).model_fields["max_videos_per_prompt"].default
        if self.serve.max_videos_per_prompt != default and not videos:
            raise RuleError(
                ("serve", "max_videos_per_prompt"),
                "applies to projects trained on videos (a videos column); remove it",
            )
        if "max_audios_per_prompt" in self.serve.model_fields_set and not hears:
            message = "max_audios_per_prompt is for an audio model (model.multimodal qwen2_audio)"
            raise RuleError(("serve", "max_audios_per_prompt"), message)
        if multimodal is None:
            return
        for key, kind in (
            ("max_images_per_prompt", "an image"),
            ("max_videos_per_prompt", "a video"),
        ):
            if key in self.serve.model_fields_set and hears:
                message = f"{key} is for {kind} model; plugin {plugin} hears audio"
                raise RuleError(("serve", key), message)
        if hears and self.pins.target != "cpu":
            raise RuleError(
                ("model", "multimodal", "plugin"),
                f"not supported yet: qwen2_audio with pins.target {self.pins.target} (the audio "
                "decoder av was resolved and tested with the cpu set only)",
            )
        if multimodal.plugin in VIDEO_PLUGINS and not videos:
            for key in multimodal.changed(VIDEO_KEYS):
                raise RuleError(
                    ("model", "multimodal", key),
                    "no dataset has a videos column, so no video is read: remove it",
                )
        if multimodal.plugin in VIDEO_PLUGINS and self.pins.target != "cpu":
            raise RuleError(
                ("model", "multimodal", "plugin"),
                f"not supported yet: {multimodal.plugin} with pins.target {self.pins.target} "
                "(its processor needs torchvision, and only the cpu set's torch 2.14.1 + "
                "torchvision 0.29.1 was installed and tested together)",
            )
        template = PLUGIN_TEMPLATES[multimodal.plugin]
        if self.template != template:
            raise RuleError(
                ("template",),
                f"the {plugin} plugin renders {'audio' if hears else 'images'} with the "
                f"`{template}` template (its {'audio' if hears else 'image'} token); got "
                f"{self.template!r}",
            )
        refused: list[tuple[tuple[str, ...], bool, str]] = [
            (("stage",), self.stage.kind != "sft", f"stage {self.stage.kind}"),
            (("adapter", "kind"), self.adapter.kind == "freeze", "adapter freeze"),
            (("model", "quantization"), self.model.quantization is not None, "quantization"),
            (
                ("model", "prequantized"),
                self.model.prequantized is not None,
                "a pre-quantized base",
            ),
            (("model", "rope_scaling"), self.model.rope_scaling is not None, "rope_scaling"),
            (("data", "packing"), self.data.packing, "data.packing"),
            (("distributed",), self.distributed.kind != "single", "distributed training"),
            (("serve", "lora_adapter"), self.serve.lora_adapter, "serve.lora_adapter"),
            (("export", "quantization"), self.export.quantization != "none", "quantized export"),
            (
                ("export", "ollama"),
                "ollama" in self.export.model_fields_set and self.export.ollama,
                "an Ollama Modelfile",
            ),
        ]
        for at, broken, what in refused:
            if broken:
                kind = "an audio" if hears else "an image"
                raise RuleError(at, f"not supported yet: {what} with {kind} model")

    def _method_rules(self) -> None:
        """Fine-tuning methods that cannot be combined, each refused at its key."""
        adapter, stage = self.adapter, self.stage.kind
        quantization = self.model.quantization
        if quantization is not None and adapter.kind != "lora":
            raise RuleError(
                ("model", "quantization"),
                f"a quantized base model cannot be trained with adapter {adapter.kind}: its "
                "weights are frozen integers. QLoRA trains LoRA adapters on it: adapter: lora",
            )
        if quantization is not None and self.distributed.kind == "fsdp":
            raise RuleError(
                ("model", "quantization"),
                "FSDP cannot shard bitsandbytes-quantized weights here: use distributed: ddp",
            )
        distributed = self.distributed
        if (
            quantization is not None
            and isinstance(distributed, DeepspeedDistributed)
            and distributed.zero_stage == 3
        ):
            raise RuleError(
                ("model", "quantization"),
                "ZeRO-3 partitions floating-point parameters, and bitsandbytes stores quantized "
                "weights as integers (uint8) unless bnb_4bit_quant_storage is the model dtype, "
                "which lfc does not set: use distributed.zero_stage 2 with model.quantization",
            )
        if quantization is not None and stage == "ppo":
            message = "the ppo stage loads four models in full precision: no quantization"
            raise RuleError(("model", "quantization"), message)
        if isinstance(adapter, LoraAdapter):
            if (
                adapter.loraplus_lr_ratio is not None
                and isinstance(distributed, DeepspeedDistributed)
                and distributed.offload_optimizer
            ):
                raise RuleError(
                    ("adapter", "loraplus_lr_ratio"),
                    "distributed.offload_optimizer makes DeepSpeed build its own (CPU) "
                    "optimizer, which would drop LoRA+'s learning-rate groups: turn one off",
                )
            if adapter.loraplus_lr_ratio is not None and stage == "ppo":
                raise RuleError(
                    ("adapter", "loraplus_lr_ratio"),
                    "TRL 1.12's PPOTrainer builds its own optimizer: LoRA+ is not available "
                    "for stage ppo",
                )
            if adapter.init in ("pissa", "olora") and quantization is not None:
                raise RuleError(
                    ("adapter", "init"),
                    f"{adapter.init} initialises from the full-precision weights; it cannot "
                    "start from a quantized model: remove model.quantization or the init",
                )
            if adapter.init in CONVERTED_INITS and stage in ("ppo", "rm"):
                message = f"init {adapter.init} is for generative stages (not {stage})"
                raise RuleError(("adapter", "init"), message)
        self._optimizer_rules()
        if getattr(adapter, "llama_pro", None) is not None and stage == "ppo":
            raise RuleError(
                ("adapter", "llama_pro"),
                "the ppo stage starts its policy, value and reference models from the base "
                "model: LLaMA Pro expansion is not available for stage ppo",
            )
        if self.train.neftune_alpha is not None and stage in ("rm", "ppo", "grpo"):
            raise RuleError(
                ("train", "neftune_alpha"),
                f"NEFTune noises the embeddings of supervised answers; stage {stage} does "
                "not train that way: remove neftune_alpha",
            )
        self._kernel_rules()

    def _kernel_rules(self) -> None:
        """GPU kernels, LoftQ, pre-quantized bases and Unsloth: their combinations first (so
        each rule is reachable), then what is not generated yet, then the CUDA target."""
        model, adapter, stage = self.model, self.adapter, self.stage.kind
        if model.prequantized in UNSUPPORTED_PREQUANTIZED:
            raise RuleError(
                ("model", "prequantized"),
                f"{UNSUPPORTED_PREQUANTIZED[model.prequantized]}: use a GPTQ, AWQ or AQLM "
                "base, or model.quantization (bitsandbytes QLoRA) on the full-precision model",
            )
        if model.loader == "unsloth":
            self._unsloth_rules()
        if model.attn_implementation == "flash_attention_2" and model.dtype not in (
            "bfloat16",
            "float16",
        ):
            raise RuleError(
                ("model", "attn_implementation"),
                "flash_attention_2 computes in bfloat16 or float16 only: set model.dtype "
                "bfloat16 or float16",
            )
        prequantized = model.prequantized
        if prequantized is not None:
            if adapter.kind != "lora":
                raise RuleError(
                    ("model", "prequantized"),
                    f"the {prequantized} model's weights are frozen integers: adapter "
                    f"{adapter.kind} cannot train them; train LoRA adapters on it (adapter: lora)",
                )
            if model.quantization is not None:
                raise RuleError(
                    ("model", "quantization"),
                    f"the base model is already {prequantized}-quantized: remove "
                    "model.quantization",
                )
            if adapter.init in CONVERTED_INITS:
                raise RuleError(
                    ("adapter", "init"),
                    f"init {adapter.init} {'reads' if adapter.init == 'loftq' else 'rewrites'} "
                    "the full-precision base weights; a "
                    f"{prequantized} model has none: use init default or gaussian",
                )
            if stage == "ppo":
                message = "the ppo stage loads four models in full precision: no prequantized base"
                raise RuleError(("model", "prequantized"), message)
            if self.export.extra_adapters or self.export.quantization != "none":
                key = "extra_adapters" if self.export.extra_adapters else "quantization"
                raise RuleError(
                    ("export", key),
                    f"peft cannot merge LoRA into {prequantized} layers (they have no merge "
                    "method), and export." + key + " works on the merged model: remove it",
                )
            defaults = {"dtype": "auto", "max_shard_size": "5GB"}
            for key, default in defaults.items():
                if getattr(self.export, key) != default:
                    raise RuleError(
                        ("export", key),
                        f"the {prequantized} base exports its LoRA adapter as trained, not a "
                        f"merged model: export.{key} has nothing to apply to; remove it",
                    )
            if isinstance(adapter, LoraAdapter) and adapter.target == "all-linear":
                layers = "aqlm's QuantizedLinear" if prequantized == "aqlm" else "gptqmodel's"
                layers += " modules, not torch Linear"
                raise RuleError(
                    ("adapter", "target"),
                    f"peft 0.21.2's all-linear picks torch Linear layers only, and this "
                    f"{prequantized} model's are {layers} (it would find none): list the "
                    "modules, e.g. [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]",
                )
            if prequantized == "aqlm" and isinstance(adapter, LoraAdapter) and adapter.dora:
                raise RuleError(
                    ("adapter", "dora"),
                    "peft 0.21.2 has no DoRA for AQLM layers (AqlmLoraLinear refuses use_dora): "
                    "remove adapter.dora",
                )
            if prequantized in NOT_SERVED_BY_VLLM:
                vllm_only = {"lora_adapter": False, "tensor_parallel_size": 1}
                vllm_only["gpu_memory_utilization"] = 0.9
                for key, default in vllm_only.items():
                    if getattr(self.serve, key) != default:
                        raise RuleError(
                            ("serve", key),
                            f"vLLM 0.33 has no {prequantized} quantization method, so it cannot "
                            f"load this base and no serve_vllm.sh is written (serve.py serves "
                            f"the base + the adapter): serve.{key} has nothing to apply to; "
                            "remove it",
                        )
        if isinstance(adapter, LoraAdapter) and adapter.init == "loftq":
            self._loftq_rules()
        served_by_vllm = prequantized not in NOT_SERVED_BY_VLLM
        if prequantized is not None and served_by_vllm and not self.serve.lora_adapter:
            raise RuleError(
                ("model", "prequantized"),
                f"peft cannot merge LoRA into {prequantized} layers, so there is no merged model "
                "to serve: set serve.lora_adapter: true (vLLM serves the base + the adapter)",
            )
        if self.pins.target == "cpu":
            needs_cuda = [
                (
                    ("model", "attn_implementation"),
                    model.attn_implementation == "flash_attention_2",
                    "flash_attention_2 runs flash-attn's CUDA kernels",
                ),
                (
                    ("train", "liger_kernel"),
                    self.train.liger_kernel,
                    "Liger kernels are Triton kernels for CUDA GPUs",
                ),
                (
                    ("model", "prequantized"),
                    prequantized in ("gptq", "awq"),
                    "gptqmodel (which transformers loads GPTQ and AWQ weights with) is resolved "
                    "and pinned for the CUDA set only",
                ),
            ]
            for at, used, reason in needs_cuda:
                if used:
                    raise RuleError(
                        at,
                        f"{reason}; pins.target cpu has none: set pins.target cuda13.0, or "
                        f"remove {'.'.join(at)}",
                    )
        if prequantized in ("gptq", "awq") and "swanlab" in self.train.report_to:
            # pip 26.3's dry run of the cuda13.0 set with both: ResolutionImpossible.
            raise RuleError(
                ("train", "report_to", self.train.report_to.index("swanlab")),
                "swanlab 0.7.20 requires protobuf<7 and gptqmodel 7.6.0 (which loads the "
                f"{prequantized} base) requires protobuf>=7.34.0, so pip cannot install both: "
                "report to wandb, mlflow or tensorboard, or train an unquantized base",
            )

    def _unsloth_rules(self) -> None:
        """What unsloth 2026.10.9's FastLanguageModel path takes (read in its source), and
        what lfc generates for it: text models, LoRA (init default or gaussian) or full
        fine-tuning, on the cuda13.0 set's Unsloth pins. Its source handles DDP, accelerate's
        FSDP2 launch and DeepSpeed ZeRO, so every distributed kind compiles."""
        model, adapter, stage = self.model, self.adapter, self.stage.kind
        at = ("model", "loader")
        if model.multimodal is not None:
            message = "FastLanguageModel loads text models: no model.multimodal with Unsloth"
            raise RuleError(at, message)
        if stage in ("rm", "ppo"):
            what = {
                "rm": "trains a sequence classifier (AutoModelForSequenceClassification)",
                "ppo": "trains a value model and scores with a reward model, both sequence "
                "classifiers, beside the policy (TRL 1.12's PPOTrainer)",
            }[stage]
            raise RuleError(
                ("stage", "kind"),
                f"stage {stage} {what}; Unsloth's FastLanguageModel loads causal LMs: use "
                "loader transformers",
            )
        if isinstance(adapter, FreezeAdapter):
            raise RuleError(
                ("adapter", "kind"),
                "Unsloth trains LoRA adapters (get_peft_model) or every weight "
                "(full_finetuning); freezing layers"
                f"{' (LLaMA Pro)' if adapter.llama_pro is not None else ''} is not one of its "
                "paths: use adapter lora or full, or loader transformers",
            )
        if isinstance(adapter, LoraAdapter) and adapter.init in CONVERTED_INITS:
            raise RuleError(
                ("adapter", "init"),
                f"lfc rewrites {adapter.init} adapters as plain LoRA with peft's conversion, "
                "which is not generated for Unsloth's LoRA: use init default or gaussian, or "
                "loader transformers",
            )
        if model.prequantized is not None:
            gptq = model.prequantized in ("gptq", "awq")
            raise RuleError(
                ("model", "prequantized"),
                f"{'GPTQ/AWQ' if gptq else 'AQLM'} bases are not generated for Unsloth "
                f"({'gptqmodel' if gptq else 'aqlm'} was resolved with the transformers 5.24 "
                "set only): use loader transformers",
            )
        if model.attn_implementation != "sdpa":
            raise RuleError(
                ("model", "attn_implementation"),
                "Unsloth picks its own attention kernels (its from_pretrained drops "
                "attn_implementation): remove model.attn_implementation",
            )
        if self.train.liger_kernel:
            raise RuleError(
                ("train", "liger_kernel"),
                "Unsloth and Liger each replace the model's RMSNorm, RoPE, MLP and "
                "cross-entropy with their own Triton kernels, and liger-kernel was resolved "
                "with the transformers 5.24 set only: turn one off",
            )
        if model.rope_scaling is not None:
            raise RuleError(
                ("model", "rope_scaling"),
                "Unsloth scales RoPE itself when data.cutoff_len (its max_seq_length) exceeds "
                "the model's positions; model.rope_scaling is not generated for it: remove it",
            )
        if self.train.optimizer.kind != "adamw":
            raise RuleError(
                ("train", "optimizer", "kind"),
                f"{self.train.optimizer.kind}'s package was resolved with the transformers "
                "5.24 sets only, not with Unsloth's transformers 5.17 set: use adamw, or "
                "loader transformers",
            )
        if self.pins.target == "cpu":
            raise RuleError(
                at,
                "Unsloth's kernels need a GPU (on a CPU it falls back to plain transformers + "
                "peft + TRL, which loader transformers already is), and unsloth 2026.10.9 "
                "requires transformers<=5.17.0, trl<=1.15.0 and datasets<5.0.0, below the "
                "tested cpu set: set pins.target cuda13.0, or use loader transformers",
            )

    def _loftq_rules(self) -> None:
        """What peft 0.21's replace_lora_weights_loftq needs: bitsandbytes 4-bit layers (QLoRA,
        which image models do not have yet) and a CUDA device."""
        quantization = self.model.quantization
        if quantization is None:
            raise RuleError(
                ("adapter", "init"),
                "init loftq fits the adapters to the 4-bit copy of each weight (QLoRA): add "
                "model.quantization: {bits: 4}, or use init default",
            )
        if quantization.bits != 4:
            raise RuleError(
                ("model", "quantization", "bits"),
                "peft's replace_lora_weights_loftq works on bitsandbytes 4-bit layers only: "
                "set bits 4, or use init default",
            )
        if self.pins.target == "cpu":
            raise RuleError(
                ("adapter", "init"),
                "peft 0.21's replace_lora_weights_loftq computes on a CUDA (or XPU) device "
                "only (CPU torch fails: Torch not compiled with CUDA enabled): set "
                "pins.target cuda13.0, or use init default",
            )

    def _tracking_rules(self) -> None:
        """The tracking section needs a tracker that reads it; MLflow online needs a server."""
        named = [t for t in self.train.report_to if t in NAMED_TRACKERS]
        tracking = self.tracking
        if tracking is None:
            return
        if not named:
            raise RuleError(
                ("tracking",),
                "tracking names the runs of wandb, mlflow and swanlab, but train.report_to has "
                "none of them: add one there or remove tracking",
            )
        if tracking.mlflow_tracking_uri is not None and "mlflow" not in named:
            raise RuleError(
                ("tracking", "mlflow_tracking_uri"),
                "mlflow_tracking_uri is for the mlflow tracker: add mlflow to train.report_to "
                "or remove it",
            )
        if tracking.mode == "online" and "mlflow" in named and not tracking.mlflow_tracking_uri:
            raise RuleError(
                ("tracking", "mode"),
                "mode online sends MLflow runs to a server: set tracking.mlflow_tracking_uri "
                "(http://...), or use mode offline",
            )

    def _optimizer_rules(self) -> None:
        """GaLore, APOLLO and BAdam: what each one can train with, refused at its key."""
        optimizer, at = self.train.optimizer, ("train", "optimizer", "kind")
        kind, adapter, distributed = optimizer.kind, self.adapter.kind, self.distributed.kind
        if kind == "adamw":
            return
        if self.stage.kind == "ppo":
            message = f"TRL 1.12's PPOTrainer builds its own optimizer: no {kind} for stage ppo"
            raise RuleError(at, message)
        if distributed in ("fsdp", "deepspeed"):
            raise RuleError(
                at,
                f"{kind} steps whole (unsharded) parameters: it cannot run under "
                f"distributed: {distributed}; use ddp or one process",
            )
        if isinstance(optimizer, GaloreOptimizer | ApolloOptimizer):
            if adapter == "lora":
                raise RuleError(
                    at,
                    f"{kind} projects the gradients of the model's own weight matrices; LoRA "
                    "trains small adapters instead: use adapter full (or freeze), or no "
                    f"{kind}",
                )
            if optimizer.layerwise and self.train.grad_accum != 1:
                raise RuleError(
                    ("train", "optimizer", "layerwise"),
                    f"layer-wise {kind} steps during the backward pass, so it cannot "
                    "accumulate gradients: set train.grad_accum 1",
                )
            if optimizer.layerwise and distributed != "single":
                raise RuleError(
                    ("train", "optimizer", "layerwise"),
                    f"transformers 5.24 runs layer-wise {kind} in one process only (not "
                    f"{distributed}): set layerwise false",
                )
            return
        if adapter != "full":
            raise RuleError(
                at,
                f"BAdam trains every parameter, one block of layers at a time: it needs "
                f"adapter full (not {adapter})",
            )
        if self.stage.kind not in ("sft", "pt"):
            message = f"BAdam is built for stages sft and pt here, not {self.stage.kind}"
            raise RuleError(at, message)
        if distributed != "single":
            raise RuleError(
                at, "BAdam's block switching runs in one process here: use distributed: single"
            )

    @field_validator("adapter", "stage", "distributed", mode="before")
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
