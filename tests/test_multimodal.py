"""Image-text models end to end: a tiny random LLaVA (built here, with its processor) trained
2 steps on LLaMA-Factory's demo images, exported, and asked about an image.

What is checked is what the spec promises: data.py's ids equal the model's own processor
output, the frozen vision tower and projector keep their weights while the language model
changes, LoRA adapters sit only in the language model, the exported processor renders the
same template (with its image token) as training, and rows whose placeholders and images
disagree are reported by row.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lfc.cli import app
from lfc.pipeline import compile_file
from lfc.template_render import render_conversation
from lfc.writer import write_project

from conftest import FIXTURES, write_media_spec
from project_env import run, serving

torch = pytest.importorskip("torch")
pytest.importorskip("PIL")
safetensors = pytest.importorskip("safetensors.torch")

LAUNCH = ["-m", "accelerate.commands.launch", "--config_file", "accelerate/single.yaml"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
DEMO = FIXTURES / "mllm"
COLUMNS = {
    "messages": "messages",
    "images": "images",
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
}
VISION = ("model.vision_tower.", "model.multi_modal_projector.")


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    from lfc.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llava", architecture="llava")


def _spec(folder: Path, base: Path, rows: str = "mllm_demo.json", **sections: dict) -> Path:
    return write_media_spec(folder, base, "llava", rows, COLUMNS, **sections)


def _project(folder: Path, base: Path, **sections: dict) -> Path:
    project = folder / "run"
    write_project(compile_file(_spec(folder, base, **sections)).files, project)
    ruff = str(Path(sys.executable).with_name("ruff"))
    for check in (["check", "--isolated", "."], ["format", "--isolated", "--check", "."]):
        run([ruff, *check], project, ENV)
    # The project re-renders from its own spec.yaml, images included.
    verified = CliRunner().invoke(app, ["verify", str(project)])
    assert verified.exit_code == 0, verified.output
    assert (project / "data/mllm_demo-media/mllm_demo_data/2.jpg").read_bytes() == (
        DEMO / "mllm_demo_data/2.jpg"
    ).read_bytes()
    assert not (project / "Modelfile").exists()
    return project


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    """The parameters of a saved model under the names transformers gives them once loaded."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
    return {name: tensor.detach() for name, tensor in model.named_parameters()}


def _parts(messages: list[dict]) -> list[dict]:
    """LLaMA-Factory's <image> placeholders as text and image parts (what data.py makes)."""
    out = []
    for message in messages:
        pieces = message["content"].split("<image>")
        content = [{"type": "text", "text": pieces[0]}]
        for piece in pieces[1:]:
            content += [{"type": "image"}, {"type": "text", "text": piece}]
        content = [part for part in content if part.get("text") != ""]
        out.append({"role": message["role"], "content": content})
    return out


