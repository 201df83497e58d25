"""data.py as the data engine: sources, mixing, sampling, placeholders, processes, cache, bad rows.

Each test compiles a small spec next to a copy of the tiny model and runs the generated
data.py for real; results are read back from data/processed/ with `datasets`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lfc.errors import SpecError
from lfc.pipeline import compile_file
from lfc.writer import write_project

from conftest import EXAMPLES

datasets = pytest.importorskip("datasets")
pytest.importorskip("trl")

LF_DATA = EXAMPLES / "data" / "llamafactory"


def alpaca_rows(prefix: str, count: int) -> list[dict[str, str]]:
    return [
        {"instruction": f"{prefix}{n} question", "input": "", "output": f"{prefix}{n} answer"}
        for n in range(count)
    ]


def make_project(tmp: Path, tiny_model: Path, spec: str, files: dict[str, object]) -> Path:
    """Write `files` (JSON values, bytes or text) and spec.yaml into tmp/spec, compile to tmp/run."""
    spec_dir = tmp / "spec"
    for name, content in files.items():
        path = spec_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_text(json.dumps(content), encoding="utf-8")
    header = "lfc: 1\nmodel: {name_or_path: ../tiny-llama, dtype: float32}\ntemplate: llama3\n"
    (spec_dir / "spec.yaml").write_text(header + textwrap.dedent(spec), encoding="utf-8")
    if not (tmp / "tiny-llama").exists():
        shutil.copytree(tiny_model, tmp / "tiny-llama")
    project = tmp / "run"
    write_project(compile_file(spec_dir / "spec.yaml").files, project)
    return project


def run_data(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "data.py", *args], cwd=project, env=env, capture_output=True, text=True
    )


def processed(project: Path) -> dict[str, list[dict]]:
    saved = datasets.load_from_disk(str(project / "data" / "processed" / "dataset"))
    return {name: split.to_list() for name, split in saved.items()}


def decode(tiny_model: Path, ids: list[int]) -> str:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model).decode(ids)


def test_every_local_file_type_and_a_hub_folder_give_the_same_rows(
    tmp_path: Path, tiny_model: Path
) -> None:
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pa_parquet

    rows = alpaca_rows("q", 6)
    table = pyarrow.Table.from_pylist(rows)
    hub_dir = tmp_path / "hub_dataset"
    hub_dir.mkdir()
    (hub_dir / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    csv_file, parquet_file, arrow_file = (tmp_path / f"t.{ext}" for ext in ("csv", "pq", "ar"))
    pa_csv.write_csv(table, csv_file)
    pa_parquet.write_table(table, parquet_file)
    with (
        pyarrow.OSFile(str(arrow_file), "wb") as sink,
        pyarrow.ipc.new_stream(sink, table.schema) as writer,
    ):
        writer.write_table(table)
    spec = f"""\
    adapter: lora
    data:
      datasets:
        - {{path: rows_json.json, format: alpaca}}
        - {{path: rows_jsonl.jsonl, format: alpaca}}
        - {{path: rows_csv.csv, format: alpaca}}
        - {{path: rows_parquet.parquet, format: alpaca}}
        - {{path: rows_arrow.arrow, format: alpaca}}
        - {{path: folder, format: alpaca}}
        - {{hub: {hub_dir}, format: alpaca, name: hub_plain}}
        - {{hub: {hub_dir}, format: alpaca, name: hub_streamed, streaming: true}}
    """
    files = {
        "rows_json.json": rows,
        "rows_jsonl.jsonl": "".join(json.dumps(r) + "\n" for r in rows),
        "rows_csv.csv": csv_file.read_bytes(),
        "rows_parquet.parquet": parquet_file.read_bytes(),
        "rows_arrow.arrow": arrow_file.read_bytes(),
        "folder/a.jsonl": "".join(json.dumps(r) + "\n" for r in rows[:3]),
        "folder/b.jsonl": "".join(json.dumps(r) + "\n" for r in rows[3:]),
    }
    project = make_project(tmp_path, tiny_model, spec, files)
    assert (project / "data" / "folder" / "b.jsonl").is_file()
    assert not (project / "data" / "hub_plain").exists()  # hub data is loaded, not copied
    result = run_data(project)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rows_read=48 rows_kept=48" in result.stdout
    train = processed(project)["train"]
    first = [row["input_ids"] for row in train[:6]]
    for copy in range(1, 8):
        assert [row["input_ids"] for row in train[6 * copy : 6 * copy + 6]] == first, copy


def test_registry_names_compile_to_plain_datasets(tmp_path: Path) -> None:
    spec_dir = tmp_path / "spec"
    shutil.copytree(LF_DATA, spec_dir / "lf")
    (spec_dir / "spec.yaml").write_text(
        "lfc: 1\nmodel: {name_or_path: m}\ntemplate: qwen\nstage: sft\n"
        "data:\n  registry: lf/dataset_info.json\n"
        "  datasets: [alpaca_en_demo, glaive_toolcall_en_demo]\n"
    )
    files = compile_file(spec_dir / "spec.yaml").files
    spec = files["spec.yaml"].decode()
    assert "registry: null" in spec
    assert "path: data/alpaca_en_demo.json" in spec
    assert "path: data/glaive_toolcall_en_demo.json" in spec
    assert files["data/alpaca_en_demo.json"] == (LF_DATA / "alpaca_en_demo.json").read_bytes()
    assert b'"tools": "tools"' in files["data.py"]


@pytest.mark.parametrize(
    ("datasets_line", "stage", "expected"),
    [
        ("[alpaca_en_dem]", "sft", "'alpaca_en_dem' is not in lf/dataset_info.json; did you mean"),
        ("[deepctrl]", "sft", "only ['ms_hub_url'] given"),
        ("[mllm_audio_demo]", "sft", "an audios column needs an audio model (no model.multimodal)"),
        ("[mllm_video_demo]", "sft", "a videos column needs a video model: set model.multimodal"),
        ("[alpaca_en_demo]", "dpo", "holds conversation rows, but stage dpo trains on pairwise"),
        ("[dpo_en_demo]", "sft", "holds pairwise rows, but stage sft trains on conversations"),
    ],
)
def test_registry_and_stage_mismatches_are_compile_errors(
    datasets_line: str, stage: str, expected: str, tmp_path: Path
) -> None:
    spec_dir = tmp_path / "spec"
    shutil.copytree(LF_DATA, spec_dir / "lf")
    (spec_dir / "spec.yaml").write_text(
        f"lfc: 1\nmodel: {{name_or_path: m}}\ntemplate: llama3\nstage: {stage}\n"
        f"data:\n  registry: lf/dataset_info.json\n  datasets: {datasets_line}\n"
    )
    with pytest.raises(SpecError) as info:
        compile_file(spec_dir / "spec.yaml")
    assert expected in str(info.value)


def test_pt_registry_entries_become_text_blocks(tmp_path: Path, tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    spec_dir = tmp_path / "spec"
    shutil.copytree(LF_DATA, spec_dir / "lf")
    spec = """\
    stage: pt
    data: {registry: lf/dataset_info.json, datasets: [wiki_demo], cutoff_len: 128}
    """
    project = make_project(tmp_path, tiny_model, spec, {})
    result = run_data(project)
    assert result.returncode == 0, result.stderr[-3000:]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    documents = [line for line in (LF_DATA / "wiki_demo.txt").read_text().splitlines() if line]
    stream = []
    for document in documents:
        stream += tokenizer(document, add_special_tokens=False)["input_ids"]
        stream.append(tokenizer.eos_token_id)
    blocks = [row["input_ids"] for row in processed(project)["train"]]
    assert all(len(block) == 128 for block in blocks)
    assert len(blocks) == len(stream) // 128
    assert [token for block in blocks for token in block] == stream[: 128 * len(blocks)]


@pytest.mark.parametrize(
    ("strategy", "check"),
    [
        ("first_exhausted", lambda a, b: (a == 10) != (b == 30) and a <= 10 and b <= 30),
        ("all_exhausted", lambda a, b: a >= 10 and b >= 30),
    ],
)
def test_interleaving_draws_by_probability_until_the_strategy_stops(
    strategy: str, check, tmp_path: Path, tiny_model: Path
) -> None:
    spec = f"""\
    data:
      datasets:
        - {{path: a.json, format: alpaca}}
        - {{path: b.json, format: alpaca}}
      mix: interleave
      probabilities: [0.25, 0.75]
      stopping_strategy: {strategy}
    """
    files = {"a.json": alpaca_rows("A", 10), "b.json": alpaca_rows("B", 30)}
    project = make_project(tmp_path, tiny_model, spec, files)
    result = run_data(project)
    assert result.returncode == 0, result.stderr[-3000:]
    texts = [decode(tiny_model, row["input_ids"]) for row in processed(project)["train"]]
    sources = [re.search(r"([AB])\d+ question", text).group(1) for text in texts]
    from_a, from_b = sources.count("A"), sources.count("B")
    assert check(from_a, from_b), (from_a, from_b)
    # Seeded: the same spec draws the same order again.
    again = run_data(project, "--overwrite", "true")
    assert again.returncode == 0
    assert [decode(tiny_model, r["input_ids"]) for r in processed(project)["train"]] == texts


def test_max_samples_num_samples_shuffle_and_validation_split(
    tmp_path: Path, tiny_model: Path
) -> None:
    spec = """\
    data:
      datasets:
        - {path: a.json, format: alpaca, max_samples: 4}
        - {path: b.json, format: alpaca, num_samples: 25}
      shuffle: true
      val_size: 0.2
    """
    files = {"a.json": alpaca_rows("A", 10), "b.json": alpaca_rows("B", 10)}
    project = make_project(tmp_path, tiny_model, spec, files)
    result = run_data(project)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rows_read=29 rows_kept=29" in result.stdout
    splits = processed(project)
    assert sorted(splits) == ["train", "validation"]
    assert len(splits["validation"]) == 6 and len(splits["train"]) == 23
    texts = [decode(tiny_model, r["input_ids"]) for s in splits.values() for r in s]
    firsts = {f"A{n} question" for n in range(4)}
    assert {t for t in firsts if any(t in text for text in texts)} == firsts
    assert not any("A4 question" in text for text in texts)
    # num_samples 25 of 10 rows: every row drawn at least twice.
    assert all(sum(f"B{n} question" in t for t in texts) >= 2 for n in range(10))


def test_placeholders_fill_llamafactory_identity(tmp_path: Path, tiny_model: Path) -> None:
    spec = """\
    data:
      datasets:
        - path: identity.json
          format: alpaca
          placeholders: {name: Lfc, author: the lfc team}
    """
    files = {"identity.json": (LF_DATA / "identity.json").read_bytes()}
    project = make_project(tmp_path, tiny_model, spec, files)
    result = run_data(project)
    assert result.returncode == 0, result.stderr[-3000:]
    texts = [decode(tiny_model, r["input_ids"]) for r in processed(project)["train"]]
    assert len(texts) == 91
    rows = json.loads((LF_DATA / "identity.json").read_text())
    expected = sum("I am {{name}}" in row["output"] for row in rows)
    assert expected > 5 and sum("I am Lfc" in text for text in texts) == expected
    assert any("the lfc team" in text for text in texts)
    assert not any("{{" in text for text in texts)


def test_two_processes_give_the_same_dataset_and_the_cache_serves_reruns(
    tmp_path: Path, tiny_model: Path
) -> None:
    spec = """\
    data:
      datasets:
        - {path: alpaca.json, format: alpaca}
    """
    files = {"alpaca.json": (EXAMPLES / "data" / "alpaca_en_demo.json").read_bytes()}
    project = make_project(tmp_path, tiny_model, spec, files)
    first = run_data(project)
    assert first.returncode == 0, first.stderr[-3000:]
    one = processed(project)

    cached = run_data(project)
    assert cached.returncode == 0
    assert "is up to date with its inputs" in cached.stdout
    # num_proc does not change the output, so it is not part of the cache key.
    assert "is up to date" in run_data(project, "--num_proc", "2").stdout
    forced = run_data(project, "--num_proc", "2", "--overwrite", "true")
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert "is up to date" not in forced.stdout
    assert processed(project) == one

    # Any input change is a cache miss: a setting, or the data file itself.
    assert "is up to date" not in run_data(project, "--cutoff_len", "64").stdout
    data_file = project / "data" / "alpaca.json"
    data_file.write_text(json.dumps(alpaca_rows("Z", 3)))
    changed = run_data(project, "--cutoff_len", "64")
    assert "is up to date" not in changed.stdout
    assert "rows_read=3 " in changed.stdout


BAD_SHAREGPT = [
    {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
    {"conversations": [{"from": "gpt", "value": "I speak first"}]},
    {"conversations": []},
    {"conversations": [{"from": "human", "value": 42}, {"from": "gpt", "value": "x"}]},
    {"conversations": [{"from": "human"}, {"from": "gpt", "value": "x"}]},
    {"conversations": [{"from": "human", "value": "a"}, {"from": "robot", "value": "b"}]},
    {"chats": []},
]


def test_every_kind_of_bad_row_is_named_with_dataset_and_index(
    tmp_path: Path, tiny_model: Path
) -> None:
    lines = [json.dumps(row) for row in BAD_SHAREGPT]
    lines.insert(3, '{"conversations": [oops')  # invalid JSON line: row 3
    spec = """\
    data:
      datasets:
        - {path: chats.jsonl, format: sharegpt, name: chats}
    """
    project = make_project(tmp_path, tiny_model, spec, {"chats.jsonl": "\n".join(lines)})
    result = run_data(project)
    assert result.returncode != 0
    where = "chats (data/chats.jsonl) row"
    expected = [
        f"{where} 1: turn 0 is 'assistant', expected user or tool",
        f"{where} 2: column 'conversations' should be a list of turns",
        f"{where} 3: line 4: invalid JSON",
        f"{where} 4: turn 0 has no string 'value'",
        f"{where} 5: turn 0 has no string 'value'",
        f"{where} 6: turn 1: role 'robot' is not one of",
        f"{where} 7: column 'conversations' should be a list of turns",
        "7 malformed rows; fix them or use --on_bad_row skip",
    ]
    for line in expected:
        assert line in result.stderr, line
    assert not (project / "data" / "processed").exists()

    skipped = run_data(project, "--on_bad_row", "skip")
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert "rows_read=8 rows_kept=1 rows_truncated=0 rows_rejected=7" in skipped.stdout
    report = (project / "data" / "processed" / "rejected.jsonl").read_text().splitlines()
    assert [json.loads(line)["row"] for line in report] == [1, 2, 3, 4, 5, 6, 7]
    assert {json.loads(line)["dataset"] for line in report} == {"chats"}


def test_tool_turns_need_a_template_that_renders_tools(tmp_path: Path, tiny_model: Path) -> None:
    spec = """\
    data:
      datasets:
        - {path: glaive.json, format: sharegpt, max_samples: 5}
    """
    glaive = json.loads((LF_DATA / "glaive_toolcall_en_demo.json").read_text())
    project = make_project(tmp_path, tiny_model, spec, {"glaive.json": glaive[:5]})
    result = run_data(project)
    assert result.returncode != 0
    assert "llama3 cannot render tool calls" in result.stderr or "renders no tools" in (
        result.stderr
    )


def test_packed_rows_do_not_attend_across_examples(tmp_path: Path, tiny_model: Path) -> None:
    """The mechanism `data.packing` relies on: restarting position ids, no attention mask."""
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa").eval()
    first, second = torch.arange(5, 17), torch.arange(40, 49)
    with torch.no_grad():
        apart = [model(ids[None], use_cache=False).logits[0] for ids in (first, second)]
        positions = torch.cat([torch.arange(len(first)), torch.arange(len(second))])[None]
        packed = model(
            torch.cat([first, second])[None], position_ids=positions, use_cache=False
        ).logits[0]
    assert torch.allclose(packed, torch.cat(apart), atol=1e-5)


def test_alpaca_pairwise_rows_become_prompt_and_two_answers(
    tmp_path: Path, tiny_model: Path
) -> None:
    rows = [
        {"instruction": f"Pick {n}", "input": "", "chosen": f"good {n}", "rejected": f"bad {n}"}
        for n in range(5)
    ]
    spec = """\
    adapter: lora
    stage: dpo
    data:
      datasets:
        - {path: pairs.json, format: alpaca, ranking: true}
    """
    project = make_project(tmp_path, tiny_model, spec, {"pairs.json": rows})
    result = run_data(project)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = processed(project)["train"]
    assert len(saved) == 5
    for n, row in enumerate(saved):
        prompt = decode(tiny_model, row["prompt_ids"])
        assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
        assert f"Pick {n}" in prompt
        assert decode(tiny_model, row["chosen_ids"]) == f"good {n}<|eot_id|>"
        assert decode(tiny_model, row["rejected_ids"]) == f"bad {n}<|eot_id|>"
