"""Seeded synthetic text: sharegpt conversations for the benchmark and a corpus for a tokenizer.

Words come from words.txt (the 6,000 most common English words of LLaMA-Factory's demo data,
with their counts, so common words are common), plus seeded pseudo-words made of syllables
(names, jargon; 2% of the words), numbers, punctuation, numbered lists and small code blocks.
Everything is a pure function of the seed: the same seed gives the same bytes on any machine.

    python bench/synth.py OUT.jsonl --samples 20000 --seed 0
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
from pathlib import Path

WORDS_FILE = Path(__file__).with_name("words.txt")
# Bump when the generator changes, so cached data files are not reused across versions.
VERSION = 2

_ONSETS = "b c d f g h j k l m n p r s t v w z br ch cl cr dr fl gr kr pl pr sh sk st th tr".split()
_VOWELS = "a e i o u ai ea ee ia io oa ou y".split()
_CODAS = [""] * 6 + "n r s t l m x nd rk st ng".split()


def load_words() -> tuple[list[str], list[int]]:
    """The vocabulary and its cumulative weights (for random.choices)."""
    words, counts = [], []
    for line in WORDS_FILE.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            word, count = line.split()
            words.append(word)
            counts.append(int(count))
    return words, list(itertools.accumulate(counts))


def pseudo_words(count: int, seed: int) -> list[str]:
    """`count` distinct made-up words of 2-4 syllables (names, product names, jargon)."""
    rng = random.Random(f"pseudo-{seed}")
    found: dict[str, None] = {}
    while len(found) < count:
        syllables = rng.choice((2, 2, 3, 3, 4))
        word = "".join(
            rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)
        )
        found.setdefault(word)
    return list(found)


class TextGenerator:
    """Word-level text with realistic shape; one instance per seed."""

    def __init__(self, seed: int, rare_words: int = 20_000) -> None:
        self.rng = random.Random(seed)
        self.words, self.cum = load_words()
        self.rare = pseudo_words(rare_words, seed)
        # Zipf-like weights over the rare words too: a few recur, most are seen once or twice.
        self.rare_cum = list(itertools.accumulate(1.0 / (i + 10) for i in range(len(self.rare))))

    def _word(self) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.02:
            word = rng.choices(self.rare, cum_weights=self.rare_cum)[0]
            return word.capitalize() if rng.random() < 0.6 else word
        if roll < 0.03:
            high = rng.choice((99, 2030, 10**6))
            return str(rng.randint(0, high))
        return rng.choices(self.words, cum_weights=self.cum)[0]

    def sentence(self, length: int) -> str:
        rng = self.rng
        words = rng.choices(self.words, cum_weights=self.cum, k=length)
        for i in range(length):
            if rng.random() < 0.03:
                words[i] = self._word()
            elif rng.random() < 0.06 and i < length - 1:
                words[i] += ","
        words[0] = words[0].capitalize()
        end = rng.choices((".", "?", "!", ":", ";"), weights=(80, 8, 4, 3, 2))[0]
        return " ".join(words) + end

    def paragraph(self, words: int) -> str:
        out, left = [], words
        while left > 0:
            n = min(left, max(1, int(self.rng.gauss(16, 6))))
            out.append(self.sentence(n))
            left -= n
        return " ".join(out)

    def code_block(self) -> str:
        rng = self.rng
        name = "_".join(rng.choices(self.words[:1500], k=2))
        arg = rng.choice(self.words[:800])
        lines = [f"def {name}({arg}):"]
        for _ in range(rng.randint(2, 8)):
            var = rng.choice(self.words[:800])
            lines.append(f"    {var} = {arg} * {rng.randint(1, 99)} + len({var!r})")
        lines.append(f"    return {arg}")
        return "```python\n" + "\n".join(lines) + "\n```"

    def answer(self, words: int) -> str:
        """An assistant turn: paragraphs, sometimes a numbered list or a code block."""
        rng = self.rng
        if words <= 3:
            return self.sentence(words)
        parts, left = [], words
        while left > 0:
            roll = rng.random()
            if roll < 0.15 and left > 30:
                items = rng.randint(3, 7)
                per = max(4, min(30, left // items))
                parts.append("\n".join(f"{i}. {self.sentence(per)}" for i in range(1, items + 1)))
                left -= items * per
            elif roll < 0.20 and left > 40:
                parts.append(self.code_block())
                left -= 30
            else:
                n = min(left, max(5, int(rng.gauss(70, 30))))
                parts.append(self.paragraph(n))
                left -= n
        return "\n\n".join(parts)

    def _lognormal(self, median: float, sigma: float, low: int, high: int) -> int:
        value = self.rng.lognormvariate(math.log(median), sigma)
        return max(low, min(high, int(value)))

    def conversation(self) -> dict:
        """2-6 user/assistant pairs; users write tens to ~200 words, answers 1 to ~800."""
        rng = self.rng
        turns = []
        for _ in range(rng.randint(2, 6)):
            user = self.paragraph(self._lognormal(35, 0.7, 6, 220))
            answer_words = 1 if rng.random() < 0.03 else self._lognormal(120, 0.8, 1, 800)
            turns.append({"from": "human", "value": user})
            turns.append({"from": "gpt", "value": self.answer(answer_words)})
        row = {"conversations": turns}
        if rng.random() < 0.3:
            row["system"] = self.paragraph(self._lognormal(20, 0.5, 5, 60))
        return row


def write_conversations(path: Path, samples: int, seed: int) -> Path:
    """Write `samples` sharegpt rows to `path` (a .jsonl), atomically."""
    gen = TextGenerator(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".tmp")
    with open(staging, "w", encoding="utf-8") as out:
        for _ in range(samples):
            out.write(json.dumps(gen.conversation(), ensure_ascii=False) + "\n")
    staging.replace(path)
    return path


def tokenizer_corpus(lines: int, seed: int) -> list[str]:
    """Text to train a BPE on: paragraphs, answers and every rare word, from its own seed."""
    gen = TextGenerator(seed + 1_000_003)
    out = [gen.answer(gen._lognormal(60, 0.8, 5, 400)) for _ in range(lines)]
    # Each made-up word a few times, so the vocabulary reaches real-tokenizer size.
    out.extend(" ".join(gen.rare[i : i + 50]) for i in range(0, len(gen.rare), 50))
    out.extend(" ".join(w.capitalize() for w in gen.rare[i : i + 50]) for i in range(0, 8000, 50))
    out.append("".join(chr(c) for c in range(32, 127)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_conversations(args.out, args.samples, args.seed)
    print(f"wrote {args.samples} conversations to {args.out}")


if __name__ == "__main__":
    main()
