"""The training benchmark's two data sets, seeded: long multi-turn sharegpt and short alpaca.

long: bench/synth.py's `write_conversations` (2-6 turn conversations; most exceed 512 tokens of
      the tiny tokenizer, so the 512 cutoff truncates them and packing has little to gain).
short: alpaca rows (instruction, optional input, output) sized so that, rendered with the Llama 3
       template and lfc's tiny tokenizer (~2.9 tokens per word), a sample is about 50-300 tokens
       (target length uniform in that range): padding to the longest in a batch of 8 wastes
       about half the positions, which packing recovers.

Both are pure functions of the seed.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synth import TextGenerator, write_conversations  # noqa: E402

TOKENS_PER_WORD = 2.9  # lfc tiny-model's 2,048-token BPE on this text
TEMPLATE_TOKENS = 16  # Llama 3 headers and end-of-turn tokens around one exchange


def short_row(gen: TextGenerator, rng: random.Random, low: int = 50, high: int = 300) -> dict:
    target = rng.randint(low, high)
    words = max(6, round((target - TEMPLATE_TOKENS) / TOKENS_PER_WORD))
    instruction = max(3, round(words * rng.uniform(0.15, 0.35)))
    extra = round(words * rng.uniform(0.1, 0.3)) if rng.random() < 0.3 else 0
    output = max(1, words - instruction - extra)
    return {
        "instruction": gen.sentence(instruction),
        "input": gen.paragraph(extra) if extra else "",
        "output": gen.answer(output),
    }


def write_short(path: Path, samples: int, seed: int) -> Path:
    gen = TextGenerator(seed)
    rng = random.Random(f"short-{seed}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        for _ in range(samples):
            out.write(json.dumps(short_row(gen, rng), ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def write_long(path: Path, samples: int, seed: int) -> Path:
    return write_conversations(path, samples, seed)
