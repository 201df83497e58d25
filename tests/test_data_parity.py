"""data.py's fast path equals transformers' apply_chat_template, token for token.

Runs inside each compiled example, with the project's own modules and the tiny local model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import compile_example, example_specs
from conversations import PLAIN

pytest.importorskip("trl")

PROBE = r"""
import itertools, json, sys
import data
from config import ModelArguments
from model import load_tokenizer

conversations = json.loads(sys.argv[1])
model = ModelArguments(model_name_or_path="../tiny-llama")
tokenizer = load_tokenizer(model)
data.start_worker(model, False, 10**6, False)
template, context = data.WORKER["template"], data.WORKER["context"]
conversation_stage = hasattr(data, "label_tokens")
examples = [{"messages": c} for c in conversations] if conversation_stage else []
for number in range(len(data.DATASETS)):
    for row in itertools.islice(data.dataset_rows(number), 40):
        examples.append(data.convert(row))
checked = labelled = 0
for example in examples:
    messages, tools = example["messages"], example.get("tools")
    if conversation_stage:
        text, spans = data.render(template, example, context)
        encoding = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False)
        ids = encoding.ids
        labels = data.label_tokens(ids, encoding, spans)
        reference = tokenizer.apply_chat_template(
            messages, tools=tools, tokenize=True, return_dict=True,
            return_assistant_tokens_mask=True,
        )
        assert ids == reference["input_ids"], ("ids differ", messages)
        mask = reference["assistant_masks"]
        expected = [t if m else -100 for t, m in zip(reference["input_ids"], mask)]
        assert labels == expected, ("labels differ", messages)
        assert text == tokenizer.apply_chat_template(messages, tools=tools, tokenize=False)
        labelled += sum(1 for x in labels if x != -100)
    else:
        answers = [example[k] for k in ("chosen", "rejected") if k in example]
        if not answers:  # kto: the answer is the last turn; grpo/ppo: prompt only
            if messages[-1]["role"] == "assistant":
                answers, messages = [messages[-1]], messages[:-1]
        prompt_only = {**example, "messages": messages}
        generation = tokenizer.apply_chat_template(
            messages, tools=tools, tokenize=False, add_generation_prompt=True
        )
        for answer in answers:
            prompt, completion = data.prompt_and_answer(template, prompt_only, answer, context)
            assert prompt == generation, ("prompt differs", messages)
            full = tokenizer.apply_chat_template(messages + [answer], tools=tools, tokenize=False)
            assert full.startswith(prompt + completion), ("answer differs", answer)
            assert answer["content"] in completion
            labelled += 1
        if not answers:
            text, _ = data.render(template, example, {**context, "add_generation_prompt": True})
            assert text == generation
            labelled += 1
    checked += 1
print(json.dumps({"checked": checked, "labelled": labelled}))
"""


# Every example that renders a chat template (pt-text tokenizes raw text: tests/test_data_engine.py).
TEMPLATED = [spec for spec in example_specs() if spec.stem != "pt-text"]


@pytest.mark.parametrize("spec", TEMPLATED, ids=lambda p: p.stem)
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
    assert summary["checked"] >= 12
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


MASKING = r"""
import json
import data
from datasets import load_from_disk
from config import ModelArguments
from model import load_tokenizer

tokenizer = load_tokenizer(ModelArguments(model_name_or_path="../tiny-llama"))
saved = load_from_disk("data/processed/dataset")["train"]
rows = list(data.dataset_rows(0))
out = []
for row, example in zip(rows, saved, strict=True):
    messages = data.convert(row)["messages"]
    ref = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    out.append({"ids": ref["input_ids"], "mask": ref["assistant_masks"],
                "saved_ids": example["input_ids"], "labels": example["labels"]})
print(json.dumps(out))
"""


def _last_run(mask: list[int]) -> list[int]:
    """The mask with only its last run of ones kept (the last assistant turn)."""
    end = len(mask) - mask[::-1].index(1)
    start = end
    while start > 0 and mask[start - 1] == 1:
        start -= 1
    return [1 if start <= i < end else 0 for i in range(len(mask))]


@pytest.mark.parametrize("mode", ["default", "mask_history", "train_on_prompt"])
def test_masking_options_on_token_level(mode: str, tmp_path: Path, tiny_model: Path) -> None:
    import shutil

    from lfc.pipeline import compile_file
    from lfc.writer import write_project

    from conftest import EXAMPLES

    spec_dir = tmp_path / "spec"
    shutil.copytree(EXAMPLES / "data", spec_dir / "data")
    stage = {
        "default": "{kind: sft}",
        "mask_history": "{kind: sft, mask_history: true}",
        "train_on_prompt": "{kind: sft, train_on_prompt: true}",
    }[mode]
    text = (EXAMPLES / "quickstart.yaml").read_text()
    text = text.replace("stage: {kind: sft}", f"stage: {stage}")
    text = text.replace(
        "{path: data/alpaca_en_demo.json, format: alpaca}",
        "{path: data/sharegpt_demo.jsonl, format: sharegpt}",
    )
    (spec_dir / "spec.yaml").write_text(text)
    project = tmp_path / "run"
    write_project(compile_file(spec_dir / "spec.yaml").files, project)
    shutil.copytree(tiny_model, tmp_path / "tiny-llama")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    made = subprocess.run(
        [sys.executable, "data.py"], cwd=project, env=env, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr[-3000:]
    probe = subprocess.run(
        [sys.executable, "-c", MASKING], cwd=project, env=env, capture_output=True, text=True
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    rows = json.loads(probe.stdout.strip().splitlines()[-1])
    assert len(rows) == 12
    for row in rows:
        ids, mask = row["ids"], row["mask"]
        assert row["saved_ids"] == ids
        if mode == "train_on_prompt":
            expected = ids
        elif mode == "mask_history":
            expected = [t if m else -100 for t, m in zip(ids, _last_run(mask), strict=True)]
        else:
            expected = [t if m else -100 for t, m in zip(ids, mask, strict=True)]
        assert row["labels"] == expected
    multi_turn = [r for r in rows if r["mask"] != _last_run(r["mask"])]
    assert multi_turn, "the corpus must have multi-turn rows"
