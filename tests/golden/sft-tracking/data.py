"""Turn the datasets into token ids and labels for train.py.

Run: python data.py   (reads config.yaml; e.g. `python data.py --cutoff_len 512 --num_proc 2`)

Reads data/alpaca_en_demo.json,
renders every conversation with chat_template.jinja, tokenizes in batches with the fast tokenizer,
labels only the assistant tokens (the template's generation spans).
Saves data/processed/ with a summary; a second run with unchanged inputs is served from it.
Malformed rows are reported by dataset and row index; they are never dropped silently.
"""

import hashlib
import json
import os
import random
import re
import shutil
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import ClassVar

from config import parse_data_args

HERE = Path(__file__).resolve().parent
# Every dataset, in the order of the spec.
DATASETS = [
    {
        "name": "alpaca_en_demo",
        "format": "alpaca",
        "files": ["data/alpaca_en_demo.json"],
        "columns": {
            "instruction": "instruction",
            "input": "input",
            "output": "output",
            "system": None,
            "history": None,
            "chosen": "chosen",
            "rejected": "rejected",
            "kto_tag": None,
        },
    },
]
CHUNK_ROWS = 256  # rows per batch call to the tokenizer (and per task of a worker)
# Private-use characters that mark the template's generation spans while rendering.
SPAN_START, SPAN_END = "\ue000", "\ue001"
IGNORE = -100
Span = tuple[int, int]
Row = tuple[int, str, int, object]  # (dataset index, file or hub id, row index, row)


class RowError(ValueError):
    """A row that cannot become an example; the message says why."""


# --- reading -------------------------------------------------------------------------------


def read_json(path: str) -> Iterator[tuple[int, object]]:
    """The rows of a .json list; a file that is not valid JSON stops with its line."""
    text = (HERE / path).read_text(encoding="utf-8")
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"{path}:{exc.lineno}:{exc.colno}"
        raise SystemExit(f"{where}: invalid JSON: {exc.msg}") from None
    if not isinstance(rows, list):
        raise SystemExit(f"{path}: expected a JSON list, got {type(rows).__name__}")
    yield from enumerate(rows)


def dataset_rows(number: int) -> Iterator[Row]:
    """Every row of dataset `number`, lazily, with where it came from."""
    source = DATASETS[number]
    for path in source["files"]:
        for index, row in read_json(path):
            yield number, path, index, row


def selected_rows(number: int, seed: int) -> Iterator[Row]:
    """Dataset `number` after its max_samples / num_samples."""
    source = DATASETS[number]
    if source.get("max_samples"):
        yield from islice(dataset_rows(number), source["max_samples"])
    elif source.get("num_samples"):
        rows = list(dataset_rows(number))
        if not rows:
            return
        rng, picked = random.Random(seed), []
        while len(picked) < source["num_samples"]:
            picked += rng.sample(range(len(rows)), len(rows))
        yield from (rows[index] for index in picked[: source["num_samples"]])
    else:
        yield from dataset_rows(number)


def all_rows(seed: int) -> Iterator[Row]:
    """The datasets one after the other."""
    for number in range(len(DATASETS)):
        yield from selected_rows(number, seed)


