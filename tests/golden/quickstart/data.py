"""Turn the datasets into token ids and labels for train.py.

Run: python data.py   (reads config.yaml; e.g. `python data.py --cutoff_len 512`)

Reads data/alpaca_en_demo.json, renders every conversation with
chat_template.jinja, tokenizes in batches with the fast tokenizer, labels
only the assistant tokens (the template's generation spans) and saves data/processed/.
Malformed rows are reported by file and row index; they are never dropped silently.
"""

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path
from typing import ClassVar

from datasets import Dataset, DatasetDict
from jinja2 import TemplateError, nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tqdm import tqdm

from config import parse_args
from model import CHAT_TEMPLATE, load_tokenizer

# (file, format) of every dataset, concatenated in this order.
DATASETS = [
    ("data/alpaca_en_demo.json", "alpaca"),
]
ALPACA_COLUMNS = {
    "instruction": "instruction",
    "input": "input",
    "output": "output",
    "system": None,
    "history": None,
}
BATCH_SIZE = 1000
# Private-use characters that mark the template's generation spans while rendering.
SPAN_START, SPAN_END = "\ue000", "\ue001"
IGNORE = -100
Span = tuple[int, int]


class RowError(ValueError):
    """A row that cannot become a conversation; the message says why."""


def read_rows(path: str) -> list[object]:
    """The rows of a .json list or a .jsonl file; invalid JSON stops with its line."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"{path}:{exc.lineno}:{exc.colno}"
        raise SystemExit(f"{where}: invalid JSON: {exc.msg}") from None
    if not isinstance(rows, list):
        raise SystemExit(f"{path}: expected a JSON list, got {type(rows).__name__}")
    return rows


def text_field(row: dict, column: str, *, required: bool) -> str:
    """The string in `column`; missing optional columns and nulls read as ""."""
    value = row.get(column)
    if value is None:
        if required:
            raise RowError(f"column {column!r} is missing")
        return ""
    if not isinstance(value, str):
        kind = type(value).__name__
        raise RowError(f"column {column!r} should be a string, got {kind}")
    return value


def alpaca_messages(row: object) -> list[dict[str, str]]:
    """instruction (+ input), output, optional system and history -> messages."""
    if not isinstance(row, dict):
        raise RowError(f"expected an object, got {type(row).__name__}")
    columns = ALPACA_COLUMNS
    messages = []
    system = columns["system"] and text_field(row, columns["system"], required=False)
    if system:
        messages.append({"role": "system", "content": system})
    if columns["history"]:
        history = row.get(columns["history"]) or []
        if not isinstance(history, list):
            raise RowError(f"column {columns['history']!r} should be a list of pairs")
        for number, pair in enumerate(history):
            is_pair = isinstance(pair, list) and len(pair) == 2
            if not (is_pair and all(isinstance(text, str) for text in pair)):
                raise RowError(f"history item {number} should be [prompt, answer]")
            messages.append({"role": "user", "content": pair[0]})
            messages.append({"role": "assistant", "content": pair[1]})
    prompt = text_field(row, columns["instruction"], required=True)
    if extra := text_field(row, columns["input"], required=False):
        prompt = f"{prompt}\n{extra}" if prompt else extra
    messages.append({"role": "user", "content": prompt})
    answer = text_field(row, columns["output"], required=True)
    messages.append({"role": "assistant", "content": answer})
    return messages


CONVERTERS = {
    "alpaca": alpaca_messages,
}


class GenerationSpans(Extension):
    """`{% generation %}...{% endgeneration %}`: wrap the assistant text in span markers."""

    tags: ClassVar[set[str]] = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        block = nodes.CallBlock(self.call_method("_wrap"), [], [], body)
        return block.set_lineno(lineno)

    def _wrap(self, caller) -> str:
        return SPAN_START + caller() + SPAN_END


def raise_exception(message: str) -> None:
    raise TemplateError(message)


def tojson(value: object, ensure_ascii: bool = False, **kwargs: object) -> str:
    """transformers' tojson: no HTML escaping, non-ASCII kept."""
    return json.dumps(value, ensure_ascii=ensure_ascii, **kwargs)


def compile_template(source: str):
    """The chat template in the same sandbox settings as transformers' apply_chat_template."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[GenerationSpans, "jinja2.ext.loopcontrols"],
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)


def template_context(tokenizer) -> dict:
    """What apply_chat_template gives a template: the special tokens, no generation prompt."""
    special = tokenizer.special_tokens_map
    context = {key: value for key, value in special.items() if isinstance(value, str)}
    context["add_generation_prompt"] = False
    return context


def render(template, messages: list[dict], context: dict) -> tuple[str, list[Span]]:
    """The conversation's text and the character spans of its assistant turns."""
    for message in messages:
        if SPAN_START in message["content"] or SPAN_END in message["content"]:
            raise RowError("text contains the reserved characters U+E000/U+E001")
    try:
        marked = template.render(messages=messages, **context)
    except TemplateError as exc:
        raise RowError(f"the chat template refused it: {exc}") from None
    pieces, spans, length, start = [], [], 0, 0
    for part in re.split(f"([{SPAN_START}{SPAN_END}])", marked):
        if part == SPAN_START:
            start = length
        elif part == SPAN_END:
            spans.append((start, length))
        else:
            pieces.append(part)
            length += len(part)
    return "".join(pieces), spans


