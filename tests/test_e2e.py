"""End to end: a compiled project runs in an environment holding only its requirements.txt.

The environment is a fresh virtualenv with `pip install -r requirements.txt` and nothing else:
lfc is not installed there, and the test checks that it cannot be imported.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import compile_example
from project_env import clean_env, project_venv, run, serving

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    return compile_example("quickstart", tmp_path_factory.mktemp("e2e") / "run", tiny_model)


@pytest.fixture(scope="module")
def project_python(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return project_venv(project / "requirements.txt", tmp_path_factory.mktemp("venv"))


def test_quickstart_end_to_end(project: Path, project_python: Path) -> None:
    env = clean_env(project_python.parent)
    python = str(project_python)

    # lfc is not there: the project stands alone.
    probe = subprocess.run(
        [python, "-c", "import lfc"], cwd=project, env=env, capture_output=True, text=True
    )
    assert probe.returncode != 0 and "No module named 'lfc'" in probe.stderr

    out = run([python, "data.py"], project, env)
    assert "rows_read=999 rows_kept=999" in out
    assert (project / "data" / "processed" / "lfc_data.json").is_file()

    accelerate = str(project_python.parent / "accelerate")
    run(
        [
            accelerate,
            "launch",
            "--config_file",
            "accelerate/single.yaml",
            "train.py",
            "--max_steps",
            "5",
            "--save_steps",
            "5",
        ],
        project,
        env,
    )
    state = json.loads((project / "outputs" / "checkpoint-5" / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert len(losses) == 5 and all(math.isfinite(loss) for loss in losses)
    assert state["global_step"] == 5
    assert (project / "outputs" / "adapter_model.safetensors").is_file()

    # Chat with base + adapter before export, then export and chat with the merged model.
    out = run(
        [
            python,
            "chat.py",
            "--prompt",
            "Describe a process of making crepes.",
            "--chat_max_new_tokens",
            "8",
        ],
        project,
        env,
    )
    assert "[chat] model: ../tiny-llama + adapter outputs/" in out
    run([python, "export.py"], project, env)
    reload = (
        "import json; from transformers import AutoModelForCausalLM, AutoTokenizer;"
        "m = AutoModelForCausalLM.from_pretrained('exported'); t = AutoTokenizer.from_pretrained('exported');"
        "print(json.dumps({'eos': m.generation_config.eos_token_id, 'eot': t.convert_tokens_to_ids('<|eot_id|>'),"
        "'template': t.chat_template == open('chat_template.jinja').read(), 'lora': any('lora' in n for n, _ in m.named_parameters())}))"
    )
    printed = subprocess.run(
        [python, "-c", reload], cwd=project, env=env, capture_output=True, text=True, check=True
    )
    info = json.loads(printed.stdout.strip().splitlines()[-1])
    assert info["eot"] in info["eos"] and info["template"] and not info["lora"]
    parity = run([python, "tests/test_chat_template.py"], project, env)
    assert "chat template parity: ok" in parity
    chat = subprocess.run(
        [
            python,
            "chat.py",
            "--prompt",
            "Describe a process of making crepes.",
            "--chat_max_new_tokens",
            "8",
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = chat.stdout.splitlines()
    assert lines[0] == "[chat] model: exported/"
    assert "".join(lines[1:]).strip(), "chat.py printed no answer"

    # serve.py needs nothing beyond requirements.txt: one completion through the openai client.
    _serve_once(python, project, env)

    # An unknown config key is an error, not ignored.
    bad = subprocess.run(
        [python, "data.py", "--no_such_option", "1"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0

    # The project still matches its spec after running (outputs are ignored); a hand edit fails.
    lfc = [sys.executable, "-m", "lfc"]
    verify = subprocess.run([*lfc, "verify", str(project)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    with open(project / "config.yaml", "a") as handle:
        handle.write("# tweak\n")
    verify = subprocess.run([*lfc, "verify", str(project)], capture_output=True, text=True)
    assert verify.returncode == 1 and "config.yaml (changed)" in verify.stderr


def _serve_once(python: Path, project: Path, env: dict[str, str]) -> None:
    openai = pytest.importorskip("openai")
    with serving(python, project, env) as url:
        client = openai.OpenAI(base_url=url, api_key="unused")
        reply = client.chat.completions.create(
            model="lfc-model",
            messages=[{"role": "user", "content": "Describe a process of making crepes."}],
            max_tokens=8,
            temperature=0,
        )
        assert reply.choices[0].finish_reason in ("stop", "length")
        assert reply.usage.completion_tokens <= 8