def chunks(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


# --- rows to examples ----------------------------------------------------------------------


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


def alpaca_example(row: object, columns: dict) -> dict:
    """instruction (+ input), output, optional system and history."""
    if not isinstance(row, dict):
        raise RowError(f"expected an object, got {type(row).__name__}")
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
    messages.append(answer(text_field(row, columns["output"], required=True)))
    return {"messages": messages}


def answer(text: str) -> dict:
    return {"role": "assistant", "content": text}


def check_turns(messages: list[dict], *, ends_with_answer: bool) -> None:
    """Optional system, then (user or tool) and assistant turns alternating."""
    body = messages[1:] if messages and messages[0]["role"] == "system" else messages
    for number, message in enumerate(body):
        expected = ("user", "tool") if number % 2 == 0 else ("assistant",)
        if message["role"] not in expected:
            role = message["role"]
            wanted = " or ".join(expected)
            raise RowError(f"turn {number} is {role!r}, expected {wanted}")
    if not body:
        raise RowError("the conversation has no turns")
    last = body[-1]["role"]
    if ends_with_answer and last != "assistant":
        raise RowError("the conversation should end with an assistant turn")
    if not ends_with_answer and last == "assistant":
        raise RowError("the prompt should end with a user turn")


# --- rendering -----------------------------------------------------------------------------


def compile_template(source: str):
    """The chat template in the same sandbox settings as transformers' apply_chat_template."""
    from jinja2 import TemplateError, nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationSpans(Extension):
        """`{% generation %}...{% endgeneration %}`: wrap assistant text in span markers."""

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


def render(template, example: dict, context: dict) -> tuple[str, list[Span]]:
    """The conversation's text and the character spans of its assistant turns."""
    from jinja2 import TemplateError

    for message in example["messages"]:
        if SPAN_START in message["content"] or SPAN_END in message["content"]:
            raise RowError("text contains the reserved characters U+E000/U+E001")
    if example.get("tools"):
        context = {**context, "tools": example["tools"]}
    try:
        marked = template.render(messages=example["messages"], **context)
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


def label_tokens(ids: list[int], encoding, spans: list[Span]) -> list[int]:
    """A token overlapping an assistant span keeps its id; every other one is IGNORE.

    `encoding` is the tokenizer's Encoding of the text: it maps a span's first and last
    character to tokens, as transformers' assistant mask does.
    """
    labels = [IGNORE] * len(ids)
    for start, end in spans:
        if start == end:
            continue
        first, last = encoding.char_to_token(start), encoding.char_to_token(end - 1)
        if first is None or last is None:
            # A character no token covers: find the overlapping tokens by their offsets.
            offsets = enumerate(encoding.offsets)
            covering = [n for n, (a, b) in offsets if a < end and b > start]
            if not covering:
                continue
            first, last = covering[0], covering[-1]
        # A character split over several byte-level tokens: take all of them.
        while last + 1 < len(ids):
            following = encoding.token_to_chars(last + 1)
            if following is None or following[0] >= end:
                break
            last += 1
        labels[first : last + 1] = ids[first : last + 1]
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


# --- processing ----------------------------------------------------------------------------


@dataclass
class Processed:
    """What one chunk of rows became."""

    columns: dict[str, list] = field(default_factory=dict)
    problems: list[dict] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)  # tokens per kept row
    rows_in: int = 0
    truncated: int = 0
    no_labels: int = 0


WORKER: dict = {}  # per process: the tokenizer, template and settings


def start_worker(model_args, trust_remote_code: bool, cutoff: int, quiet: bool) -> None:
    """Load the tokenizer and compile the template once per process."""
    if quiet:
        # The processes are the parallelism: no tokenizer threads on top.
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from model import CHAT_TEMPLATE, load_tokenizer

    tokenizer = load_tokenizer(model_args, trust_remote_code)
    WORKER.update(tokenizer=tokenizer, backend=tokenizer.backend_tokenizer)
    WORKER["cutoff"] = cutoff
    WORKER["template"] = compile_template(CHAT_TEMPLATE)
    WORKER["context"] = template_context(tokenizer)


def convert(row: Row) -> dict:
    """A raw row as an example (messages and more); raises RowError."""
    number, _, _, raw = row
    if isinstance(raw, RowError):
        raise raw
    source = DATASETS[number]
    example = CONVERTERS[source["format"]](raw, source["columns"])
    check_turns(example["messages"], ends_with_answer=True)
    return example


CONVERTERS = {
    "alpaca": alpaca_example,
}


