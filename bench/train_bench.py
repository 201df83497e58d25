"""Training benchmark: lfc's generated train.py vs LLaMA-Factory 0.9.5 vs a bare PyTorch loop.

lfc tiny-model (template llama3), SFT, LoRA and full fine-tuning, cutoff 512, batch 8, with and
without packing, a fixed number of optimizer steps, on two seeded data sets (long multi-turn
sharegpt; short alpaca). Measured per run: non-pad tokens/s over the steps after a warm-up,
seconds from command start to the end of the first optimizer step, and peak RSS. Run by
`nox -s bench-train` (quick: `nox -s bench-train -- --steps 6`); by hand, in a venv with lfc and
the generated project's requirements:

    python bench/train_bench.py [--steps 30] [--lf-python build/bench/lf-venv/bin/python]

Everything it makes goes under build/bench-train/. Writes build/bench-train/report.md and
results.json and, for a full run (30 steps or more, all cases), the "Training" section of
docs/benchmarks.md (only that section: the rest of the file is left as it is).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from synth import VERSION as SYNTH_VERSION  # noqa: E402
from train_data import write_long, write_short  # noqa: E402

CUTOFF = 512
BATCH = 8
LR = 1e-4
SEED = 42
FULL_STEPS = 30
SAMPLES = {"long": 1000, "short": 2000}
DATASETS = {
    "long": "long multi-turn sharegpt (bench/synth.py; 2-6 turns, most over 512 tokens)",
    "short": "short alpaca (50-300 tokens per sample)",
}
PAGE = os.sysconf("SC_PAGE_SIZE")
BASE_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PYTHONUNBUFFERED": "1",
    "DISABLE_VERSION_CHECK": "1",
}
SITECUSTOMIZE = """# Written by bench/train_bench.py: loads the timing probe (bench/train_probe.py).
import importlib.util as _u
_spec = _u.spec_from_file_location("_bench_train_probe", {path!r})
_probe = _u.module_from_spec(_spec)
_spec.loader.exec_module(_probe)
_probe.install()
"""

# --- measuring one command -------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
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


# A small launcher execs the command, so the kernel's maxrss of the command is its own (a child
# forked from this harness would inherit the harness's high-water mark).
LAUNCHER = """
import json, os, resource, sys, time
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status = os.waitpid(pid, 0)
maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
with open(sys.argv[1], "w") as out:
    json.dump({"rc": os.waitstatus_to_exitcode(status), "maxrss_kb": maxrss}, out)
