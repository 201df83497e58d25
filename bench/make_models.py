"""The benchmark's two model folders, built locally and deterministically.

tiny: exactly what `lfc tiny-model DIR --template llama3` builds (a 2,048-token byte-level BPE
      trained on a ~200-word corpus, so most real words split into several tokens).
bpe32k: the same random Llama, with a 32,000-token byte-level BPE trained here on synthetic
        text with Llama 3's pre-tokenizer split, and its embeddings resized to match. Llama 3's
        special tokens are single tokens in it, so `lfc compile` accepts it for template llama3.

    python bench/make_models.py OUT_DIR [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from synth import VERSION, tokenizer_corpus  # noqa: E402

# Llama 3's (tiktoken cl100k-style) pre-tokenizer split.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_TOKENS = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
BIG_VOCAB = 32_000
BUILDER_VERSION = 1


def _stamp(folder: Path) -> dict:
    path = folder / "bench_model.json"
    return json.loads(path.read_text()) if path.exists() else {}


def build_tiny(out: Path, seed: int) -> Path:
    from lfc.tiny_model import build_tiny_model

    build_tiny_model(out, seed=seed, template="llama3")
    return out


def build_bpe32k(out: Path, seed: int) -> Path:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from lfc.tiny_model import DEFAULT_BOS, DEFAULT_EOS, PAD, build_tiny_model, special_tokens

    # Weights and config from lfc's tiny model; the tokenizer and embeddings are replaced below.
    build_tiny_model(out, seed=seed, template="llama3")

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BIG_VOCAB,
        special_tokens=special_tokens(),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(tokenizer_corpus(60_000, seed), trainer=trainer)
    size = tokenizer.get_vocab_size()
    if size < BIG_VOCAB:
        raise SystemExit(f"the BPE stopped at {size} tokens (< {BIG_VOCAB}): corpus too small")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=DEFAULT_BOS,
        eos_token=DEFAULT_EOS,
        pad_token=PAD,
        model_max_length=8192,
    )
    for token in LLAMA3_TOKENS:
        ids = fast.encode(token, add_special_tokens=False)
        assert len(ids) == 1, f"{token} is {len(ids)} tokens"

    model = AutoModelForCausalLM.from_pretrained(out)
    model.resize_token_embeddings(size)
    model.config.vocab_size = size
    model.config.bos_token_id = fast.bos_token_id
    model.config.eos_token_id = fast.eos_token_id
    model.config.pad_token_id = fast.pad_token_id
    for stale in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (out / stale).unlink(missing_ok=True)
    model.save_pretrained(out)
    fast.save_pretrained(out)
    return out


BUILDERS = {"tiny": build_tiny, "bpe32k": build_bpe32k}


def ensure_model(name: str, root: Path, seed: int) -> Path:
    """root/name built once per (generator version, seed); reused when already there."""
    out = root / name
    want = {"name": name, "seed": seed, "synth_version": VERSION, "builder": BUILDER_VERSION}
    if _stamp(out) == want:
        return out
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    BUILDERS[name](out, seed)
    (out / "bench_model.json").write_text(json.dumps(want) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=sorted(BUILDERS))
    args = parser.parse_args()
    for name in [args.only] if args.only else BUILDERS:
        folder = ensure_model(name, args.out, args.seed)
        print(f"{name}: {folder}")


if __name__ == "__main__":
    main()