def process_chunk(rows: list[Row]) -> Processed:
    """Convert, render and tokenize one chunk of rows."""
    out = Processed(rows_in=len(rows))
    good = []
    for row in rows:
        try:
            good.append(render(WORKER["template"], convert(row), WORKER["context"]))
        except RowError as exc:
            number, where, index, _ = row
            name = DATASETS[number]["name"]
            problem = {"dataset": name, "file": where, "row": index, "reason": str(exc)}
            out.problems.append(problem)
    cutoff = WORKER["cutoff"]
    input_ids, all_labels = [], []
    texts = [text for text, _ in good]
    encoded = WORKER["backend"].encode_batch(texts, add_special_tokens=False)
    for encoding, (_, spans) in zip(encoded, good, strict=True):
        ids = encoding.ids
        labels = label_tokens(ids, encoding, spans)
        if len(ids) > cutoff:
            ids, labels = truncate(ids, labels, cutoff)
            out.truncated += 1
        if labels.count(IGNORE) == len(labels):
            out.no_labels += 1
            continue
        input_ids.append(ids)
        all_labels.append(labels)
    out.columns.update(input_ids=input_ids, labels=all_labels)
    out.lengths = [len(ids) for ids in input_ids]
    return out


def process_all(rows: Iterable[Row], settings: tuple, num_proc: int) -> Iterator:
    """Chunks of rows, processed in order, by this process or a pool of `num_proc`."""
    if num_proc == 1:
        start_worker(*settings, quiet=False)
        yield from map(process_chunk, chunks(rows, CHUNK_ROWS))
        return
    import multiprocessing

    context = multiprocessing.get_context("fork")
    with context.Pool(num_proc, start_worker, (*settings, True)) as pool:
        pending: deque = deque()
        for chunk in chunks(rows, CHUNK_ROWS):
            pending.append(pool.apply_async(process_chunk, (chunk,)))
            # At most 2 chunks per process in flight: rows are read as they are needed.
            if len(pending) >= 2 * num_proc:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


# --- cache, writing, summary ---------------------------------------------------------------


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def tokenizer_fingerprint(run) -> str:
    """The tokenizer files' hashes, or for a hub model the loaded tokenizer's own state."""
    folder = Path(run.model.model_name_or_path)
    if folder.is_dir():
        names = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
        files = [p for p in folder.iterdir() if p.name in names or p.suffix == ".model"]
        return json.dumps({p.name: file_sha256(p) for p in sorted(files)})
    from model import load_tokenizer

    tokenizer = load_tokenizer(run.model, run.trust_remote_code)
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()


