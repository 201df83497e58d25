"""Tokenizer, base model and full fine-tuning setup of this project.

Imported by data.py, train.py, chat.py and export.py; not run on its own.
"""

from pathlib import Path

from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from config import ModelArguments

TEMPLATE_FILE = Path(__file__).with_name("chat_template.jinja")
CHAT_TEMPLATE = TEMPLATE_FILE.read_text(encoding="utf-8")
# The token that ends an assistant turn in chat_template.jinja; generation stops on it.
END_OF_TURN = "<|eot_id|>"
# Tokens the template writes; each must be a single token of the tokenizer.
TEMPLATE_TOKENS = [
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]
BOS_TOKEN = "<|begin_of_text|>"


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
    if tokenizer.bos_token != BOS_TOKEN:
        raise SystemExit(
            f"{args.model_name_or_path}: the template starts with {BOS_TOKEN} "
            f"but the tokenizer's bos_token is {tokenizer.bos_token!r}"
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


def load_reward_model(
    args: ModelArguments,
    tokenizer: PreTrainedTokenizerBase,
    trust_remote_code: bool = False,
    path: str | None = None,
) -> PreTrainedModel:
    """A sequence classifier with one output (a scalar score), from `path` or the base model.

    Its score is read at the last non-padding token, so the model must know the pad id.
    """
    model = AutoModelForSequenceClassification.from_pretrained(
        path or args.model_name_or_path,
        revision=None if path else args.model_revision,
        num_labels=1,
        dtype=args.dtype,
        attn_implementation=args.attn_implementation,
        trust_remote_code=trust_remote_code,
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    return model