"""


@dataclass
class Measured:
    rc: int
    wall_s: float
    start: float  # time.time() just before the launch
    peak_rss_sum: int  # bytes: the largest sum of RSS over the process tree, sampled at 20 Hz
    max_rss_process: int  # bytes: the kernel's maxrss of the largest single process
    stderr_tail: str
    probe: list[dict]


def measure(cmd: list[str], cwd: Path, env: dict[str, str], log: Path, probe_dir: Path) -> Measured:
    log.parent.mkdir(parents=True, exist_ok=True)
    probe_path, stats_path = log.with_suffix(".probe.jsonl"), log.with_suffix(".rusage.json")
    probe_path.unlink(missing_ok=True)
    stats_path.unlink(missing_ok=True)
    full_env = {**os.environ, **BASE_ENV, **env, "TRAIN_PROBE_OUT": str(probe_path)}
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(probe_dir), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    launcher = [sys.executable, "-I", "-S", "-c", LAUNCHER, str(stats_path), *cmd]
    out_path, err_path = log.with_suffix(".out"), log.with_suffix(".err")
    with open(out_path, "w") as out, open(err_path, "w") as err:
        start = time.time()
        proc = subprocess.Popen(launcher, cwd=cwd, env=full_env, stdout=out, stderr=err)
        peak = {"rss": 0}
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                pids = _tree(proc.pid)[1:]
                peak["rss"] = max(peak["rss"], sum(_rss(p) for p in pids))
                stop.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        proc.wait()
        wall = time.time() - start
        stop.set()
        sampler.join()
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {"rc": proc.returncode}
    probe = []
    if probe_path.exists():
        probe = [json.loads(line) for line in probe_path.read_text().splitlines() if line.strip()]
    err_lines = err_path.read_text(errors="replace").strip().splitlines()
    return Measured(
        rc=stats["rc"],
        wall_s=wall,
        start=start,
        peak_rss_sum=peak["rss"],
        max_rss_process=stats.get("maxrss_kb", 0) * 1024,
        stderr_tail="\n".join(err_lines[-15:]),
        probe=probe,
    )


# --- results ---------------------------------------------------------------------------------


@dataclass
class Result:
    dataset: str
    adapter: str  # lora | full
    contender: str  # lfc | lfc-plain | lf | limit
    mode: str  # none | packing | neat_packing (LF) ; layout for the limit
    steps: int = 0
    tokens_s: float | None = None  # non-pad tokens per second, after the warm-up steps
    labels_s: float | None = None  # supervised (label != -100) tokens per second
    padding: float | None = None  # fraction of positions that are padding
    first_step_s: float | None = None  # command start to the end of the first optimizer step
    wall_s: float | None = None
    peak_rss_sum: int | None = None
    max_rss_process: int | None = None
    skipped: str | None = None
    extra: dict = field(default_factory=dict)


def summarize(result: Result, m: Measured, skip: int) -> Result:
    steps = [e for e in m.probe if e.get("event") == "step"]
    result.wall_s, result.peak_rss_sum, result.max_rss_process = (
        m.wall_s, m.peak_rss_sum, m.max_rss_process
    )  # fmt: skip
    if m.rc != 0 or len(steps) <= skip:
        tail = m.stderr_tail.splitlines()[-1:] or ["(no stderr)"]
        result.skipped = f"failed (exit {m.rc}, {len(steps)} steps): {tail[0][:300]}"
        return result
    result.steps = len(steps)
    result.first_step_s = steps[0]["t"] - m.start
    timed = steps[skip:]
    seconds = timed[-1]["t"] - steps[skip - 1]["t"] if skip else timed[-1]["t"] - m.start
    result.tokens_s = sum(e["nonpad"] for e in timed) / seconds
    result.labels_s = sum(e["labels"] for e in timed) / seconds
    result.padding = 1 - sum(e["nonpad"] for e in timed) / max(1, sum(e["total"] for e in timed))
    begin = [e for e in m.probe if e.get("event") == "train_begin"]
    if begin:
        result.extra["train_begin_s"] = begin[0]["t"] - m.start
    starts = [e for e in m.probe if e.get("event") == "python_start"]
    if starts:  # the last Python process to start is the one that trains (accelerate's child)
        result.extra["process_start_s"] = starts[-1]["t"] - m.start
    result.extra["step_s"] = seconds / len(timed)
    return result


# --- preparing data, model and projects ------------------------------------------------------


def run_checked(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> str:
    done = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, **BASE_ENV, **(env or {})}
    )
    if done.returncode != 0:
        raise SystemExit(
            f"{' '.join(map(str, cmd))} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return done.stdout


def ensure_model(root: Path) -> Path:
    model = root / "tiny"
    stamp = model / "bench_train_model.json"
    want = {"template": "llama3", "seed": 0}
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        return model
    shutil.rmtree(model, ignore_errors=True)
    run_checked([sys.executable, "-m", "lfc", "tiny-model", str(model), "--template", "llama3"])
    stamp.write_text(json.dumps(want) + "\n")
    return model


def ensure_data(root: Path, seed: int) -> dict[str, Path]:
    out = {}
    for name, samples in SAMPLES.items():
        path = root / "data" / f"{name}-n{samples}-s{seed}-v{SYNTH_VERSION}.jsonl"
        if not path.exists():
            print(f"generating {samples:,} {name} samples -> {path}")
            (write_long if name == "long" else write_short)(path, samples, seed)
        out[name] = path
    return out


def lfc_spec(data: Path, model: Path, adapter: str, packing: bool) -> str:
    fmt = "sharegpt" if data.name.startswith("long") else "alpaca"
    adapter_yaml = (
        "{kind: lora, rank: 8, alpha: 16, dropout: 0.0, target: all-linear}"
        if adapter == "lora"
        else "full"
    )
    return f"""# Written by bench/train_bench.py: the training benchmark's lfc project.
lfc: 1
model:
  name_or_path: {model}
  dtype: float32
template: llama3
adapter: {adapter_yaml}
stage: {{kind: sft}}
data:
  datasets:
    - {{path: {data.name}, format: {fmt}}}
  cutoff_len: {CUTOFF}
  packing: {str(packing).lower()}
  val_size: 0.0
train:
  learning_rate: {LR}
  epochs: 1
  batch_size: {BATCH}
  grad_accum: 1
  logging_steps: 1
  save_steps: 100000
  seed: {SEED}
