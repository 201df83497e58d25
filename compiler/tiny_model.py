"""`lfc tiny-model DIR`: a tiny random-weight Llama model with a byte-level BPE tokenizer.

Built locally and deterministically in seconds, so examples and tests run where no model hub
is reachable. Its vocabulary holds the special tokens of every text registry template;
`template` picks the bos/eos that family's tokenizer has. `architecture="llava"` builds a
LLaVA image-text model instead (CLIP vision tower, projector, the Llama as language model)
with its processor (a PIL CLIP image processor, no torchvision) and the `llava` template;
`architecture="qwen2_vl"` a Qwen2-VL model (its ViT and patch merger, a Qwen2-VL language
model of the same tiny size) with its processor and the `qwen2_vl` template;
`architecture="qwen2_5_vl"` the same for Qwen2.5-VL (its windowed ViT, RMSNorm and SwiGLU
blocks), with the same template. Their processors hold a video processor, which needs
torchvision: build them where the qwen2_vl pins (torch 2.14.1, torchvision 0.29.1) are
installed. `architecture="qwen2_audio"` builds a Qwen2-Audio model (a one-layer Whisper-style
audio encoder, its projector, a Qwen2 language model of the same tiny size) with its processor
(a WhisperFeatureExtractor: 128 mel bins, 16 kHz, 30 s windows; no torchaudio) and the
`qwen2_audio` template.
Needs the optional stack (`pip install 'lfc[tiny]'`); imported only by that command.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Literal

from lfc.chat_templates import get_template, template_names

BASE_TOKENS = ("<|begin_of_text|>", "<|end_of_text|>", "<|pad|>")
DEFAULT_BOS, DEFAULT_EOS, PAD = BASE_TOKENS


Architecture = Literal["llama", "llava", "qwen2_vl", "qwen2_5_vl", "qwen2_audio"]
ARCHITECTURES: tuple[Architecture, ...] = (
    "llama",
    "llava",
    "qwen2_vl",
    "qwen2_5_vl",
    "qwen2_audio",
)
# The template each media-text architecture is built with.
TEMPLATES = {
    "llava": "llava",
    "qwen2_vl": "qwen2_vl",
    "qwen2_5_vl": "qwen2_vl",
    "qwen2_audio": "qwen2_audio",
}
# The image model's image: 28x28 pixels, 14x14 patches, so 4 image tokens per image.
IMAGE_SIZE, PATCH_SIZE = 28, 14


def special_tokens(architecture: Architecture = "llama") -> list[str]:
    """The base tokens, then every token the architecture's templates write (sorted, stable).

    A text model gets every text template's tokens; an image or audio model its own
    template's only.
    """
    found: set[str] = set()
    for name in template_names():
        entry = get_template(name)
        if architecture == "llama" and (entry.image_token or entry.audio_token):
            continue
        if architecture != "llama" and name != TEMPLATES[architecture]:
            continue
        found.update(entry.special_tokens, entry.stop_tokens)
        found.update(t for t in (entry.bos_token, entry.eos_token) if t)
    return [*BASE_TOKENS, *sorted(found - set(BASE_TOKENS))]


_WORDS = (
    "the a an and or but if then when while of to in on at by for with from as is are was were "
    "be been being have has had do does did can could will would should may might must not no "
    "yes you your we our they their he she it its this that these those there here what which "
    "who whom how why where all any each some many much more most few less least other such "
    "make made use used work works water food time year day people world life hand part place "
    "case point number group problem fact write describe explain list give find create answer "
    "question example process step steps first second third next finally important help model "
    "data train learning language text word sentence story poem recipe cook crepes flour eggs "
    "milk butter salt sugar health exercise sleep energy climate science history city country "
    "computer program code python function value result system user assistant human"
).split()


def _corpus(lines: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 14))]
        sentence = " ".join(words).capitalize() + rng.choice([".", "?", "!", ":", ","])
        if rng.random() < 0.2:
            sentence += f" {rng.randint(0, 2024)}"
        out.append(sentence)
    out.append("".join(chr(c) for c in range(32, 127)))
    return out


def build_tiny_model(
    out: Path,
    vocab_size: int = 2048,
    hidden_size: int = 64,
    layers: int = 2,
    seed: int = 0,
    template: str | None = None,
    architecture: Architecture = "llama",
) -> Path:
    """Write a tokenizer and a random Llama (LLaVA, Qwen2-VL, Qwen2-Audio) model into `out`."""
    if architecture != "llama":
        template = template or TEMPLATES[architecture]
    entry = get_template(template) if template else None
    bos = (entry and entry.bos_token) or DEFAULT_BOS
    eos = (entry and entry.eos_token) or DEFAULT_EOS
    try:
        import torch
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    except ImportError as exc:
        raise SystemExit(
            f"lfc tiny-model needs torch, transformers and tokenizers ({exc.name} is missing): "
            "pip install 'lfc[tiny]'"
        ) from None

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens(architecture),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(20_000, seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=bos,
        eos_token=eos,
        pad_token=PAD,
        model_max_length=2048,
    )

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False,
    )
    out.mkdir(parents=True, exist_ok=True)
    if architecture == "llava":
        _save_llava(out, config, fast, get_template(template).source)
        return out
    if architecture in ("qwen2_vl", "qwen2_5_vl"):
        _save_qwen_vl(out, config, fast, get_template(template).source, architecture)
        return out
    if architecture == "qwen2_audio":
        _save_qwen2_audio(out, config, fast, get_template(template).source)
        return out
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    fast.save_pretrained(out)
    return out


def _save_llava(out: Path, text_config, tokenizer, chat_template: str) -> None:
    """A LLaVA model around the Llama `text_config`, and its processor, saved in `out`."""
    from transformers import (
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=32,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text_config,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",  # patch features, the CLS one dropped
        vision_feature_layer=-1,
    )
    LlavaForConditionalGeneration(config).save_pretrained(out)
    images = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor = LlavaProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the CLS token the vision tower adds
        chat_template=chat_template,
    )
    processor.save_pretrained(out)


# What a Qwen2 language model inside a multimodal model takes from the tiny Llama's config.
_QWEN2_TEXT_SIZES = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
)


def _qwen2_text_sizes(text_config) -> dict:
    """The Llama `text_config`'s sizes and special ids, for a Qwen2 text config."""
    return {key: getattr(text_config, key) for key in _QWEN2_TEXT_SIZES}


