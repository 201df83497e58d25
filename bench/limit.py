"""The limit: the fast tokenizer's own batch encoding of already-rendered conversations.

Untimed: read the sharegpt rows, render each with the Llama 3 chat template through
`tokenizer.apply_chat_template(tokenize=False)`. Timed: `tokenizers.Tokenizer.encode_batch`
(with offsets, as data.py needs them) in batches of 1,000, no special tokens added. The thread
count is the caller's RAYON_NUM_THREADS / TOKENIZERS_PARALLELISM. Prints one JSON line.

    RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false python bench/limit.py MODEL DATA.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

BATCH = 1000
ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


def messages(row: dict) -> list[dict[str, str]]:
    out = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    out += [{"role": ROLES[t["from"]], "content": t["value"]} for t in row["conversations"]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--template", default="llama3")
    args = parser.parse_args()

    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from lfc.chat_templates import get_template

    started = time.perf_counter()
    source = get_template(args.template).source
    hf = AutoTokenizer.from_pretrained(args.model)
    with open(args.data, encoding="utf-8") as rows:
        conversations = [messages(json.loads(line)) for line in rows if line.strip()]
    texts = [hf.apply_chat_template(m, chat_template=source, tokenize=False) for m in conversations]
    render_s = time.perf_counter() - started

    tokenizer = Tokenizer.from_file(str(args.model / "tokenizer.json"))
    tokens = 0
    started = time.perf_counter()
    for begin in range(0, len(texts), BATCH):
        encodings = tokenizer.encode_batch(texts[begin : begin + BATCH], add_special_tokens=False)
        tokens += sum(len(e.ids) for e in encodings)
    encode_s = time.perf_counter() - started
    result = {"samples": len(texts), "tokens": tokens, "encode_s": encode_s, "render_s": render_s}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