def test_llava_lora_trains_exports_and_answers_about_an_image(
    tmp_path: Path, tiny_llava: Path
) -> None:
    from PIL import Image
    from transformers import AutoProcessor, AutoTokenizer

    project = _project(tmp_path, tiny_llava)
    run([sys.executable, "data.py"], project, ENV)

    # data.py's ids and labels for the first demo row equal what the model's processor makes.
    from datasets import load_from_disk

    row = load_from_disk(str(project / "data/processed/dataset"))["train"][0]
    demo = json.loads((DEMO / "mllm_demo.json").read_text())[0]
    assert row["image_files"] == [f"data/mllm_demo-media/{p}" for p in demo["images"]]
    processor = AutoProcessor.from_pretrained(tiny_llava)
    template = (project / "chat_template.jinja").read_text()
    conversation = _parts(demo["messages"])
    text = processor.apply_chat_template(conversation, chat_template=template, tokenize=False)
    images = [Image.open(DEMO / p).convert("RGB") for p in demo["images"]]
    expected = processor(text=[text], images=images, add_special_tokens=False)["input_ids"][0]
    assert row["input_ids"] == list(expected)
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert row["input_ids"].count(image_id) == 2 * 4  # two images, 2x2 patches each
    tokenizer = processor.tokenizer
    labelled = [
        t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100
    ]
    answers = [m["content"] + tokenizer.eos_token for m in demo["messages"][1::2]]
    assert tokenizer.decode(labelled) == "".join(answers)

    run([sys.executable, *LAUNCH, "train.py"], project, ENV)
    adapter = safetensors.load_file(project / "outputs/adapter_model.safetensors")
    assert adapter and all("language_model" in key for key in adapter)

    run([sys.executable, "export.py"], project, ENV)
    base, exported = _weights(tiny_llava), _weights(project / "exported")
    assert base.keys() == exported.keys()
    vision = [key for key in base if key.startswith(VISION)]
    assert vision
    for key in vision:
        assert torch.equal(base[key], exported[key]), f"{key} changed but it is frozen"
    assert any(
        not torch.equal(base[k], exported[k]) for k in base if k.startswith("model.language_model.")
    )

    # The exported processor carries the project's template, image token included.
    saved = AutoProcessor.from_pretrained(project / "exported")
    assert saved.chat_template == template
    question = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Who?"}]}]
    rendered = saved.apply_chat_template(question, add_generation_prompt=True, tokenize=False)
    assert "USER: <image>Who? ASSISTANT:" in rendered
    eos = AutoTokenizer.from_pretrained(tiny_llava).eos_token
    assert rendered == render_conversation("llava", question, True, eos_token=eos)

    image = str(DEMO / "mllm_demo_data/2.jpg")
    flags = ["--prompt", "Who is he?", "--image", image, "--chat_max_new_tokens", "4"]
    out = run([sys.executable, "chat.py", *flags], project, ENV)
    assert "[chat] model: exported/" in out

    # serve.py answers an OpenAI-style image message; the prompt holds the image's features.
    openai = pytest.importorskip("openai")
    picture = base64.b64encode((DEMO / "mllm_demo_data/2.jpg").read_bytes()).decode()
    parts = [
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{picture}"}},
        {"type": "text", "text": "Who is he?"},
    ]
    prompt = saved(
        text=[rendered.replace("Who?", "Who is he?")],
        images=[Image.open(image).convert("RGB")],
        add_special_tokens=False,
    )["input_ids"][0]
    with serving(sys.executable, project, ENV) as url:
        client = openai.OpenAI(base_url=url, api_key="unused")
        messages = [{"role": "user", "content": parts}]
        reply = client.chat.completions.create(model="lfc-model", messages=messages, max_tokens=3)
        assert reply.usage.prompt_tokens == len(prompt)
        assert reply.choices[0].finish_reason in ("stop", "length")
        elsewhere = [{"type": "image_url", "image_url": {"url": "http://example.com/a.jpg"}}]
        with pytest.raises(openai.BadRequestError, match="data:image"):
            client.chat.completions.create(
                model="lfc-model", messages=[{"role": "user", "content": elsewhere}]
            )


def test_llava_full_training_keeps_the_vision_tower_and_trains_the_projector(
    tmp_path: Path, tiny_llava: Path
) -> None:
    model = {
        "name_or_path": "../tiny-llava",
        "multimodal": {"plugin": "llava", "freeze_projector": False},
    }
    project = _project(tmp_path, tiny_llava, model=model, adapter={"kind": "full"})
    run([sys.executable, "data.py"], project, ENV)
    run([sys.executable, *LAUNCH, "train.py"], project, ENV)
    base, trained = _weights(tiny_llava), _weights(project / "outputs")
    changed = {key for key in base if not torch.equal(base[key], trained[key])}
    assert not {k for k in changed if k.startswith("model.vision_tower.")}
    assert {k for k in base if k.startswith("model.multi_modal_projector.")} <= changed
    assert {k for k in changed if k.startswith("model.language_model.")}


def test_rows_whose_images_and_placeholders_disagree_are_reported_by_row(
    tmp_path: Path, tiny_llava: Path
) -> None:
    rows = [
        {
            "messages": [
                {"role": "user", "content": "<image><image>Who?"},
                {"role": "assistant", "content": "Them."},
            ],
            "images": ["mllm_demo_data/1.jpg"],
        },
        {
            "messages": [
                {"role": "user", "content": "<image>Who?"},
                {"role": "assistant", "content": "Them."},
            ],
            "images": ["mllm_demo_data/missing.jpg"],
        },
        {
            "messages": [
                {"role": "user", "content": "Who?"},
                {"role": "assistant", "content": "<image>Them."},
            ],
            "images": ["mllm_demo_data/1.jpg"],
        },
        {
            "messages": [
                {"role": "user", "content": "<image>Who?"},
                {"role": "assistant", "content": "Them."},
            ],
            "images": ["mllm_demo_data/3.jpg"],
        },
    ]
    shutil.copytree(DEMO, tmp_path / "mllm")
    (tmp_path / "mllm/bad.json").write_text(json.dumps(rows))
    project = tmp_path / "run"
    write_project(compile_file(_spec(tmp_path, tiny_llava, rows="bad.json")).files, project)
    result = subprocess.run(
        [sys.executable, "data.py"], cwd=project, env=ENV, capture_output=True, text=True
    )
    assert result.returncode != 0
    where = "bad (data/bad.json) row"
    assert f"{where} 0: 2 <image> placeholders but 1 images" in result.stderr
    assert f"{where} 1: image 'mllm_demo_data/missing.jpg' is not in data/bad-media/" in (
        result.stderr
    )
    assert f"{where} 2: turn 1 (assistant) has <image>; images go in user turns" in (result.stderr)
    assert f"{where} 3" not in result.stderr
    assert "3 malformed rows" in result.stderr + result.stdout
