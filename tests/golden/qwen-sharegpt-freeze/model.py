"""Tokenizer, base model and layer freezing of this project.

Imported by data.py, train.py, chat.py and export.py; not run on its own.
"""

from pathlib import Path

from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from config import Args, FreezeArguments, ModelArguments

TEMPLATE_FILE = Path(__file__).with_name("chat_template.jinja")
CHAT_TEMPLATE = TEMPLATE_FILE.read_text(encoding="utf-8")
# The token that ends an assistant turn in chat_template.jinja; generation stops on it.
END_OF_TURN = "<|im_end|>"
# Tokens the template writes; each must be a single token of the tokenizer.
TEMPLATE_TOKENS = [
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
]


def load_tokenizer(
    args: ModelArguments, trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    """The model's fast tokenizer, with this project's chat template installed."""
    tokenizer = AutoTokenizer.from_pretrained(
        args.model_name_or_path,
        revision=args.model_revision,
        trust_remote_code=trust_remote_code,
    )
    if not tokenizer.is_fast:
        raise SystemExit(f"{args.model_name_or_path}: needs a fast (Rust) tokenizer")
    vocab = tokenizer.get_vocab()
    missing = [token for token in TEMPLATE_TOKENS if token not in vocab]
    if missing:
        raise SystemExit(
            f"{args.model_name_or_path}: the tokenizer lacks the chat template's tokens {missing}; "
            "pick the template of this model family in the spec"
        )
    tokenizer.chat_template = CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        # Labels of padding are -100 anyway, so the end-of-text token can double as padding.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids that end generation: the template's end of turn and the tokenizer's eos."""
    ids = [tokenizer.convert_tokens_to_ids(END_OF_TURN)]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def load_model(
    args: ModelArguments,
    path: str | None = None,
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """The causal LM from `path` (default: the base model), in the configured dtype."""
    return AutoModelForCausalLM.from_pretrained(
        path or args.model_name_or_path,
        revision=None if path else args.model_revision,
        dtype=args.dtype,
        attn_implementation=args.attn_implementation,
        trust_remote_code=trust_remote_code,
    )


def load_for_inference(
    args: Args,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    """The model chat.py and serve.py answer with, its tokenizer, and where it came from.

    The export when export.py has run, otherwise the base model with the trained weights.
    """
    trust = args.trust_remote_code
    tokenizer = load_tokenizer(args.model, trust)
    if Path(args.export.export_dir).is_dir():
        model = load_model(args.model, args.export.export_dir, trust)
        origin = f"{args.export.export_dir}/"
    else:
        model = load_model(args.model, args.training.output_dir, trust)
        origin = f"{args.training.output_dir}/"
    return model.eval(), tokenizer, origin


def freeze(model: PreTrainedModel, args: FreezeArguments) -> None:
    """Train only the last `freeze_trainable_layers` decoder layers and the extra modules."""
    num_layers = model.config.num_hidden_layers
    if not 0 < args.freeze_trainable_layers <= num_layers:
        raise SystemExit(
            f"freeze_trainable_layers={args.freeze_trainable_layers}, "
            f"but the model has {num_layers} layers"
        )
    layers = range(num_layers - args.freeze_trainable_layers, num_layers)
    trainable = [f".layers.{index}." for index in layers]
    for name, parameter in model.named_parameters():
        in_layer = any(marker in f".{name}" for marker in trainable)
        extra = any(name.startswith(prefix) for prefix in args.freeze_extra_modules)
        parameter.requires_grad_(in_layer or extra)