def cache_key(run) -> str:
    """Everything the output depends on: data files, tokenizer, template, code, settings."""
    inputs = {
        "data_py": file_sha256(Path(__file__)),
        "chat_template": file_sha256(HERE / "chat_template.jinja"),
        "files": [file_sha256(HERE / p) for d in DATASETS for p in d.get("files", [])],
        "tokenizer": tokenizer_fingerprint(run),
        "model": [run.model.model_name_or_path, run.model.model_revision],
        "seed": run.seed,
        "data": {
            key: value
            for key, value in vars(run.data).items()
            if key not in ("num_proc", "overwrite", "processed_dir")
        },
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def write_rows(results: Iterable[Processed], path: Path, report) -> dict:
    """Stream every processed chunk into one Arrow file; returns the counts."""
    import pyarrow as pa
    from tqdm import tqdm

    counts = {"rows_read": 0, "rows_kept": 0, "rows_truncated": 0, "rows_rejected": 0}
    counts.update(rows_without_labels=0, label_tokens=0)
    counts.update(tokens=0, max_length=0)
    ids = pa.list_(pa.int32())
    schema = pa.schema([("input_ids", ids), ("labels", ids)])
    writer = pa.ipc.new_stream(str(path), schema)
    with tqdm(desc="data", unit="row") as progress:
        for result in results:
            size, read = len(result.lengths), result.rows_in
            counts["rows_without_labels"] += result.no_labels
            labels = result.columns["labels"]
            counts["label_tokens"] += sum(len(ls) - ls.count(IGNORE) for ls in labels)
            counts["rows_read"] += read
            counts["rows_truncated"] += result.truncated
            counts["rows_rejected"] += len(result.problems)
            for problem in result.problems:
                report.write(json.dumps(problem, ensure_ascii=False) + "\n")
            progress.update(read)
            if not size:
                continue
            counts["rows_kept"] += size
            counts["tokens"] += sum(result.lengths)
            counts["max_length"] = max(counts["max_length"], *result.lengths)
            batch = pa.RecordBatch.from_pydict(result.columns, schema=schema)
            writer.write_batch(batch)
    writer.close()
    return counts


def report_problems(staging: Path, count: int, on_bad_row: str) -> None:
    """Stop on malformed rows (on_bad_row: error), listing the first ones."""
    if count == 0 or on_bad_row == "skip":
        return
    with open(staging / "rejected.jsonl", encoding="utf-8") as report:
        for line in islice(report, 20):
            problem = json.loads(line)
            where = f"{problem['dataset']} ({problem['file']}) row {problem['row']}"
            print(f"{where}: {problem['reason']}", file=sys.stderr)
    shutil.rmtree(staging, ignore_errors=True)
    more = " (first 20 shown)" if count > 20 else ""
    raise SystemExit(f"{count} malformed rows{more}; fix them or use --on_bad_row skip")


def main() -> None:
    run = parse_data_args()
    data = run.data
    if data.on_bad_row not in ("error", "skip"):
        raise SystemExit(f"on_bad_row is error or skip, got {data.on_bad_row!r}")
    target = Path(data.processed_dir)
    manifest_path = target / "lfc_data.json"
    key = cache_key(run)
    if manifest_path.is_file() and not data.overwrite:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("cache_key") == key:
            print(f"{target}/ is up to date with its inputs (--overwrite true redoes)")
            print(" ".join(f"{k}={v}" for k, v in manifest["summary"].items()))
            return

    # Write beside the target, then swap it in, so an interrupted run leaves no half-written data.
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    settings = (run.model, run.trust_remote_code, data.cutoff_len)
    results = process_all(all_rows(run.seed), settings, data.num_proc)
    rows_file = staging / "rows.arrow"
    with open(staging / "rejected.jsonl", "w", encoding="utf-8") as report:
        summary = write_rows(results, rows_file, report)
    report_problems(staging, summary["rows_rejected"], data.on_bad_row)
    if summary["rows_kept"] == 0:
        shutil.rmtree(staging, ignore_errors=True)
        message = "no rows left: each was malformed or had no assistant tokens"
        raise SystemExit(message)
    summary["mean_length"] = round(summary["tokens"] / summary["rows_kept"], 1)

    from datasets import Dataset, DatasetDict

    dataset = Dataset.from_file(str(rows_file))
    if data.shuffle:
        dataset = dataset.shuffle(seed=run.seed)
    if data.val_size > 0:
        split = dataset.train_test_split(test_size=data.val_size, seed=run.seed)
        splits = DatasetDict({"train": split["train"], "validation": split["test"]})
    else:
        splits = DatasetDict({"train": dataset})
    splits.save_to_disk(str(staging / "dataset"))
    del dataset, splits
    rows_file.unlink()
    manifest = {
        "cache_key": key,
        "cutoff_len": data.cutoff_len,
        "model": run.model.model_name_or_path,
        "chat_template_sha256": file_sha256(HERE / "chat_template.jinja"),
        "summary": summary,
    }
    manifest_text = json.dumps(manifest, indent=2) + "\n"
    (staging / "lfc_data.json").write_text(manifest_text, encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)

    print(" ".join(f"{key}={value}" for key, value in summary.items()))
    print(f"saved {target}/dataset (rejected rows: {target}/rejected.jsonl)")


if __name__ == "__main__":
    main()
