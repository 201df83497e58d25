"""Tokenizer, base model and LoRA adapter of this project.

Imported by data.py, train.py, chat.py and export.py; not run on its own.
"""

from pathlib import Path

from peft import LoraConfig, PeftModel
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from config import Args, LoraArguments, ModelArguments

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


def load_for_inference(
    args: Args,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    """The model chat.py and serve.py answer with, its tokenizer, and where it came from.

    The export when export.py has run, otherwise the base model plus the trained adapter.
    """
    trust = args.trust_remote_code
    tokenizer = load_tokenizer(args.model, trust)
    if Path(args.export.export_dir).is_dir():
        model = load_model(args.model, args.export.export_dir, trust)
        origin = f"{args.export.export_dir}/"
    else:
        model = load_model(args.model, trust_remote_code=trust)
        model = PeftModel.from_pretrained(model, args.training.output_dir)
        adapter = args.training.output_dir
        origin = f"{args.model.model_name_or_path} + adapter {adapter}/"
    return model.eval(), tokenizer, origin


def lora_config(args: LoraArguments) -> LoraConfig:
    """LoRA on the target modules; `all-linear` means every linear layer but the output head."""
    targets = args.lora_target_modules
    return LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        task_type="CAUSAL_LM",
    )
