"""Check, at compile time, that a local model's tokenizer has the chat template's tokens.

Reading the tokenizer files is I/O at the edge; `missing_tokens` itself is pure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lfc.chat_templates import ChatTemplate
from lfc.errors import Problem, SpecError


def tokenizer_vocabulary(folder: Path) -> set[str] | None:
    """Every token of `folder/tokenizer.json` (vocabulary and added tokens), if readable."""
    try:
        data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    vocab = data.get("model", {}).get("vocab", {})
    tokens = set(vocab) if isinstance(vocab, dict) else {entry[0] for entry in vocab}
    tokens.update(t["content"] for t in data.get("added_tokens", []) if "content" in t)
    return tokens


def missing_tokens(template: ChatTemplate, vocabulary: set[str]) -> list[str]:
    """The template's required tokens that the vocabulary lacks, in template order."""
    wanted = [*template.special_tokens, *filter(None, (template.bos_token, template.eos_token))]
    return [t for t in dict.fromkeys(wanted) if t not in vocabulary]


def check_local_tokenizer(
    template: ChatTemplate,
    model_path: str,
    project: Path,
    add: bool,
    where: tuple[str, tuple[int, int] | None],
) -> list[str]:
    """Missing tokens of a local model (resolved from the project folder); raises unless `add`."""
    # Normalized, so `../model` works before the project folder exists.
    folder = Path(os.path.normpath(Path(project).absolute() / model_path))
    vocabulary = tokenizer_vocabulary(folder)
    if vocabulary is None:
        return []  # a hub id, or a folder not there yet: data.py checks when it runs
    missing = missing_tokens(template, vocabulary)
    if missing and not add:
        source, position = where
        line, column = position if position else (None, None)
        raise SpecError(
            [
                Problem(
                    source,
                    line,
                    column,
                    "model.name_or_path",
                    f"the tokenizer in {model_path} lacks the {template.name} template's tokens "
                    f"{missing}; pick this model family's template, or set "
                    "model.add_special_tokens: true to add them (the embeddings grow)",
                )
            ]
        )
    return missing
