"""Data-processing benchmark: lfc's data.py vs LLaMA-Factory 0.9.5 vs the tokenizer alone.

Same seeded sharegpt data, same tokenizer, Llama 3 template, cutoff_len 4096, each contender
with 1 and 2 processes, for two tokenizers (lfc's tiny 2,048-token BPE and a 32,000-token one).
Run by `nox -s bench-data` (which also builds LLaMA-Factory's virtualenv); by hand:

    python bench/run.py [--samples 20000] [--lf-python build/bench/lf-venv/bin/python]

Everything it makes goes under build/bench/. Prints the tables and writes build/bench/report.md,
build/bench/results.json and, for a full run (20,000 samples), docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from make_models import BIG_VOCAB, ensure_model  # noqa: E402
from synth import VERSION, write_conversations  # noqa: E402

FULL_SAMPLES = 20_000
CUTOFF_LEN = 4096
PAGE = os.sysconf("SC_PAGE_SIZE")
TOKENIZERS = {
    "tiny": "lfc tiny-model (2,048-token byte-level BPE)",
    "bpe32k": f"{BIG_VOCAB:,}-token byte-level BPE, Llama 3 split",
}
BASE_ENV = {
    "OMP_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_VERBOSITY": "warning",
    "PYTHONUNBUFFERED": "1",
}


# --- measuring one command -------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    """pid and all its descendants, from /proc/PID/task/TID/children."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children") as f:
                    todo.extend(int(child) for child in f.read().split())
            except OSError:
                pass
    return found


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class Measured:
    wall_s: float
    rc: int
    stdout: str
    stderr: str
    peak_rss_sum: int  # bytes: the largest sum of RSS over the process tree, sampled
    max_rss_process: int  # bytes: the kernel's maxrss of the largest single process
    processes: int  # the most processes seen at once


# Runs the command from a small process, so the kernel's maxrss of the command is its own: a
# child forked straight from this (large) harness would inherit the harness's RSS high-water mark.
LAUNCHER = """
import json, os, resource, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status = os.waitpid(pid, 0)
wall = time.perf_counter() - started
maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
with open(sys.argv[1], "w") as out:
    json.dump({"wall_s": wall, "rc": os.waitstatus_to_exitcode(status), "maxrss_kb": maxrss}, out)
"""


