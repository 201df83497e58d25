"""Serving for real on the CPU: train a tiny model to answer one question, export it, start the
generated serve.py on 127.0.0.1 and talk to it with the `openai` client.

The model is trained (full fine-tuning, 40 steps) until it answers "What is the password?" with
one sentence and then the template's end-of-turn token, so the reply, the stop and the prompt
length are all checked against independent computations, not against the server itself.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from lfc.pipeline import compile_file
from lfc.template_render import render_conversation
from lfc.writer import write_project

from project_env import run, serving

pytest.importorskip("trl")
openai = pytest.importorskip("openai")

QUESTION = "What is the password?"
ANSWER = "The password is swordfish."
LAUNCH = ["-m", "accelerate.commands.launch", "--config_file", "accelerate/single.yaml"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

SPEC = """\
lfc: 1
model: {name_or_path: ../tiny-llama, dtype: float32}
template: chatml
adapter: full
data:
  datasets:
    - {path: password.json, format: alpaca}
  cutoff_len: 64
train: {learning_rate: 3.0e-3, max_steps: 40, batch_size: 4, logging_steps: 10,
        save_steps: 1000, scheduler: constant}
serve: {served_model_name: tiny-chat}
"""


def _run(args: list[str], cwd: Path) -> str:
    return run(args, cwd, ENV)


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    root = tmp_path_factory.mktemp("serving")
    (root / "tiny-llama").symlink_to(tiny_model)
    rows = [{"instruction": QUESTION, "output": ANSWER}] * 16
    (root / "password.json").write_text(json.dumps(rows))
    (root / "spec.yaml").write_text(SPEC)
    project = root / "run"
    write_project(compile_file(root / "spec.yaml").files, project)
    _run([sys.executable, "data.py"], project)
    _run([sys.executable, *LAUNCH, "train.py"], project)
    _run([sys.executable, "export.py"], project)
    return project


@pytest.fixture(scope="module")
def server(trained_project: Path) -> Iterator[str]:
    with serving(sys.executable, trained_project, ENV) as url:
        yield url


def _tokenizer(project: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(project / "exported")


def test_chat_completion_uses_the_template_and_stops_at_end_of_turn(
    trained_project: Path, server: str
) -> None:
    client = openai.OpenAI(base_url=server, api_key="unused")
    messages = [{"role": "user", "content": QUESTION}]
    reply = client.chat.completions.create(
        model="tiny-chat", messages=messages, temperature=0, max_tokens=40
    )
    choice = reply.choices[0]
    assert choice.message.content == ANSWER
    assert choice.finish_reason == "stop"

    tokenizer = _tokenizer(trained_project)
    # The prompt the server saw is lfc's own rendering of chatml, tokenized.
    prompt_text = render_conversation("chatml", messages, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    assert reply.usage.prompt_tokens == len(prompt_ids)
    # The answer's tokens, then exactly one more: <|im_end|>, where generation stopped.
    answer_ids = tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    assert reply.usage.completion_tokens == len(answer_ids) + 1
    assert "<|im_end|>" not in choice.message.content


def test_length_limit_streaming_and_stop_strings(server: str) -> None:
    client = openai.OpenAI(base_url=server, api_key="unused")
    messages = [{"role": "user", "content": QUESTION}]
    short = client.chat.completions.create(
        model="tiny-chat", messages=messages, temperature=0, max_tokens=3
    )
    assert short.choices[0].finish_reason == "length"
    assert short.usage.completion_tokens == 3
    assert ANSWER.startswith(short.choices[0].message.content)

    chunks = list(
        client.chat.completions.create(
            model="tiny-chat",
            messages=messages,
            temperature=0,
            max_tokens=40,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert reasons[-1] == "stop" and set(reasons[:-1]) == {None}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 1

    for stream in (False, True):
        cut = client.chat.completions.create(
            model="tiny-chat",
            messages=messages,
            temperature=0,
            max_tokens=40,
            stop=[" is s"],
            stream=stream,
        )
        if stream:
            content = "".join(c.choices[0].delta.content or "" for c in cut if c.choices)
        else:
            content = cut.choices[0].message.content
        assert content == "The password", stream


def test_models_health_and_refusals(server: str) -> None:
    client = openai.OpenAI(base_url=server, api_key="unused")
    assert [m.id for m in client.models.list().data] == ["tiny-chat"]
    with urllib.request.urlopen(server.removesuffix("/v1") + "/health") as response:
        assert response.status == 200

    with pytest.raises(openai.NotFoundError, match="`other` does not exist"):
        client.chat.completions.create(model="other", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="max_tokens must be"):
        client.chat.completions.create(
            model="tiny-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=10**6
        )
    with pytest.raises(openai.BadRequestError, match="role must be one of"):
        client.chat.completions.create(model="tiny-chat", messages=[{"role": "robot"}])
    with pytest.raises(openai.BadRequestError, match="n must be 1"):
        client.chat.completions.create(
            model="tiny-chat", messages=[{"role": "user", "content": "hi"}], n=2
        )
    request = urllib.request.Request(server + "/chat/completions", data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request)
    assert error.value.code == 400
    assert "not JSON" in json.loads(error.value.read())["error"]["message"]


def test_chat_py_and_exported_generation_config_agree(trained_project: Path) -> None:
    out = _run([sys.executable, "chat.py", "--prompt", QUESTION], trained_project)
    assert ANSWER in out.splitlines()
    config = json.loads((trained_project / "exported" / "generation_config.json").read_text())
    tokenizer = _tokenizer(trained_project)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in config["eos_token_id"]
