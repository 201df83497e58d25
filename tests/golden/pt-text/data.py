"""Turn the datasets into blocks of token ids for train.py.

Run: python data.py   (reads config.yaml; e.g. `python data.py --cutoff_len 512 --num_proc 2`)

Reads data/c4_demo.jsonl, data/wiki_demo.txt,
tokenizes the text in batches with the fast tokenizer, ends each document with eos and cuts the
token stream into blocks of cutoff_len.
Saves data/processed/ with a summary; a second run with unchanged inputs is served from it.
Malformed rows are reported by dataset and row index; they are never dropped silently.
"""

import hashlib
import json
import os
import random
import shutil
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from config import parse_data_args

HERE = Path(__file__).resolve().parent
# Every dataset, in the order of the spec.
DATASETS = [
    {
        "name": "c4_demo",
        "format": "text",
        "files": ["data/c4_demo.jsonl"],
        "columns": {"text": "text"},
    },
    {
        "name": "wiki_demo",
        "format": "text",
        "files": ["data/wiki_demo.txt"],
        "columns": {"text": "text"},
    },
]
CHUNK_ROWS = 256  # rows per batch call to the tokenizer (and per task of a worker)
Span = tuple[int, int]
Row = tuple[int, str, int, object]  # (dataset index, file or hub id, row index, row)


class RowError(ValueError):
    """A row that cannot become an example; the message says why."""


# --- reading -------------------------------------------------------------------------------


def read_jsonl(path: str) -> Iterator[tuple[int, object]]:
    """One row per non-empty line; an invalid line is a bad row like any other."""
    with open(HERE / path, encoding="utf-8") as lines:
        index = 0
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield index, json.loads(line)
            except json.JSONDecodeError as exc:
                yield index, RowError(f"line {number}: invalid JSON: {exc.msg}")
            index += 1


def read_txt(path: str) -> Iterator[tuple[int, object]]:
    """One document per non-empty line."""
    with open(HERE / path, encoding="utf-8") as lines:
        documents = (line.rstrip("\n") for line in lines if line.strip())
        yield from enumerate({"text": document} for document in documents)


def dataset_rows(number: int) -> Iterator[Row]:
    """Every row of dataset `number`, lazily, with where it came from."""
    source = DATASETS[number]
    for path in source["files"]:
        for index, row in READERS[Path(path).suffix](path):
            yield number, path, index, row


READERS = {
    ".jsonl": read_jsonl,
    ".txt": read_txt,
}


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


def text_document(row: object, columns: dict) -> str:
    if not isinstance(row, dict):
        raise RowError(f"expected an object, got {type(row).__name__}")
    text = text_field(row, columns["text"], required=True)
    if not text.strip():
        raise RowError(f"column {columns['text']!r} is empty")
    return text


# --- processing ----------------------------------------------------------------------------


@dataclass
class Processed:
    """What one chunk of rows became."""

    columns: dict[str, list] = field(default_factory=dict)
    problems: list[dict] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)  # tokens per kept row
    rows_in: int = 0
    truncated: int = 0


WORKER: dict = {}  # per process: the tokenizer, template and settings


def start_worker(model_args, trust_remote_code: bool, cutoff: int, quiet: bool) -> None:
    """Load the tokenizer once per process."""
    if quiet:
        # The processes are the parallelism: no tokenizer threads on top.
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from model import load_tokenizer

    tokenizer = load_tokenizer(model_args, trust_remote_code)
    WORKER.update(tokenizer=tokenizer, backend=tokenizer.backend_tokenizer)
    WORKER["cutoff"] = cutoff


def convert(row: Row) -> str:
    """A raw row as its text; raises RowError."""
    number, _, _, raw = row
    if isinstance(raw, RowError):
        raise raw
    source = DATASETS[number]
    text = text_document(raw, source["columns"])
    return text


def process_chunk(rows: list[Row]) -> Processed:
    """Convert, render and tokenize one chunk of rows."""
    out = Processed(rows_in=len(rows))
    good = []
    for row in rows:
        try:
            good.append(convert(row))
        except RowError as exc:
            number, where, index, _ = row
            name = DATASETS[number]["name"]
            problem = {"dataset": name, "file": where, "row": index, "reason": str(exc)}
            out.problems.append(problem)
    eos = WORKER["tokenizer"].eos_token_id
    encoded = WORKER["backend"].encode_batch_fast(good, add_special_tokens=False)
    out.columns["input_ids"] = [[*encoding.ids, eos] for encoding in encoded]
    out.lengths = [len(ids) for ids in out.columns["input_ids"]]
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


def blocks(documents: Iterable[list[int]], size: int) -> Iterator[list[int]]:
    """The documents' tokens end to end, cut into blocks of `size`; the last partial one dropped."""
    buffer: list[int] = []
    for ids in documents:
        buffer += ids
        while len(buffer) >= size:
            yield buffer[:size]
            del buffer[:size]


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
    counts.update(tokens=0, max_length=0)
    ids = pa.list_(pa.int32())
    schema = pa.schema([("input_ids", ids)])
    writer = pa.ipc.new_stream(str(path), schema)
    with tqdm(desc="data", unit="row") as progress:
        for result in results:
            size, read = len(result.lengths), result.rows_in
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
    results = pack_documents(results, data.cutoff_len)
    rows_file = staging / "rows.arrow"
    with open(staging / "rejected.jsonl", "w", encoding="utf-8") as report:
        summary = write_rows(results, rows_file, report)
    report_problems(staging, summary["rows_rejected"], data.on_bad_row)
    if summary["rows_kept"] == 0:
        shutil.rmtree(staging, ignore_errors=True)
        message = "no blocks: all documents together are shorter than cutoff_len"
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


def pack_documents(results: Iterable[Processed], size: int) -> Iterator[Processed]:
    """Re-chunk the tokenized documents into blocks of `size` tokens (for pre-training)."""
    carry: list[int] = []
    for result in results:
        documents = [carry, *result.columns.get("input_ids", [])]
        ids = [token for document in documents for token in document]
        whole = len(ids) - len(ids) % size
        carry = ids[whole:]
        starts = range(0, whole, size)
        result.columns["input_ids"] = [ids[at : at + size] for at in starts]
        result.lengths = [size] * len(result.columns["input_ids"])
        yield result


if __name__ == "__main__":
    main()