def measure(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> Measured:
    """Run `cmd`, timing it from start to exit and sampling its process tree's RSS (20 Hz)."""
    full_env = {**os.environ, **BASE_ENV, **env}
    log.parent.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log.with_suffix(".out"), log.with_suffix(".err")
    stats_path = log.with_suffix(".rusage.json")
    stats_path.unlink(missing_ok=True)
    launcher = [sys.executable, "-I", "-S", "-c", LAUNCHER, str(stats_path), *cmd]
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(launcher, cwd=cwd, env=full_env, stdout=out, stderr=err)
        peak = {"rss": 0, "procs": 0}
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                pids = _tree(proc.pid)[1:]  # the command and its children, not the launcher
                peak["rss"] = max(peak["rss"], sum(_rss(p) for p in pids))
                peak["procs"] = max(peak["procs"], len(pids))
                stop.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        proc.wait()
        stop.set()
        sampler.join()
    stats = json.loads(stats_path.read_text())
    return Measured(
        wall_s=stats["wall_s"],
        rc=stats["rc"],
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
        peak_rss_sum=peak["rss"],
        max_rss_process=stats["maxrss_kb"] * 1024,
        processes=peak["procs"],
    )


# --- results ---------------------------------------------------------------------------------


@dataclass
class Result:
    tokenizer: str
    contender: str  # limit | lf | lfc | lfc-cached
    procs: int
    samples: int
    seconds: float | None = None
    tokens: int | None = None
    peak_rss_sum: int | None = None
    max_rss_process: int | None = None
    skipped: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def samples_s(self) -> float | None:
        return self.samples / self.seconds if self.seconds else None

    @property
    def tokens_s(self) -> float | None:
        return self.tokens / self.seconds if self.seconds and self.tokens else None


def _best(runs: list[tuple[Measured, float, dict]]) -> tuple[Measured, float, dict]:
    return min(runs, key=lambda run: run[1])


def _fail(what: str, m: Measured) -> str:
    tail = (m.stderr.strip().splitlines() or ["(no stderr)"])[-1]
    return f"{what} failed (exit {m.rc}): {tail[:300]}"


# --- contenders ------------------------------------------------------------------------------


def run_limit(tok: str, model: Path, data: Path, procs: int, samples: int, args) -> Result:
    parallel = "true" if procs > 1 else "false"
    env = {"RAYON_NUM_THREADS": str(procs), "TOKENIZERS_PARALLELISM": parallel}
    runs = []
    for attempt in range(args.repeat):
        log = args.root / "logs" / f"{tok}-limit-{procs}-{attempt}"
        m = measure([sys.executable, str(HERE / "limit.py"), str(model), str(data)], REPO, env, log)
        if m.rc != 0:
            return Result(tok, "limit", procs, samples, skipped=_fail("limit.py", m))
        info = json.loads(m.stdout.strip().splitlines()[-1])
        runs.append((m, info["encode_s"], info))
    m, seconds, info = _best(runs)
    return Result(
        tok, "limit", procs, samples, seconds, info["tokens"], m.peak_rss_sum, m.max_rss_process,
        extra={"render_s": info["render_s"], "process_wall_s": m.wall_s},
    )  # fmt: skip


def write_spec(path: Path, model: Path, data: Path) -> Path:
    data_path = os.path.relpath(data, path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"""# Written by bench/run.py: the data-processing benchmark's project.
lfc: 1
model:
  name_or_path: {model}
  dtype: float32
template: llama3
adapter: {{kind: lora, rank: 8, alpha: 16, dropout: 0.0, target: all-linear}}
stage: {{kind: sft}}
data:
  datasets:
    - {{path: {data_path}, format: sharegpt}}
  cutoff_len: {CUTOFF_LEN}
  val_size: 0.0
train:
  learning_rate: 1.0e-4
  epochs: 1
  batch_size: 4
  seed: 42
""",
        encoding="utf-8",
    )
    return path


def compile_project(spec: Path, out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "lfc", "compile", str(spec), "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"lfc compile failed:\n{done.stdout}{done.stderr}")


def _summary_tokens(stdout: str) -> int | None:
    found = re.findall(r"(?:^|\s)tokens=(\d+)", stdout)
    return int(found[-1]) if found else None


def run_lfc(tok: str, model: Path, data: Path, procs: int, samples: int, args) -> list[Result]:
    spec = write_spec(data.parent / f"lfc-spec-{tok}.yaml", model, data)
    flags = ["--num_proc", str(procs)] if procs > 1 else []
    env = {"TOKENIZERS_PARALLELISM": "false", "RAYON_NUM_THREADS": "1"}
    runs, cached = [], None
    for attempt in range(args.repeat):
        # A fresh project each time, so its cache (data/processed/) cannot serve the run.
        project = args.root / tok / f"lfc-p{procs}"
        compile_project(spec, project)
        env["HF_DATASETS_CACHE"] = str(project / ".hf-datasets-cache")
        log = args.root / "logs" / f"{tok}-lfc-{procs}-{attempt}"
        m = measure([sys.executable, "data.py", *flags], project, env, log)
        if m.rc != 0:
            if procs > 1 and "num_proc" in m.stderr:
                reason = "data.py does not accept --num_proc yet (" + _fail("data.py", m) + ")"
                print(f"  lfc with {procs} processes skipped: {reason}")
                return [Result(tok, "lfc", procs, samples, skipped=reason)]
            return [Result(tok, "lfc", procs, samples, skipped=_fail("data.py", m))]
        runs.append((m, m.wall_s, {}))
        if procs == 1 and cached is None:
            # Unchanged inputs: the second run should be served from data/processed/.
            log = args.root / "logs" / f"{tok}-lfc-{procs}-cached"
            again = measure([sys.executable, "data.py", *flags], project, env, log)
            if again.rc != 0:
                cached = Result(tok, "lfc-cached", 1, samples, skipped=_fail("data.py", again))
            else:
                cached = Result(
                    tok, "lfc-cached", 1, samples, again.wall_s, _summary_tokens(again.stdout),
                    again.peak_rss_sum, again.max_rss_process,
                    extra={"first_s": m.wall_s, "percent_of_first": 100 * again.wall_s / m.wall_s},
                )  # fmt: skip
    m, seconds, _ = _best(runs)
    results = [
        Result(
            tok,
            "lfc",
            procs,
            samples,
            seconds,
            _summary_tokens(m.stdout),
            m.peak_rss_sum,
            m.max_rss_process,
            extra={"processes_seen": m.processes},
        )  # fmt: skip
    ]
    return results + ([cached] if cached else [])


def write_dataset_info(data: Path) -> str:
    """LLaMA-Factory's dataset_info.json beside the data file; returns the dataset's name."""
    name = data.stem
    info = {
        name: {
            "file_name": data.name,
            "formatting": "sharegpt",
            "columns": {"messages": "conversations", "system": "system"},
            "tags": {
                "role_tag": "from",
                "content_tag": "value",
                "user_tag": "human",
                "assistant_tag": "gpt",
                "system_tag": "system",
            },
        }
    }
    (data.parent / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return name


def _arrow_tokens(tokenized: Path) -> int:
    from datasets import load_from_disk

    split = load_from_disk(str(tokenized))["train"]
    import pyarrow.compute as pc

    return int(pc.sum(pc.list_value_length(split.data.column("input_ids"))).as_py())


def run_lf(tok: str, model: Path, data: Path, procs: int, samples: int, args) -> Result:
    if args.lf_python is None or not Path(args.lf_python).exists():
        reason = f"no LLaMA-Factory virtualenv at {args.lf_python} (nox -s bench-data makes it)"
        return Result(tok, "lf", procs, samples, skipped=reason)
    name = write_dataset_info(data)
    work = args.root / tok / f"lf-p{procs}"
    env = {"TOKENIZERS_PARALLELISM": "false", "RAYON_NUM_THREADS": "1"}
    runs = []
    for attempt in range(args.repeat):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        # A fresh datasets cache too: LLaMA-Factory caches load_dataset and map results there.
        env["HF_DATASETS_CACHE"] = str(work / "hf-datasets-cache")
        cmd = [
            str(args.lf_python), str(HERE / "lf_preprocess.py"), "--model", str(model),
            "--dataset_dir", str(data.parent), "--dataset", name, "--workers", str(procs),
            "--cutoff_len", str(CUTOFF_LEN), "--out", str(work / "tokenized"),
            "--output_dir", str(work / "output"),
        ]  # fmt: skip
        m = measure(cmd, REPO, env, args.root / "logs" / f"{tok}-lf-{procs}-{attempt}")
        lines = [line for line in m.stdout.splitlines() if line.startswith("LF_RESULT ")]
        if m.rc != 0 or not lines:
            return Result(tok, "lf", procs, samples, skipped=_fail("lf_preprocess.py", m))
        info = json.loads(lines[-1].removeprefix("LF_RESULT "))
        info["tokens"] = _arrow_tokens(work / "tokenized")
        runs.append((m, m.wall_s, info))
    m, seconds, info = _best(runs)
    return Result(
        tok, "lf", procs, samples, seconds, info["tokens"], m.peak_rss_sum, m.max_rss_process,
        extra={k: info[k] for k in ("import_s", "preprocess_s")} | {"processes_seen": m.processes},
    )  # fmt: skip


# --- report ----------------------------------------------------------------------------------


def _versions(python: str) -> dict[str, str] | None:
    code = (
        "import importlib.metadata as m, json\n"
        "names = ['llamafactory', 'transformers', 'tokenizers', 'datasets', 'torch']\n"
        "out = {}\n"
        "for n in names:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
        return json.loads(done.stdout)
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def machine() -> dict:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem_kb / 2**20, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def _fmt(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _gb(value: int | None) -> str:
    return "–" if not value else f"{value / 1e9:.2f} GB"


LABELS = {
    "limit": "tokenizer alone (encode_batch)",
    "lf": "LLaMA-Factory 0.9.5",
    "lfc": "lfc data.py",
    "lfc-cached": "lfc data.py, 2nd run, unchanged inputs",
}


def _procs(r: Result) -> str:
    if r.contender == "limit":
        return f"{r.procs} thread" + ("s" if r.procs > 1 else "")
    return f"{r.procs} process" + ("es" if r.procs > 1 else "")


def _find(results: list[Result], tok: str, contender: str, procs: int) -> Result | None:
    for r in results:
        if (r.tokenizer, r.contender, r.procs) == (tok, contender, procs):
            return r
    return None


def _ratio(a: Result | None, b: Result | None) -> str:
    if not (a and b and a.samples_s and b.samples_s):
        return "–"
    return f"{a.samples_s / b.samples_s:.2f}"


def tables(results: list[Result], procs: list[int]) -> str:
    toks = list(dict.fromkeys(r.tokenizer for r in results))
    lines = [
        "**Ratios** (samples/s of lfc divided by the other's, same tokenizer and process count;"
        " above 1 means lfc is faster)",
        "",
        "| tokenizer | processes | lfc / limit | lfc / LLaMA-Factory |",
        "| --- | ---: | ---: | ---: |",
    ]
    for tok in toks:
        for n in procs:
            lfc = _find(results, tok, "lfc", n)
            row = [tok, str(n), _ratio(lfc, _find(results, tok, "limit", n))]
            row.append(_ratio(lfc, _find(results, tok, "lf", n)))
            lines.append("| " + " | ".join(row) + " |")
    for tok in toks:
        limit = [r for r in results if (r.tokenizer, r.contender) == (tok, "limit")]
        tokens = next((r.tokens for r in limit if r.tokens), None)
        samples = next(r.samples for r in results if r.tokenizer == tok)
        lines += [
            "",
            f"**{tok}**: {TOKENIZERS[tok]}; {samples:,} conversations"
            + (f", {tokens:,} tokens before the cutoff (limit's count)" if tokens else ""),
            "",
            "| contender | parallelism | seconds | samples/s | tokens/s | peak RSS (sum) |"
            " largest process |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in [r for r in results if r.tokenizer == tok]:
            label = LABELS[r.contender]
            if r.skipped:
                lines.append(f"| {label} | {_procs(r)} | skipped: {r.skipped} | | | | |")
                continue
            seconds = _fmt(r.seconds, 1)
            if r.contender == "lfc-cached":
                seconds += f" ({r.extra['percent_of_first']:.1f}% of the first)"
            tokens_s = None if r.contender == "lfc-cached" else r.tokens_s
            row = [label, _procs(r), seconds, _fmt(r.samples_s), _fmt(tokens_s)]
            row += [_gb(r.peak_rss_sum), _gb(r.max_rss_process)]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def report(results: list[Result], args, env: dict) -> str:
    m = env["machine"]
    command = "nox -s bench-data"
    if args.samples != FULL_SAMPLES:
        command += f" -- --samples {args.samples}"

    def stack(versions: dict | None) -> str:
        versions = versions or {}
        names = ("transformers", "tokenizers", "datasets")
        return ", ".join(f"{n} {versions.get(n, '?')}" for n in names)

    lf_version = (env.get("lf_versions") or {}).get("llamafactory", "?")
    return f"""# Benchmarks

## Data processing (`nox -s bench-data`)

Reproduce: `{command}` (`-- --samples 500` for a quick check).
Measured on {m["cpu"]}, {m["cores"]} cores, {m["memory_gib"]} GiB, {m["os"]}, Python {m["python"]};
lfc's data.py with {stack(env.get("versions"))};
LLaMA-Factory {lf_version} in its own virtualenv with {stack(env.get("lf_versions"))}.
{env.get("date", "?")}, seed {args.seed}, best of {args.repeat} run(s) each; the run took
{env.get("minutes", "?")} minutes, with load averages {env.get("load_before")} before and
{env.get("load_after")} after it (other work on the machine slows it: the figures are noisy).
How it measures, and what LLaMA-Factory's install needed: bench/README.md.

The data: {args.samples:,} seeded synthetic sharegpt conversations (bench/synth.py), 2 to 6
user/assistant pairs each, users writing tens to ~200 words and answers 1 to ~800 words, 30% with a
system prompt. Every contender gets the same file and tokenizer, the Llama 3 template and
cutoff_len {CUTOFF_LEN}.

- **tokenizer alone** (the limit): `tokenizers.Tokenizer.encode_batch` (with offsets) over texts
  already rendered by `apply_chat_template(tokenize=False)`, batches of 1,000; only the encoding is
  timed; 1 thread (`RAYON_NUM_THREADS=1`, `TOKENIZERS_PARALLELISM=false`) and 2 threads.
- **LLaMA-Factory 0.9.5**: its own `get_train_args`, `load_tokenizer`,
  `get_template_and_fix_tokenizer` and `get_dataset` (what `run_sft` calls before it loads the
  model), saving to `tokenized_path`, `preprocessing_num_workers` 1 and 2, a fresh datasets cache
  and `overwrite_cache`; timed from process start to exit (its imports take several seconds of it).
- **lfc**: `python data.py` in a freshly compiled project (`--num_proc 2` for two processes), timed
  from process start to exit, including imports and saving. The second run repeats it with
  unchanged inputs, where data.py's cache should answer.

Samples/s is conversations in over seconds; tokens/s counts each contender's own output tokens
(lfc and LLaMA-Factory after the cutoff, the limit before it). Peak RSS (sum) is the largest sum of
resident memory over the process and all its children, sampled every 50 ms (shared pages of forked
workers count once per process); largest process is the kernel's maxrss of the biggest single one.

{tables(results, args.procs)}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=FULL_SAMPLES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", type=Path, default=REPO / "build" / "bench")
    default_lf = REPO / "build" / "bench" / "lf-venv" / "bin" / "python"
    parser.add_argument("--lf-python", default=str(default_lf), help="LLaMA-Factory's python")
    parser.add_argument("--tokenizers", default="tiny,bpe32k")
    parser.add_argument("--procs", default="1,2")
    parser.add_argument("--contenders", default="limit,lf,lfc")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the fastest counts")
    parser.add_argument(
        "--docs",
        type=Path,
        default=None,
        help="where to write the report too (default: docs/benchmarks.md for a full run)",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the report from results.json"
    )
    args = parser.parse_args()
    args.root = args.root.resolve()
    if args.report_only:
        return report_only(args)
    started = time.perf_counter()
    load_before = [round(x, 2) for x in os.getloadavg()]
    args.procs = [int(n) for n in args.procs.split(",")]
    toks = args.tokenizers.split(",")
    contenders = args.contenders.split(",")
    if args.docs is None and args.samples == FULL_SAMPLES:
        args.docs = REPO / "docs" / "benchmarks.md"

    data = args.root / "data" / f"sharegpt-n{args.samples}-s{args.seed}-v{VERSION}.jsonl"
    if not data.exists():
        print(f"generating {args.samples:,} conversations -> {data}")
        write_conversations(data, args.samples, args.seed)
    print(f"data: {data} ({data.stat().st_size / 1e6:.0f} MB)")

    results: list[Result] = []
    for tok in toks:
        model = ensure_model(tok, args.root / "models", args.seed)
        print(f"\n== {tok}: {TOKENIZERS[tok]} ({model})")
        for n in args.procs:
            for contender in contenders:
                print(f"  {contender}, {n} process(es)/thread(s) ...", flush=True)
                runner = {"limit": run_limit, "lf": run_lf, "lfc": run_lfc}[contender]
                got = runner(tok, model, data, n, args.samples, args)
                for r in got if isinstance(got, list) else [got]:
                    results.append(r)
                    if r.skipped:
                        print(f"    {r.contender}: skipped: {r.skipped}")
                    else:
                        print(
                            f"    {r.contender}: {r.seconds:.1f} s, {_fmt(r.samples_s)} samples/s, "
                            f"{_fmt(r.tokens_s)} tokens/s, peak RSS {_gb(r.peak_rss_sum)}"
                        )

    order = {c: i for i, c in enumerate(("limit", "lf", "lfc", "lfc-cached"))}
    results.sort(key=lambda r: (toks.index(r.tokenizer), order[r.contender], r.procs))
    env = {
        "machine": machine(),
        "versions": _versions(sys.executable),
        "lf_versions": _versions(args.lf_python) if Path(args.lf_python).exists() else None,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    settings = {"samples": args.samples, "seed": args.seed, "repeat": args.repeat}
    dump = [vars(r) | {"samples_s": r.samples_s, "tokens_s": r.tokens_s} for r in results]
    payload = {"args": settings, "env": env, "results": dump}
    (args.root / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    write_outputs(results, args, env)


def write_outputs(results: list[Result], args, env: dict) -> None:
    text = report(results, args, env)
    (args.root / "report.md").write_text(text)
    print("\n" + tables(results, args.procs))
    print(f"\nwrote {args.root / 'report.md'} and {args.root / 'results.json'}")
    if args.docs:
        args.docs.parent.mkdir(parents=True, exist_ok=True)
        args.docs.write_text(text + kept_training_section(args.docs))
        print(f"wrote {args.docs}")


def kept_training_section(docs: Path) -> str:
    """The bench-train section of an existing docs/benchmarks.md, kept when rewriting it."""
    begin, end = "<!-- bench-train:begin -->", "<!-- bench-train:end -->"
    old = docs.read_text() if docs.is_file() else ""
    if begin not in old or end not in old:
        return ""
    return "\n" + old[old.index(begin) : old.index(end) + len(end)] + "\n"


def report_only(args) -> None:
    """Rewrite the report from build/bench/results.json, running nothing."""
    payload = json.loads((args.root / "results.json").read_text())
    for key, value in payload.get("args", {}).items():
        setattr(args, key, value)
    fields = set(Result.__dataclass_fields__)
    results = [Result(**{k: v for k, v in r.items() if k in fields}) for r in payload["results"]]
    args.procs = sorted({r.procs for r in results})
    if args.docs is None and args.samples == FULL_SAMPLES:
        args.docs = REPO / "docs" / "benchmarks.md"
    write_outputs(results, args, payload["env"])


if __name__ == "__main__":
    main()