"""


def ensure_lfc_project(root: Path, data: Path, model: Path, adapter: str, packing: bool) -> Path:
    """Compile (if the spec changed) and run data.py (untimed) once."""
    name = f"{data.stem.split('-')[0]}-{adapter}-{'packed' if packing else 'padded'}"
    spec_text = lfc_spec(data, model, adapter, packing)
    spec = data.parent / f"lfc-{name}.yaml"
    project = root / "lfc" / name
    ready = project / ".bench-ready"
    if ready.exists() and ready.read_text() == spec_text:
        (project / PLAIN_LOSS_SCRIPT).write_text(PLAIN_LOSS)
        return project
    spec.write_text(spec_text)
    shutil.rmtree(project, ignore_errors=True)
    run_checked([sys.executable, "-m", "lfc", "compile", str(spec), "-o", str(project)])
    started = time.perf_counter()
    out = run_checked([sys.executable, "data.py"], cwd=project)
    summary = out.strip().splitlines()[-2][:160]
    print(f"  lfc {name}: data.py {time.perf_counter() - started:.1f} s: {summary}")
    (project / PLAIN_LOSS_SCRIPT).write_text(PLAIN_LOSS)
    ready.write_text(spec_text)
    return project


PLAIN_LOSS_SCRIPT = "bench_plain_loss.py"
PLAIN_LOSS = '''"""Diagnostic, written by bench/train_bench.py (not part of lfc's output).

Runs this project's train.py unchanged except that SFTTrainer.compute_loss is
transformers.Trainer.compute_loss: the model's own cross-entropy over the full logits, instead
of TRL's fused (tiled) LM head with its entropy and token-accuracy metrics.
"""

import runpy

import transformers
import trl


def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
    trainer = transformers.Trainer
    return trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)


trl.SFTTrainer.compute_loss = compute_loss
runpy.run_path("train.py", run_name="__main__")
'''


LF_NAMES = {"long": "bench_long", "short": "bench_short"}


def ensure_lf_data(root: Path, data: dict[str, Path]) -> Path:
    folder = root / "lf-data"
    folder.mkdir(parents=True, exist_ok=True)
    info = {}
    for name, path in data.items():
        target = folder / path.name
        if not target.exists():
            shutil.copyfile(path, target)
        entry = {"file_name": path.name}
        if name == "long":
            entry |= {
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
        else:
            entry["columns"] = {"prompt": "instruction", "query": "input", "response": "output"}
        info[LF_NAMES[name]] = entry
    (folder / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return folder


def ensure_lf_tokenized(
    root: Path, lf_python: Path, model: Path, dataset: str, mode: str, data_dir: Path
) -> Path:
    out = root / "lf" / "tokenized" / f"{dataset}-{mode}"
    key = out.with_suffix(".ready")
    want = f"{(data_dir / 'dataset_info.json').read_text()}{mode}{CUTOFF}"
    if out.exists() and key.exists() and key.read_text() == want:
        return out
    shutil.rmtree(out, ignore_errors=True)
    flags = {"none": [], "packing": ["--packing"], "neat_packing": ["--neat_packing"]}[mode]
    cmd = [
        str(lf_python), str(HERE / "train_lf_prep.py"), "--model", str(model),
        "--dataset_dir", str(data_dir), "--dataset", LF_NAMES[dataset], "--out", str(out),
        "--output_dir", str(root / "lf" / "prep-output"), "--cutoff_len", str(CUTOFF), *flags,
    ]  # fmt: skip
    env = {"HF_DATASETS_CACHE": str(root / "lf" / "hf-datasets-cache")}
    text = run_checked(cmd, env=env)
    line = next((x for x in text.splitlines() if x.startswith("LF_PREP ")), "")
    print(f"  LLaMA-Factory {dataset} {mode}: tokenized {line.removeprefix('LF_PREP ')}")
    key.write_text(want)
    return out


def lf_config(
    model: Path,
    dataset: str,
    adapter: str,
    mode: str,
    data_dir: Path,
    tokenized: Path,
    out: Path,
    steps: int,
) -> str:
    lines = [
        "# Written by bench/train_bench.py: LLaMA-Factory 0.9.5, same settings as lfc's project.",
        f"model_name_or_path: {model}",
        "stage: sft",
        "do_train: true",
        f"finetuning_type: {adapter}",
    ]
    if adapter == "lora":
        lines += ["lora_rank: 8", "lora_alpha: 16", "lora_dropout: 0.0", "lora_target: all"]
    lines += [
        f"dataset: {LF_NAMES[dataset]}",
        f"dataset_dir: {data_dir}",
        "template: llama3",
        f"cutoff_len: {CUTOFF}",
        f"packing: {str(mode != 'none').lower()}",
        f"neat_packing: {str(mode == 'neat_packing').lower()}",
        f"tokenized_path: {tokenized}",
        # lfc's projects do not checkpoint activations unless asked; LLaMA-Factory does by default.
        "disable_gradient_checkpointing: true",
        f"output_dir: {out}",
        "logging_steps: 1",
        "save_steps: 100000",
        "plot_loss: false",
        "report_to: none",
        f"per_device_train_batch_size: {BATCH}",
        "gradient_accumulation_steps: 1",
        f"learning_rate: {LR}",
        f"max_steps: {steps}",
        "num_train_epochs: 1",
        "lr_scheduler_type: cosine",
        "warmup_ratio: 0.0",
        "weight_decay: 0.0",
        "max_grad_norm: 1.0",
        f"seed: {SEED}",
        "bf16: false",
        "use_cpu: true",
    ]
    return "\n".join(lines) + "\n"


# --- contenders ------------------------------------------------------------------------------


def run_lfc(
    args, project: Path, dataset: str, adapter: str, packing: bool, plain: bool = False
) -> Result:
    mode = "packing" if packing else "none"
    contender = "lfc-plain" if plain else "lfc"
    result = Result(dataset, adapter, contender, mode)
    shutil.rmtree(project / "outputs", ignore_errors=True)
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    cmd = [
        accelerate, "launch", "--config_file", "accelerate/single.yaml",
        PLAIN_LOSS_SCRIPT if plain else "train.py", "--max_steps", str(args.steps),
    ]  # fmt: skip
    log = args.root / "logs" / f"{dataset}-{adapter}-{contender}-{mode}"
    env = {"HF_DATASETS_CACHE": str(project / ".hf-datasets-cache")}
    return summarize(result, measure(cmd, project, env, log, args.probe_dir), args.skip)


def run_lf(args, model: Path, data_dir: Path, dataset: str, adapter: str, mode: str) -> Result:
    result = Result(dataset, adapter, "lf", mode)
    if args.lf_python is None or not args.lf_python.exists():
        result.skipped = (
            f"no LLaMA-Factory virtualenv at {args.lf_python} (nox -s bench-data makes it)"
        )
        return result
    tokenized = ensure_lf_tokenized(args.root, args.lf_python, model, dataset, mode, data_dir)
    work = args.root / "lf" / f"{dataset}-{adapter}-{mode}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    config = work / "train.yaml"
    config.write_text(
        lf_config(model, dataset, adapter, mode, data_dir, tokenized, work / "output", args.steps)
    )
    cli = args.lf_python.with_name("llamafactory-cli")
    env = {
        "TRAIN_PROBE_STUB_TORCHAUDIO": "1",
        "HF_DATASETS_CACHE": str(args.root / "lf" / "hf-datasets-cache"),
        "CUDA_VISIBLE_DEVICES": "",
    }
    log = args.root / "logs" / f"{dataset}-{adapter}-lf-{mode}"
    return summarize(
        result, measure([str(cli), "train", str(config)], work, env, log, args.probe_dir), args.skip
    )


def run_limit(args, project: Path, model: Path, dataset: str, adapter: str, layout: str) -> Result:
    result = Result(dataset, adapter, "limit", layout)
    cmd = [
        sys.executable, str(HERE / "train_limit.py"), "--project", str(project), "--model",
        str(model), "--adapter", adapter, "--layout", layout, "--steps", str(args.steps),
        "--batch", str(BATCH), "--cutoff", str(CUTOFF), "--lr", str(LR), "--seed", str(SEED),
    ]  # fmt: skip
    log = args.root / "logs" / f"{dataset}-{adapter}-limit-{layout}"
    return summarize(result, measure(cmd, REPO, {}, log, args.probe_dir), args.skip)


# --- report ----------------------------------------------------------------------------------


def _versions(python: str) -> dict[str, str] | None:
    code = (
        "import importlib.metadata as m, json\n"
        "out = {}\n"
        "for n in ['lfc', 'llamafactory', 'transformers', 'trl', 'peft', 'accelerate', 'torch']:\n"
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
    mem_kb = 0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        pass
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
    return "–" if not value else f"{value / 2**30:.2f}"


def _find(results, dataset, adapter, contender, mode) -> Result | None:
    for r in results:
        if (r.dataset, r.adapter, r.contender, r.mode) == (dataset, adapter, contender, mode):
            return r if not r.skipped else None
    return None


def _ratio(a: Result | None, b: Result | None) -> str:
    if not (a and b and a.tokens_s and b.tokens_s):
        return "–"
    return f"{a.tokens_s / b.tokens_s:.2f}"


LABEL = {
    ("lfc", "none"): "lfc train.py",
    ("lfc", "packing"): "lfc train.py, packing (BFD, padding-free)",
    ("lfc-plain", "none"): "diagnostic: lfc train.py, plain HF loss",
    ("lfc-plain", "packing"): "diagnostic: lfc train.py, packing, plain HF loss",
    ("lf", "none"): "LLaMA-Factory",
    ("lf", "packing"): "LLaMA-Factory, packing",
    ("lf", "neat_packing"): "LLaMA-Factory, neat_packing",
    ("limit", "padded"): "bare loop, padded batches",
    ("limit", "padfree"): "bare loop, lfc's packed batches (padding-free)",
    ("limit", "rows"): "bare loop, same bins as 8 rows (diagnostic)",
}
# Which limit and which LLaMA-Factory run each row is compared with.
LIMIT_OF = {
    ("lfc", "none"): "padded",
    ("lfc", "packing"): "padfree",
    ("lfc-plain", "none"): "padded",
    ("lfc-plain", "packing"): "padfree",
    ("lf", "none"): "padded",
}
LF_OF = {
    ("lfc", "none"): "none",
    ("lfc", "packing"): "packing",
    ("lfc-plain", "none"): "none",
    ("lfc-plain", "packing"): "packing",
}


def tables(results: list[Result]) -> str:
    out = []
    for dataset in dict.fromkeys(r.dataset for r in results):
        out += [
            f"**{dataset}**: {DATASETS[dataset]}",
            "",
            "| adapter | run | tokens/s | vs bare loop | vs LLaMA-Factory | padding |"
            " first step (s) | peak RSS, sum (GiB) | largest process (GiB) |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in [r for r in results if r.dataset == dataset]:
            label = LABEL[(r.contender, r.mode)]
            if r.skipped:
                out.append(f"| {r.adapter} | {label} | skipped: {r.skipped} | | | | | | |")
                continue
            key = (r.contender, r.mode)
            limit = (
                _find(results, dataset, r.adapter, "limit", LIMIT_OF[key])
                if key in LIMIT_OF
                else None
            )
            lf = _find(results, dataset, r.adapter, "lf", LF_OF[key]) if key in LF_OF else None
            row = [
                r.adapter, label, _fmt(r.tokens_s), _ratio(r, limit), _ratio(r, lf),
                f"{100 * r.padding:.0f}%", _fmt(r.first_step_s, 1), _gb(r.peak_rss_sum),
                _gb(r.max_rss_process),
            ]  # fmt: skip
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    return "\n".join(out)


def startup(results: list[Result]) -> str:
    """Where the time to the first step goes, for lfc and LLaMA-Factory."""
    out = [
        "| data | adapter | run | training process starts | trainer ready (train_begin) |"
        " first step done |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for r in results:
        if r.skipped or r.contender not in ("lfc", "lf"):
            continue
        row = [
            r.dataset, r.adapter, LABEL[(r.contender, r.mode)],
            _fmt(r.extra.get("process_start_s"), 1), _fmt(r.extra.get("train_begin_s"), 1),
            _fmt(r.first_step_s, 1),
        ]  # fmt: skip
        out.append("| " + " | ".join(row) + " |")
    return "\n".join(out)


def targets(results: list[Result]) -> str:
    """The goals of issue 5, case by case; each line says met or not."""
    lines = []

    def check(ok: bool | None, text: str) -> None:
        mark = "–" if ok is None else ("met" if ok else "**not met**")
        lines.append(f"- {text}: {mark}")

    adapters = list(dict.fromkeys(r.adapter for r in results))
    for dataset in dict.fromkeys(r.dataset for r in results):
        for adapter in adapters:
            for mode, layout in (("none", "padded"), ("packing", "padfree")):
                lfc = _find(results, dataset, adapter, "lfc", mode)
                limit = _find(results, dataset, adapter, "limit", layout)
                lf = _find(results, dataset, adapter, "lf", mode)
                name = f"{dataset}, {adapter}, {'packed' if mode == 'packing' else 'padded'}"
                if lfc and limit:
                    ratio = lfc.tokens_s / limit.tokens_s
                    check(ratio >= 0.9, f"{name}: lfc ≥ 0.9x bare loop ({ratio:.2f}x)")
                if lfc and lf and lfc.first_step_s and lf.first_step_s:
                    check(
                        lfc.first_step_s <= lf.first_step_s / 2,
                        f"{name}: first step ≤ half of LLaMA-Factory's "
                        f"({lfc.first_step_s:.1f} s vs {lf.first_step_s:.1f} s)",
                    )
                if dataset == "long" and lfc and lf:
                    ratio = lfc.tokens_s / lf.tokens_s
                    check(ratio >= 1.0, f"{name}: lfc ≥ LLaMA-Factory tokens/s ({ratio:.2f}x)")
            if dataset == "short":
                lfc = _find(results, dataset, adapter, "lfc", "packing")
                lfs = [
                    _find(results, dataset, adapter, "lf", m) for m in ("packing", "neat_packing")
                ]
                lfs = [r for r in lfs if r]
                if lfc and lfs:
                    best = max(lfs, key=lambda r: r.tokens_s)
                    ratio = lfc.tokens_s / best.tokens_s
                    check(
                        ratio >= 1.2,
                        f"short, {adapter}: lfc packed ≥ 1.2x LLaMA-Factory's best packed "
                        f"({best.mode}) ({ratio:.2f}x)",
                    )
    return "\n".join(lines)


BEGIN, END = "<!-- bench-train:begin -->", "<!-- bench-train:end -->"


def section(results: list[Result], args, env: dict) -> str:
    m = env["machine"]
    versions = env["versions"] or {}
    lf_versions = {k: v for k, v in (env["lf_versions"] or {}).items() if k != "lfc"}
    quick = "" if args.steps >= FULL_STEPS else f" (quick run: {args.steps} steps)"
    return f"""{BEGIN}
## Training

Written by `nox -s bench-train`{quick}; reproduce with

    nox -s bench-train              # full: {FULL_STEPS} steps per run
    nox -s bench-train -- --steps 6 # quick

Machine: {m["cpu"]}, {m["cores"]} cores, {m["memory_gib"]} GiB, {m["os"]},
Python {m["python"]}, no GPU.
`OMP_NUM_THREADS=1` for every run. lfc side: {", ".join(f"{k} {v}" for k, v in versions.items())}.
LLaMA-Factory side: {", ".join(f"{k} {v}" for k, v in lf_versions.items()) or "not run"}.
The machine is shared with other work, so the figures are noisy (one run each; differences of
10-20% between runs are not unusual); read the ratios, not the third digit.

**Setup.** `lfc tiny-model --template llama3` (a random Llama: 2 layers, hidden 64, 2,048-token
BPE; so small that per-step overheads and attention dominate, not the matmuls), float32, sdpa
attention. SFT, LoRA (r 8, alpha 16, dropout 0, all linear layers) and full fine-tuning, cutoff
{CUTOFF}, batch {BATCH}, learning rate {LR:g}, cosine, AdamW (the Trainer's default fused
AdamW; the bare loop uses `torch.optim.AdamW(fused=True)`), gradient clipping 1.0, seed {SEED},
{args.steps} optimizer steps per run; throughput is taken over steps {args.skip + 1}-{args.steps}.
Data, seeded: **long**, {SAMPLES["long"]:,} conversations from bench/synth.py (most exceed 512
tokens and are cut to fit); **short**, {SAMPLES["short"]:,} alpaca rows of 50-300 tokens from
bench/train_data.py.

- **lfc**: `lfc compile` of a spec with exactly these settings (`data.packing` false or true),
  `python data.py` (not timed), then the timed command
  `accelerate launch --config_file accelerate/single.yaml train.py --max_steps N`.
- **LLaMA-Factory 0.9.5**: `llamafactory-cli train train.yaml` with stage sft, finetuning_type
  lora/full (lora_target all), template llama3, cutoff_len {CUTOFF}, per_device_train_batch_size
  {BATCH}, the same learning rate, schedule, clipping, seed and steps, `use_cpu: true`, and packing
  off, `packing: true`, or `neat_packing: true`; the data registered in a `dataset_info.json` of
  its own dataset_dir. Like lfc's data.py, LLaMA-Factory's tokenizing is done beforehand (its own
  `get_dataset` with `tokenized_path`, bench/train_lf_prep.py), so the timed run loads it from
  disk. `disable_gradient_checkpointing: true`, because LLaMA-Factory turns gradient checkpointing
  on by default and lfc's projects do not. LLaMA-Factory imports torchaudio at module level; only
  CUDA builds of it exist for torch 2.13, so an empty stand-in module is registered when it is
  missing (the text path never calls it).
- **bare loop** (bench/train_limit.py): the same model and LoRA (peft), the rows of lfc's
  data/processed/dataset, batches built before the first step, then `model(**batch)`, `backward`,
  `clip_grad_norm_`, `AdamW.step`, `zero_grad`. *Padded*: 8 rows padded to the longest (what lfc
  trains on unpacked). *Packed*: TRL's own BFD bins, 8 per batch flattened into one padding-free
  row with restarting position ids (what lfc's packed train.py trains on). *8 rows*: the same bins
  kept as 8 rows of ≤{CUTOFF} tokens with per-row restarting position ids, a diagnostic of the
  layout.
- **diagnostic: plain HF loss** (not lfc's output): the same project and command, except that a
  wrapper script (bench_plain_loss.py, written into the project) replaces
  `SFTTrainer.compute_loss` by `transformers.Trainer.compute_loss`, i.e. the model's own
  cross-entropy instead of TRL's fused, tiled LM head with its entropy and token-accuracy metrics.

Differences that are the contenders' own, not the benchmark's: LLaMA-Factory truncates a long
conversation inside its turns to exactly cutoff_len, so on the long set its unpacked rows are all
{CUTOFF} tokens (no padding), where lfc cuts after whole turns (mean 440 tokens); its `packing`
(without `neat_`) lets packed examples attend to each other (all-ones mask, plain causal
attention), while `neat_packing`, like lfc's packing, keeps them apart.

**How it is measured.** A probe (bench/train_probe.py) is loaded through a generated
`sitecustomize.py` on the command's PYTHONPATH; neither project is edited. It wraps
`transformers.Trainer.__init__` (both lfc's SFTTrainer and LLaMA-Factory's trainer derive from
it) to count the tokens of each micro-batch handed to `training_step` and, from a
`TrainerCallback.on_step_end` (just after the optimizer step), append a timestamp and the counts
to a file; the bare loop writes the same records. **tokens/s** = non-pad input tokens (ids that
are not the pad token; padding-free batches have none) of steps {args.skip + 1}-{args.steps}
over the time from the end of step {args.skip} to the end of step {args.steps}. **padding** = the
share of positions that are padding. **first step** = seconds from launching the command to
the end of the first optimizer step (imports, model and data loading, trainer set-up, one
step). **peak RSS, sum** = the largest sum of resident memory over the command's process tree,
sampled every 50 ms (accelerate's launcher process included for lfc); **largest process** = the
kernel's maxrss of the biggest single process.
"vs bare loop" compares with the bare loop on the same batches (padded or lfc's packed); "vs
LLaMA-Factory" with LLaMA-Factory in the same mode (unpacked, or `packing`).

{tables(results)}
**Time to the first step**, seconds from the command's start (the probe's records: when the
Python process that trains starts, when the trainer calls `on_train_begin`, when the first
optimizer step ends):

{startup(results)}

**Targets** (issue 5):

{targets(results)}
{END}
"""


def write_docs(path: Path, text: str) -> None:
    if path.exists():
        old = path.read_text(encoding="utf-8")
        if BEGIN in old and END in old:
            head, rest = old.split(BEGIN, 1)
            tail = rest.split(END, 1)[1]
            new = head + text.rstrip("\n") + tail
        else:
            new = old.rstrip("\n") + "\n\n" + text
    else:
        new = (
            "# Benchmarks\n\n"
            "<!-- The data-processing section is written by `nox -s bench-data`"
            " (bench/run.py); the training section below by `nox -s bench-train`. -->\n\n" + text
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new, encoding="utf-8")


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=FULL_STEPS)
    parser.add_argument("--skip", type=int, default=None, help="warm-up steps (default steps//6)")
    parser.add_argument("--seed", type=int, default=0, help="data seed")
    parser.add_argument("--root", type=Path, default=REPO / "build" / "bench-train")
    default_lf = REPO / "build" / "bench" / "lf-venv" / "bin" / "python"
    parser.add_argument("--lf-python", type=Path, default=default_lf)
    parser.add_argument("--datasets", default="long,short")
    parser.add_argument("--adapters", default="lora,full")
    parser.add_argument("--contenders", default="limit,lfc,lfc-plain,lf")
    parser.add_argument(
        "--from-results", action="store_true", help="only re-render the report from results.json"
    )
    parser.add_argument(
        "--docs", type=Path, default=None, help="default: docs/benchmarks.md on a full run"
    )
    args = parser.parse_args()
    args.root = args.root.resolve()
    args.lf_python = args.lf_python.absolute() if args.lf_python else None
    args.skip = max(1, args.steps // 6) if args.skip is None else args.skip
    if args.steps <= args.skip:
        raise SystemExit("--steps must exceed the warm-up steps (--skip)")
    datasets, adapters = args.datasets.split(","), args.adapters.split(",")
    contenders = args.contenders.split(",")
    full = (
        args.steps >= FULL_STEPS
        and len(datasets) == 2
        and len(adapters) == 2
        and {"limit", "lfc", "lf"} <= set(contenders)
    )
    if args.docs is None and full:
        args.docs = REPO / "docs" / "benchmarks.md"

    if args.from_results:
        saved = json.loads((args.root / "results.json").read_text())
        env = saved["env"]
        args.steps, args.skip = env["steps"], env["skip"]
        results = [Result(**r) for r in saved["results"]]
        text = section(results, args, env)
        (args.root / "report.md").write_text(text)
        print(text)
        docs = args.docs or (REPO / "docs" / "benchmarks.md" if args.steps >= FULL_STEPS else None)
        if docs:
            write_docs(docs, text)
            print(f"wrote the Training section of {docs}")
        return

    args.probe_dir = args.root / "probe"
    args.probe_dir.mkdir(parents=True, exist_ok=True)
    (args.probe_dir / "sitecustomize.py").write_text(
        SITECUSTOMIZE.format(path=str(HERE / "train_probe.py"))
    )
    model = ensure_model(args.root)
    data = ensure_data(args.root, args.seed)
    lf_dir = ensure_lf_data(args.root, data) if "lf" in contenders else None

    results: list[Result] = []

    def record(r: Result) -> None:
        results.append(r)
        if r.skipped:
            print(f"    {r.contender} {r.mode}: skipped: {r.skipped}", flush=True)
        else:
            print(
                f"    {r.contender} {r.mode}: {_fmt(r.tokens_s)} tokens/s, first step "
                f"{r.first_step_s:.1f} s, padding {100 * r.padding:.0f}%, peak RSS "
                f"{_gb(r.peak_rss_sum)} GiB (largest {_gb(r.max_rss_process)})",
                flush=True,
            )

    for dataset in datasets:
        for adapter in adapters:
            print(f"\n== {dataset}, {adapter}", flush=True)
            projects = {
                p: ensure_lfc_project(args.root, data[dataset], model, adapter, p)
                for p in (False, True)
            }
            if "limit" in contenders:
                for layout in ("padded", "padfree", "rows"):
                    record(run_limit(args, projects[False], model, dataset, adapter, layout))
            if "lfc" in contenders:
                for packing in (False, True):
                    record(run_lfc(args, projects[packing], dataset, adapter, packing))
            if "lfc-plain" in contenders:
                for packing in (False, True):
                    record(run_lfc(args, projects[packing], dataset, adapter, packing, plain=True))
            if "lf" in contenders:
                for mode in ("none", "packing", "neat_packing"):
                    record(run_lf(args, model, lf_dir, dataset, adapter, mode))

    order = {"limit": 0, "lfc": 1, "lfc-plain": 2, "lf": 3}
    results.sort(
        key=lambda r: (datasets.index(r.dataset), adapters.index(r.adapter), order[r.contender])
    )
    env = {
        "machine": machine(),
        "versions": _versions(sys.executable),
        "lf_versions": _versions(str(args.lf_python))
        if args.lf_python and args.lf_python.exists()
        else None,
        "steps": args.steps,
        "skip": args.skip,
    }
    text = section(results, args, env)
    (args.root / "report.md").write_text(text)
    (args.root / "results.json").write_text(
        json.dumps({"env": env, "results": [asdict(r) for r in results]}, indent=2)
    )
    print("\n" + tables(results) + "\n" + targets(results))
    print(f"\nwrote {args.root / 'report.md'} and {args.root / 'results.json'}")
    if args.docs:
        write_docs(args.docs, text)
        print(f"wrote the Training section of {args.docs}")


if __name__ == "__main__":
    main()
