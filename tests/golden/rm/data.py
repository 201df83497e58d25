"""Turn the datasets into tokenized chosen and rejected conversations for train.py.

Run: python data.py   (reads config.yaml; e.g. `python data.py --cutoff_len 512 --num_proc 2`)

Reads data/dpo_en_demo.json,
renders every prompt and answer with chat_template.jinja and tokenizes them in batches.
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
        "name": "dpo_en_demo",
        "format": "sharegpt",
        "files": ["data/dpo_en_demo.json"],
        "columns": {
            "messages": "conversations",
            "system": "system",
            "tools": "tools",
            "role_tag": "from",
            "content_tag": "value",
            "user_tag": "human",
            "assistant_tag": "gpt",
            "system_tag": "system",
            "function_tag": "function_call",
            "observation_tag": "observation",
            "chosen": "chosen",
            "rejected": "rejected",
            "kto_tag": None,
        },
    },
]
CHUNK_ROWS = 256  # rows per batch call to the tokenizer (and per task of a worker)
# Private-use characters that mark the template's generation spans while rendering.
SPAN_START, SPAN_END = "\ue000", "\ue001"
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


def sharegpt_example(row: object, columns: dict) -> dict:
    """A list of {from, value} turns (tags from the spec); tool calls and results included."""
    if not isinstance(row, dict):
        raise RowError(f"expected an object, got {type(row).__name__}")
    turns = row.get(columns["messages"])
    if not isinstance(turns, list) or not turns:
        raise RowError(f"column {columns['messages']!r} should be a list of turns")
    messages = []
    system = columns["system"] and text_field(row, columns["system"], required=False)
    if system:
        messages.append({"role": "system", "content": system})
    for number, turn in enumerate(turns):
        messages.append(sharegpt_turn(turn, f"turn {number}", columns))
    example = {"messages": messages, "tools": row_tools(row, columns)}
    for key in ("chosen", "rejected"):
        example[key] = sharegpt_turn(row.get(columns[key]), f"column {key!r}", columns)
    return example


def sharegpt_turn(turn: object, where: str, columns: dict) -> dict:
    if not isinstance(turn, dict):
        raise RowError(f"{where} should be an object")
    roles = {
        columns["user_tag"]: "user",
        columns["assistant_tag"]: "assistant",
        columns["system_tag"]: "system",
        columns["function_tag"]: "function_call",
        columns["observation_tag"]: "tool",
    }
    tag = turn.get(columns["role_tag"])
    if tag not in roles:
        raise RowError(f"{where}: role {tag!r} is not one of {sorted(roles)}")
    content = turn.get(columns["content_tag"])
    if not isinstance(content, str):
        raise RowError(f"{where} has no string {columns['content_tag']!r}")
    if roles[tag] == "function_call":
        return tool_call_message(content, where)
    if roles[tag] == "tool":
        raise RowError(f"{where}: a tool result, but llama3 renders no tools")
    return {"role": roles[tag], "content": content}


def tool_call_message(content: str, where: str) -> dict:
    """A `function_call` turn (JSON {name, arguments}, or a list of them) as tool_calls."""
    raise RowError(f"{where}: a tool call, but llama3 cannot render tool calls")


def row_tools(row: dict, columns: dict) -> None:
    """The template of this project renders no tools: a row that has some is an error."""
    if columns["tools"] and row.get(columns["tools"]) not in (None, "", []):
        raise RowError(f"column {columns['tools']!r}: the template renders no tools")


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


def prompt_and_answer(template, example: dict, answer: dict, context: dict) -> tuple:
    """The rendered prompt (through the assistant header) and answer (with end of turn)."""
    conversation = {**example, "messages": [*example["messages"], answer]}
    check_turns(conversation["messages"], ends_with_answer=True)
    text, spans = render(template, conversation, context)
    if not spans:
        raise RowError("the chat template marked no assistant turn")
    start, end = spans[-1]
    return text[:start], text[start:end]


def fit(prompt: list[int], answers: list[list[int]], cutoff_len: int) -> tuple:
    """Shorten prompt + each answer to cutoff_len tokens.

    The prompt keeps its last tokens (the latest turns), and at least half of cutoff_len when
    the answers need the room; answers are cut at their end.
    """
    longest = max(len(ids) for ids in answers)
    if len(prompt) + longest <= cutoff_len:
        return prompt, answers
    room = max(cutoff_len - longest, cutoff_len // 2)
    prompt = prompt[-room:] if len(prompt) > room else prompt
    return prompt, [ids[: cutoff_len - len(prompt)] for ids in answers]


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
    check_turns(example["messages"], ends_with_answer=False)
    return example


CONVERTERS = {
    "sharegpt": sharegpt_example,
}


def process_chunk(rows: list[Row]) -> Processed:
    """Convert, render and tokenize one chunk of rows."""
    out = Processed(rows_in=len(rows))
    good = []
    for row in rows:
        try:
            example = convert(row)
            template, context = WORKER["template"], WORKER["context"]
            chosen, rejected = example["chosen"], example["rejected"]
            prompt, chosen = prompt_and_answer(template, example, chosen, context)
            other, rejected = prompt_and_answer(template, example, rejected, context)
            if other != prompt:
                raise RowError("the template renders the prompt differently per answer")
            good.append((prompt, chosen, rejected))
        except RowError as exc:
            number, where, index, _ = row
            name = DATASETS[number]["name"]
            problem = {"dataset": name, "file": where, "row": index, "reason": str(exc)}
            out.problems.append(problem)
    texts = [text for triple in good for text in triple]
    encoded = WORKER["backend"].encode_batch_fast(texts, add_special_tokens=False)
    ids = [encoding.ids for encoding in encoded]
    prompts, chosen, rejected = [], [], []
    for begin in range(0, len(ids), 3):
        prompt, answers = ids[begin], ids[begin + 1 : begin + 3]
        short_prompt, answers = fit(prompt, answers, WORKER["cutoff"])
        whole = len(prompt) + max(len(ids[begin + 1]), len(ids[begin + 2]))
        out.truncated += whole > WORKER["cutoff"]
        prompts.append(short_prompt)
        chosen.append(answers[0])
        rejected.append(answers[1])
        out.lengths.append(len(short_prompt) + max(len(answers[0]), len(answers[1])))
    # A reward model scores whole conversations: prompt and answer in one sequence.
    pairs = zip(prompts, chosen, rejected, strict=True)
    rows = [(prompt + good, prompt + bad) for prompt, good, bad in pairs]
    out.columns["chosen_ids"] = [good for good, _ in rows]
    out.columns["rejected_ids"] = [bad for _, bad in rows]
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
    counts.update(tokens=0, max_length=0)
    ids = pa.list_(pa.int32())
    schema = pa.schema([("chosen_ids", ids), ("rejected_ids", ids)])
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
    rows_file = staging / "rows.arrow"
    with open(staging / "rejected.jsonl", "w", encoding="utf-8") as report:
        summary = write_rows(results, rows_file, report)
    report_problems(staging, summary["rows_rejected"], data.on_bad_row)
    if summary["rows_kept"] == 0:
        shutil.rmtree(staging, ignore_errors=True)
        message = "no rows left: each was malformed or too long"
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