def label_tokens(ids: list[int], offsets: list[Span], spans: list[Span]) -> list[int]:
    """A token overlapping an assistant span keeps its id; every other one is IGNORE."""
    labels, span = [], 0
    for token_id, (start, end) in zip(ids, offsets, strict=True):
        while span < len(spans) and spans[span][1] <= start:
            span += 1
        inside = span < len(spans) and spans[span][0] < end
        labels.append(token_id if inside else IGNORE)
    return labels


def truncate(ids: list[int], labels: list[int], cutoff_len: int) -> tuple[list, list]:
    """Cut to `cutoff_len`, after the last assistant turn that fits whole.

    If even the first answer does not fit, its beginning is kept. No label is ever left on a
    token whose turn was cut away, and the cut never splits a turn when a whole one fits.
    """
    end = cutoff_len
    if labels[end - 1] != IGNORE and labels[end] != IGNORE:
        while end > 0 and labels[end - 1] != IGNORE:
            end -= 1
    while end > 0 and labels[end - 1] == IGNORE:
        end -= 1
    if end == 0:
        end = cutoff_len
    return ids[:end], labels[:end]


def main() -> None:
    args = parse_args()
    data = args.data
    tokenizer = load_tokenizer(args.model, args.training.trust_remote_code)
    template = compile_template(CHAT_TEMPLATE)
    context = template_context(tokenizer)

    texts, spans, problems, rows_read = [], [], [], 0
    for path, fmt in DATASETS:
        rows = read_rows(path)
        rows_read += len(rows)
        for index, row in enumerate(tqdm(rows, desc=f"render {path}", unit="row")):
            try:
                text, row_spans = render(template, CONVERTERS[fmt](row), context)
            except RowError as exc:
                problems.append({"file": path, "row": index, "reason": str(exc)})
                continue
            texts.append(text)
            spans.append(row_spans)
    if problems and not data.skip_malformed:
        for problem in problems[:20]:
            where = f"{problem['file']} row {problem['row']}"
            print(f"{where}: {problem['reason']}", file=sys.stderr)
        more = " (first 20 shown)" if len(problems) > 20 else ""
        raise SystemExit(
            f"{len(problems)} malformed rows{more}; fix them, or pass --skip_malformed true"
        )

    columns = {"input_ids": [], "labels": []}
    truncated = no_labels = 0
    with tqdm(total=len(texts), desc="tokenize", unit="row") as progress:
        for begin in range(0, len(texts), BATCH_SIZE):
            end = begin + BATCH_SIZE
            batch = tokenizer(
                texts[begin:end], add_special_tokens=False, return_offsets_mapping=True
            )
            rows = zip(batch["input_ids"], batch["offset_mapping"], spans[begin:end])
            for ids, offsets, row_spans in rows:
                labels = label_tokens(ids, offsets, row_spans)
                if len(ids) > data.cutoff_len:
                    ids, labels = truncate(ids, labels, data.cutoff_len)
                    truncated += 1
                if all(label == IGNORE for label in labels):
                    no_labels += 1
                    continue
                columns["input_ids"].append(ids)
                columns["labels"].append(labels)
            progress.update(len(batch["input_ids"]))
    kept = len(columns["input_ids"])
    if kept == 0:
        raise SystemExit("no rows left: each was malformed or had no assistant tokens")

    dataset = Dataset.from_dict(columns)
    if data.val_size > 0:
        seed = args.training.seed
        split = dataset.train_test_split(test_size=data.val_size, seed=seed)
        splits = DatasetDict({"train": split["train"], "validation": split["test"]})
    else:
        splits = DatasetDict({"train": dataset})

    lengths = [len(ids) for ids in columns["input_ids"]]
    summary = {
        "rows_read": rows_read,
        "rows_kept": kept,
        "rows_truncated": truncated,
        "rows_malformed": len(problems),
        "rows_without_labels": no_labels,
        "tokens": sum(lengths),
        "label_tokens": sum(len(ls) - ls.count(IGNORE) for ls in columns["labels"]),
        "mean_length": round(sum(lengths) / kept, 1),
        "max_length": max(lengths),
    }
    manifest = {
        "cutoff_len": data.cutoff_len,
        "model": args.model.model_name_or_path,
        "chat_template_sha256": hashlib.sha256(CHAT_TEMPLATE.encode()).hexdigest(),
        "summary": summary,
    }

    # Write beside the target, then swap it in, so an interrupted run leaves no half-written data.
    target = Path(data.processed_dir)
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    splits.save_to_disk(str(staging))
    manifest_text = json.dumps(manifest, indent=2) + "\n"
    (staging / "lfc_data.json").write_text(manifest_text, encoding="utf-8")
    with open(staging / "rejected.jsonl", "w", encoding="utf-8") as report:
        for problem in problems:
            report.write(json.dumps(problem, ensure_ascii=False) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)

    print(" ".join(f"{key}={value}" for key, value in summary.items()))
    sizes = ", ".join(f"{name}: {len(split)} rows" for name, split in splits.items())
    print(f"saved {sizes} to {target}/")


if __name__ == "__main__":
    main()