def _save_qwen_vl(
    out: Path, text_config, tokenizer, chat_template: str, architecture: Architecture
) -> None:
    """A Qwen2-VL (Qwen2.5-VL) model with the sizes of the Llama `text_config`, and its
    processor, in `out`."""
    try:
        from transformers import (
            Qwen2_5_VLConfig,
            Qwen2_5_VLForConditionalGeneration,
            Qwen2_5_VLProcessor,
            Qwen2VLConfig,
            Qwen2VLForConditionalGeneration,
            Qwen2VLProcessor,
        )
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil,
        )
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor
    except ImportError as exc:
        raise SystemExit(
            f"a tiny {architecture} model needs torchvision for its video processor ({exc.name} is "
            "missing): pip install torch==2.14.1 torchvision==0.29.1"
        ) from None

    head_dim = text_config.hidden_size // text_config.num_attention_heads
    text = _qwen2_text_sizes(text_config)
    # Multimodal RoPE: the rotary half of each head split over time, height and width.
    half = head_dim // 2
    sections = [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8]
    text["rope_parameters"] = {"rope_type": "default", "mrope_section": sections}
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in _QWEN2_VL_IDS.items()}
    vision = {
        "depth": 1,
        "num_heads": 2,
        "patch_size": PATCH_SIZE,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    if architecture == "qwen2_vl":
        vision.update(embed_dim=32, mlp_ratio=2, hidden_size=text_config.hidden_size)
        classes = (Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor)
    else:
        # Qwen2.5-VL: hidden_size is the ViT's width, out_hidden_size the merger's output.
        vision.update(
            hidden_size=32,
            intermediate_size=64,
            out_hidden_size=text_config.hidden_size,
            window_size=4 * PATCH_SIZE,
            fullatt_block_indexes=[0],
            tokens_per_second=2,
        )
        classes = (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor)
    config_class, model_class, processor_class = classes
    config = config_class(vision_config=vision, text_config=text, tie_word_embeddings=False, **ids)
    model_class(config).save_pretrained(out)
    # A 28x28 image is one merged 2x2 group of patches: its smallest size, one image token.
    images = Qwen2VLImageProcessorPil(
        min_pixels=IMAGE_SIZE * IMAGE_SIZE, max_pixels=4 * IMAGE_SIZE * IMAGE_SIZE
    )
    processor = processor_class(
        image_processor=images,
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=chat_template,
    )
    processor.save_pretrained(out)


_QWEN2_VL_IDS = {
    "image_token_id": "<|image_pad|>",
    "video_token_id": "<|video_pad|>",
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
}


def _save_qwen2_audio(out: Path, text_config, tokenizer, chat_template: str) -> None:
    """A Qwen2-Audio model with the sizes of the Llama `text_config`, and its processor."""
    from transformers import (
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    text = _qwen2_text_sizes(text_config)
    text["model_type"] = "qwen2"
    config = Qwen2AudioConfig(
        # Qwen2-Audio's encoder shape (128 mel bins, 1500 positions: one 30 s window), shrunk.
        audio_config={
            "model_type": "qwen2_audio_encoder",
            "num_mel_bins": 128,
            "encoder_layers": 1,
            "encoder_attention_heads": 2,
            "encoder_ffn_dim": 64,
            "d_model": 32,
            "max_source_positions": 1500,
        },
        text_config=text,
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
        tie_word_embeddings=False,
    )
    Qwen2AudioForConditionalGeneration(config).save_pretrained(out)
    features = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, chunk_length=30)
    processor = Qwen2AudioProcessor(
        feature_extractor=features, tokenizer=tokenizer, chat_template=chat_template
    )
    processor.save_pretrained(out)
