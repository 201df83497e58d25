"""data.py's fast path equals transformers' apply_chat_template, token for token.

Runs inside each compiled example, with the project's own modules and the tiny local model.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import compile_example, example_specs
from conversations import PLAIN

pytest.importorskip("trl")

PROBE = r"""
import json, sys
import data
from config import ModelArguments
from model import load_tokenizer

conversations = json.loads(sys.argv[1])
tokenizer = load_tokenizer(ModelArguments(model_name_or_path="../tiny-llama"))
template = data.compile_template(data.CHAT_TEMPLATE)
context = {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
context["add_generation_prompt"] = False
for path, fmt in data.DATASETS:
    rows = data.read_rows(path)[:40]
    conversations += [data.CONVERTERS[fmt](row) for row in rows]
checked = labelled = 0
for messages in conversations:
    text, spans = data.render(template, messages, context)
    batch = tokenizer([text], add_special_tokens=False, return_offsets_mapping=True)
    ids = batch["input_ids"][0]
    labels = data.label_tokens(ids, batch["offset_mapping"][0], spans)
    reference = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assert ids == reference["input_ids"], ("ids differ", messages)
    expected = [t if m else -100 for t, m in zip(reference["input_ids"], reference["assistant_masks"])]
    assert labels == expected, ("labels differ", messages)
    assert text == tokenizer.apply_chat_template(messages, tokenize=False)
    checked += 1
    labelled += sum(1 for x in labels if x != -100)
print(json.dumps({"checked": checked, "labelled": labelled}))
"""


@pytest.mark.parametrize("spec", example_specs(), ids=lambda p: p.stem)
def test_token_ids_and_labels_equal_apply_chat_template(
    spec: Path, tmp_path: Path, tiny_model: Path
) -> None:
    project = compile_example(spec.stem, tmp_path / "run", tiny_model)
    corpus = [c for c in PLAIN if c[-1]["role"] == "assistant"]
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(corpus)],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["checked"] >= len(corpus) + 12
    assert summary["labelled"] > 0


TRUNCATE = r"""
import json
import data
IG = data.IGNORE
# Turns: prompt (3 tokens), answer (2), prompt (3), answer (2) -> labels by position.
labels = [IG, IG, IG, 1, 1, IG, IG, IG, 2, 2]
ids = list(range(10))
cases = {n: data.truncate(ids, labels, n) for n in (9, 8, 6, 4, 2)}
print(json.dumps({n: [len(i), l] for n, (i, l) in cases.items()}))
"""


def test_truncation_keeps_whole_turns(tmp_path: Path) -> None:
    project = compile_example("quickstart", tmp_path / "run")
    result = subprocess.run(
        [sys.executable, "-c", TRUNCATE], cwd=project, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    cases = json.loads(result.stdout)
    IG = -100
    # The cut falls inside the second answer: back to the end of the first one.
    assert cases["9"] == [5, [IG, IG, IG, 1, 1]]
    # The cut falls in the second prompt: back to the end of the first answer.
    assert cases["8"] == [5, [IG, IG, IG, 1, 1]]
    assert cases["6"] == [5, [IG, IG, IG, 1, 1]]
    # The first answer does not fit whole: keep its beginning.
    assert cases["4"] == [4, [IG, IG, IG, 1]]
    # Not even one answer token fits: the row has no labels (data.py drops and counts it).
    assert cases["2"] == [2, [IG, IG]]
