"""Qwen2-VL image fine-tuning end to end, in a fresh virtualenv built from the project's
requirements.txt (torch 2.14.1 + torchvision 0.29.1: Qwen2VLProcessor needs torchvision, which
lfc's own test environment, on torch 2.13.0, cannot import).

A tiny random Qwen2-VL (built in that environment by `lfc tiny-model --architecture qwen2_vl`)
is trained 2 LoRA steps on LLaMA-Factory's demo images, exported, and asked about an image by
chat.py and serve.py. Checked: data.py's ids equal the model's own processor output with the
spec's pixel bounds, LoRA stays in the language model, the vision tower and patch merger keep
their weights, the exported processor carries the bounds and the template, and serve.py's
prompt holds the image's tokens. A full fine-tune with freeze_projector off trains the merger
(which sits inside the tower's module) and keeps the rest of the tower.

Video reuses that venv (plus PyAV, the one package a video project adds): a tiny Qwen2-VL
trained 2 LoRA steps on the demo videos (ids equal the processor's own output for the frames
transformers' PyAV reader decodes at LLaMA-Factory's indices), exported, asked about a video by
chat.py and serve.py; rows whose <video> placeholders, files or decoding fail are reported by
row. A tiny Qwen2.5-VL is trained on images and videos together, exported, and answers about an
image.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_multimodal import COLUMNS, DEMO, _parts
from typer.testing import CliRunner

from lfc.cli import app
from lfc.pipeline import compile_file
from lfc.writer import write_project

from conftest import ROOT
from project_env import clean_env, project_venv, run, serving

pytestmark = pytest.mark.e2e
safetensors = pytest.importorskip("safetensors.torch")
torch = pytest.importorskip("torch")

PROBE = Path(__file__).with_name("qwen2_vl_probe.py")
MAX_PIXELS, MIN_PIXELS = 6 * 28 * 28, 28 * 28  # not the tiny processor's own bounds
IMAGE = DEMO / "mllm_demo_data/2.jpg"
LORA = {"kind": "lora", "rank": 4}
# Saved in Qwen2-VL's checkpoint layout: visual.* beside the language model's model.*.
TOWER, MERGER, LANGUAGE = "visual.blocks.", "visual.merger.", "model.layers."


# Video settings: 1 frame a second, at most 5 (an odd count: the processor repeats the last
# frame), each frame within 4 merged patches' pixels.
VIDEO = {"fps": 1.0, "maxlen": 5, "max_pixels": 4 * 28 * 28, "min_pixels": 28 * 28}
VIDEO_COLUMNS = {**{k: v for k, v in COLUMNS.items() if k != "images"}, "videos": "videos"}
CLIP = DEMO / "mllm_demo_data/4.mp4"


def _dataset(rows: str, columns: dict) -> dict:
    return {"path": f"mllm/{rows}", "format": "sharegpt", "media_dir": "mllm", "columns": columns}


def _spec(
    folder: Path,
    adapter: dict,
    freeze_projector: bool = True,
    plugin: str = "qwen2_vl",
    datasets: tuple[str, ...] = ("mllm_demo.json",),
) -> Path:
    shutil.copytree(DEMO, folder / "mllm", dirs_exist_ok=True)
    multimodal = {
        "plugin": plugin,
        "image_max_pixels": MAX_PIXELS,
        "image_min_pixels": MIN_PIXELS,
        "freeze_projector": freeze_projector,
    }
    if any("video" in rows for rows in datasets):
        multimodal.update({f"video_{key}": value for key, value in VIDEO.items()})
    spec = {
        "lfc": 1,
        "model": {"name_or_path": "../tiny-qwen2-vl", "multimodal": multimodal},
        "template": "qwen2_vl",
        "adapter": adapter,
        "data": {
            "datasets": [
                _dataset(rows, VIDEO_COLUMNS if "video" in rows else COLUMNS) for rows in datasets
            ],
            "cutoff_len": 512,
        },
        "train": {"max_steps": 2, "learning_rate": 0.01, "logging_steps": 1},
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _project(folder: Path, adapter: dict, freeze_projector: bool = True, **options) -> Path:
    """The compiled project (ruff-clean), with the tiny model at its ../tiny-qwen2-vl."""
    project = folder / "run"
    write_project(compile_file(_spec(folder, adapter, freeze_projector, **options)).files, project)
    ruff = str(Path(sys.executable).with_name("ruff"))
    for check in (["check", "--isolated", "."], ["format", "--isolated", "--check", "."]):
        run([ruff, *check], project, clean_env(Path(sys.executable).parent))
    return project


@pytest.fixture(scope="module")
def qwen_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict, Path]:
    """The project's python (a venv of its requirements.txt), its env, and the tiny model."""
    started = time.monotonic()
    folder = tmp_path_factory.mktemp("qwen2-vl")
    requirements = _project(folder, LORA) / "requirements.txt"
    assert {"torch==2.14.1", "torchvision==0.29.1"} <= set(requirements.read_text().split())
    python = str(project_venv(requirements, folder / "venv"))
    env = clean_env(Path(python).parent)
    model = tmp_path_factory.mktemp("models") / "tiny-qwen2-vl"
    run([python, str(PROBE), "build", str(model), str(ROOT)], folder, env)
    print(f"[qwen2_vl] venv and tiny model: {time.monotonic() - started:.0f} s")
    return python, env, model


@pytest.fixture(scope="module")
def video_env(
    qwen_env: tuple[str, dict, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, dict, Path]:
    """qwen_env plus PyAV (with the numpy it was resolved beside): the pins a video project's
    requirements.txt adds."""
    python, env, model = qwen_env
    folder = tmp_path_factory.mktemp("qwen2-vl-video")
    video = _project(folder, LORA, datasets=("mllm_video_demo.json",)) / "requirements.txt"
    image = _project(tmp_path_factory.mktemp("qwen2-vl-image"), LORA) / "requirements.txt"
    added = set(video.read_text().splitlines()) - set(image.read_text().splitlines())
    pins = sorted(line for line in added if not line.startswith("#"))
    assert pins == ["av==18.1.0", "numpy==2.4.6"]
    run([python, "-m", "pip", "install", "-q", *pins], folder, env)
    return python, env, model


def _expected(python: str, env: dict, model: Path, project: Path, request: dict | list) -> Any:
    """The tiny model's own processor output for `request` (a list: for each; run in the
    project's env)."""
    template = str(project / "chat_template.jinja")
    command = [python, str(PROBE), "ids", str(model), template, str(MAX_PIXELS), str(MIN_PIXELS)]
    result = subprocess.run(
        command, input=json.dumps(request), env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def _train(python: str, env: dict, project: Path) -> None:
    run([python, "data.py"], project, env)
    launch = ["-m", "accelerate.commands.launch", "--config_file", "accelerate/single.yaml"]
    run([python, *launch, "train.py"], project, env)


def test_qwen2_vl_lora_trains_exports_and_answers_about_an_image(
    tmp_path: Path, qwen_env: tuple[str, dict, Path]
) -> None:
    started = time.monotonic()
    python, env, model = qwen_env
    project = _project(tmp_path, LORA)
    (tmp_path / "tiny-qwen2-vl").symlink_to(model)

    _train(python, env, project)
    from datasets import load_from_disk

    row = load_from_disk(str(project / "data/processed/dataset"))["train"][0]
    demo = json.loads((DEMO / "mllm_demo.json").read_text())[0]
    images = [str(DEMO / path) for path in demo["images"]]
    request = {"messages": _parts(demo["messages"]), "images": images, "generation_prompt": False}
    expected = _expected(python, env, model, project, request)
    assert row["input_ids"] == expected["ids"]
    tokenizer = json.loads((model / "tokenizer.json").read_text())
    vocab = {entry["content"]: entry["id"] for entry in tokenizer["added_tokens"]}
    # 2.jpg-sized demo images scale to 6 merged patches within 6*28*28 pixels: 2 images, 12.
    assert row["input_ids"].count(vocab["<|image_pad|>"]) == 2 * 6
    assert expected["text"].count("<|vision_start|><|image_pad|><|vision_end|>") == 2

    adapter = safetensors.load_file(project / "outputs/adapter_model.safetensors")
    assert adapter and all("language_model" in key for key in adapter)

    run([python, "export.py"], project, env)
    base = safetensors.load_file(model / "model.safetensors")
    exported = safetensors.load_file(project / "exported/model.safetensors")
    assert base.keys() == exported.keys()
    changed = {key for key in base if not torch.equal(base[key], exported[key])}
    assert any(key.startswith(TOWER) for key in base) and any(k.startswith(MERGER) for k in base)
    assert not {key for key in changed if key.startswith("visual.")}, "the frozen vision changed"
    assert {key for key in changed if key.startswith(LANGUAGE)}
    saved = json.loads((project / "exported/processor_config.json").read_text())
    size = {"longest_edge": MAX_PIXELS, "shortest_edge": MIN_PIXELS}
    assert saved["image_processor"]["size"] == size
    template = (project / "chat_template.jinja").read_text()
    assert (project / "exported/chat_template.jinja").read_text() == template

    flags = ["--prompt", "Who is he?", "--image", str(IMAGE), "--chat_max_new_tokens", "4"]
    out = run([python, "chat.py", *flags], project, env)
    assert "[chat] model: exported/" in out

    openai = pytest.importorskip("openai")
    picture = base64.b64encode(IMAGE.read_bytes()).decode()
    parts = [
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{picture}"}},
        {"type": "text", "text": "Who is he?"},
    ]
    question = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Who is he?"}]}
    ]
    request = {"messages": question, "images": [str(IMAGE)], "generation_prompt": True}
    prompt = _expected(python, env, model, project, request)["ids"]
    with serving(python, project, env) as url:
        client = openai.OpenAI(base_url=url, api_key="unused")
        messages = [{"role": "user", "content": parts}]
        reply = client.chat.completions.create(model="lfc-model", messages=messages, max_tokens=3)
        assert reply.usage.prompt_tokens == len(prompt)
        assert reply.choices[0].finish_reason in ("stop", "length")
    print(f"[qwen2_vl] LoRA project: {time.monotonic() - started:.0f} s")


def test_qwen2_vl_full_training_keeps_the_tower_and_trains_the_merger(
    tmp_path: Path, qwen_env: tuple[str, dict, Path]
) -> None:
    # The merger sits inside the vision tower's module: only it may change there.
    started = time.monotonic()
    python, env, model = qwen_env
    project = _project(tmp_path, {"kind": "full"}, freeze_projector=False)
    (tmp_path / "tiny-qwen2-vl").symlink_to(model)
    _train(python, env, project)
    base = safetensors.load_file(model / "model.safetensors")
    trained = safetensors.load_file(project / "outputs/model.safetensors")
    assert base.keys() == trained.keys()
    changed = {key for key in base if not torch.equal(base[key], trained[key])}
    assert {key for key in base if key.startswith(MERGER)} <= changed
    assert not {key for key in changed if key.startswith((TOWER, "visual.patch_embed."))}
    assert {key for key in changed if key.startswith(LANGUAGE)}
    print(f"[qwen2_vl] full project: {time.monotonic() - started:.0f} s")


def _video_parts(messages: list[dict]) -> list[dict]:
    """<video> placeholders as video parts (what data.py makes of them)."""
    out = []
    for message in messages:
        pieces = message["content"].split("<video>")
        content = [{"type": "text", "text": pieces[0]}]
        for piece in pieces[1:]:
            content += [{"type": "video"}, {"type": "text", "text": piece}]
        content = [part for part in content if part.get("text") != ""]
        out.append({"role": message["role"], "content": content})
    return out


def test_qwen2_vl_video_lora_trains_exports_and_answers_about_a_video(
    tmp_path: Path, video_env: tuple[str, dict, Path]
) -> None:
    started = time.monotonic()
    python, env, model = video_env
    project = _project(tmp_path, LORA, datasets=("mllm_video_demo.json",))
    assert (project / "data/mllm_video_demo-media/mllm_demo_data/4.mp4").read_bytes() == (
        CLIP.read_bytes()
    )
    assert not list((project / "data/mllm_video_demo-media").rglob("*.jpg"))
    # The project re-renders from its own normalized spec.yaml, videos and their settings included.
    verified = CliRunner().invoke(app, ["verify", str(project)])
    assert verified.exit_code == 0, verified.output
    (tmp_path / "tiny-qwen2-vl").symlink_to(model)

    _train(python, env, project)
    from datasets import load_from_disk

    rows = load_from_disk(str(project / "data/processed/dataset"))["train"]
    demo = json.loads((DEMO / "mllm_video_demo.json").read_text())
    tokenizer = json.loads((model / "tokenizer.json").read_text())
    vocab = {entry["content"]: entry["id"] for entry in tokenizer["added_tokens"]}
    requests = [
        {
            "messages": _video_parts(example["messages"]),
            "videos": [str(DEMO / path) for path in example["videos"]],
            "video": VIDEO,
            "generation_prompt": False,
        }
        for example in demo
    ]
    question = [
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}
    ]
    ask = {"messages": question, "videos": [str(CLIP)], "video": VIDEO, "generation_prompt": True}
    *answers, prompt = _expected(python, env, model, project, [*requests, ask])
    for row, example, expected in zip(rows, demo, answers, strict=True):
        assert row["video_files"] == [f"data/mllm_video_demo-media/{p}" for p in example["videos"]]
        assert row["input_ids"] == expected["ids"]
        # 1 frame a second of a 5-6 s clip, capped at 5: the processor pads 5 frames to 6.
        assert expected["frames"] == [5]
        ((frames, height, width),) = expected["video_grid_thw"]
        assert frames == 3
        assert row["input_ids"].count(vocab["<|video_pad|>"]) == 3 * height * width // 4
    # 4.mp4 (224x224) within 4*28*28 pixels: 56x56, 2x2 merged tokens a temporal patch.
    assert rows[1]["input_ids"].count(vocab["<|video_pad|>"]) == 3 * 2 * 2

    adapter = safetensors.load_file(project / "outputs/adapter_model.safetensors")
    assert adapter and all("language_model" in key for key in adapter)
    run([python, "export.py"], project, env)
    saved = json.loads((project / "exported/processor_config.json").read_text())
    size = {"longest_edge": VIDEO["max_pixels"], "shortest_edge": VIDEO["min_pixels"]}
    assert saved["video_processor"]["size"] == size

    flags = ["--prompt", "What happens?", "--video", str(CLIP), "--chat_max_new_tokens", "4"]
    out = run([python, "chat.py", *flags], project, env)
    assert "[chat] model: exported/" in out

    openai = pytest.importorskip("openai")
    clip = base64.b64encode(CLIP.read_bytes()).decode()
    parts = [
        {"type": "video_url", "video_url": {"url": f"data:video/mp4;base64,{clip}"}},
        {"type": "text", "text": "What happens?"},
    ]
    with serving(python, project, env) as url:
        client = openai.OpenAI(base_url=url, api_key="unused")
        messages = [{"role": "user", "content": parts}]
        reply = client.chat.completions.create(model="lfc-model", messages=messages, max_tokens=3)
        assert reply.usage.prompt_tokens == len(prompt["ids"])
        assert reply.choices[0].finish_reason in ("stop", "length")
        elsewhere = [{"type": "video_url", "video_url": {"url": "http://example.com/a.mp4"}}]
        with pytest.raises(openai.BadRequestError, match="data:video"):
            client.chat.completions.create(
                model="lfc-model", messages=[{"role": "user", "content": elsewhere}]
            )
        garbage = base64.b64encode(b"not a video" * 20).decode()
        broken = [{"type": "video_url", "video_url": {"url": f"data:video/mp4;base64,{garbage}"}}]
        with pytest.raises(openai.BadRequestError, match="not a decodable video"):
            client.chat.completions.create(
                model="lfc-model", messages=[{"role": "user", "content": broken}]
            )
    print(f"[qwen2_vl] video LoRA project: {time.monotonic() - started:.0f} s")


def test_video_rows_that_disagree_or_do_not_decode_are_reported_by_row(
    tmp_path: Path, video_env: tuple[str, dict, Path]
) -> None:
    python, env, model = video_env
    good = {"role": "assistant", "content": "Drawing."}
    rows = [
        {
            "messages": [{"role": "user", "content": "<video><video>What?"}, good],
            "videos": ["mllm_demo_data/4.mp4"],
        },
        {
            "messages": [{"role": "user", "content": "<video>What?"}, good],
            "videos": ["mllm_demo_data/missing.mp4"],
        },
        {
            "messages": [{"role": "user", "content": "<video>What?"}, good],
            "videos": ["mllm_demo_data/broken.mp4"],
        },
        {
            "messages": [
                {"role": "user", "content": "What?"},
                {"role": "assistant", "content": "<video>Drawing."},
            ],
            "videos": ["mllm_demo_data/4.mp4"],
        },
        {
            "messages": [{"role": "user", "content": "<video>What?"}, good],
            "videos": ["mllm_demo_data/4.mp4"],
        },
    ]
    shutil.copytree(DEMO, tmp_path / "mllm")
    (tmp_path / "mllm/mllm_demo_data/broken.mp4").write_bytes(b"not a video" * 20)
    (tmp_path / "mllm/bad_video.json").write_text(json.dumps(rows))
    project = _project(tmp_path, LORA, datasets=("bad_video.json",))
    (tmp_path / "tiny-qwen2-vl").symlink_to(model)
    result = subprocess.run(
        [python, "data.py"], cwd=project, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    where = "bad_video (data/bad_video.json) row"
    assert f"{where} 0: 2 <video> placeholders but 1 videos" in result.stderr
    assert f"{where} 1: video 'mllm_demo_data/missing.mp4' is not in data/bad_video-media/" in (
        result.stderr
    )
    assert f"{where} 2: video 'data/bad_video-media/mllm_demo_data/broken.mp4' cannot be " in (
        result.stderr
    )
    assert f"{where} 3: turn 1 (assistant) has <video>; videos go in user turns" in result.stderr
    assert f"{where} 4" not in result.stderr
    assert "4 malformed rows" in result.stderr + result.stdout


@pytest.fixture(scope="module")
def qwen25_model(video_env: tuple[str, dict, Path], tmp_path_factory) -> Path:
    python, env, _ = video_env
    model = tmp_path_factory.mktemp("models") / "tiny-qwen2.5-vl"
    run([python, str(PROBE), "build", str(model), str(ROOT), "qwen2_5_vl"], model.parent, env)
    config = json.loads((model / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl"
    return model


def test_qwen2_5_vl_trains_on_images_and_videos_exports_and_answers_about_an_image(
    tmp_path: Path, video_env: tuple[str, dict, Path], qwen25_model: Path
) -> None:
    started = time.monotonic()
    python, env, _ = video_env
    model = qwen25_model
    datasets = ("mllm_demo.json", "mllm_video_demo.json")
    project = _project(tmp_path, LORA, plugin="qwen2_5_vl", datasets=datasets)
    (tmp_path / "tiny-qwen2-vl").symlink_to(model)
    assert "second_per_grid_ts" in (project / "train.py").read_text()
    _train(python, env, project)

    from datasets import load_from_disk

    rows = load_from_disk(str(project / "data/processed/dataset"))["train"]
    image_demo = json.loads((DEMO / "mllm_demo.json").read_text())[0]
    video_demo = json.loads((DEMO / "mllm_video_demo.json").read_text())[1]
    requests = [
        {
            "messages": _parts(image_demo["messages"]),
            "images": [str(DEMO / path) for path in image_demo["images"]],
            "generation_prompt": False,
        },
        {
            "messages": _video_parts(video_demo["messages"]),
            "videos": [str(DEMO / path) for path in video_demo["videos"]],
            "video": VIDEO,
            "generation_prompt": False,
        },
    ]
    image, expected = _expected(python, env, model, project, requests)
    assert rows[0]["input_ids"] == image["ids"]
    assert rows[len(rows) - 1]["input_ids"] == expected["ids"]
    # 5 of 4.mp4's 150 frames at 30 fps: 1 sampled frame a second, 2 s per temporal patch.
    assert expected["second_per_grid_ts"] == [2.0]
    # train.py's collator gives the model the same seconds per temporal patch, and the video
    # tokens type 2 for the rotary positions.
    collate = (
        "import json; from datasets import load_from_disk; from config import parse_args; "
        "from model import load_processor; from train import MediaCollator; "
        "args = parse_args(); rows = load_from_disk('data/processed/dataset')['train']; "
        "out = MediaCollator(load_processor(args.model), args.model)([rows[len(rows) - 1]]); "
        "print(json.dumps({'seconds': out['second_per_grid_ts'].tolist(), "
        "'types': out['mm_token_type_ids'][0].tolist()}))"
    )
    batch = json.loads(run([python, "-c", collate], project, env).strip().splitlines()[-1])
    assert batch["seconds"] == expected["second_per_grid_ts"]
    video_id = json.loads((model / "config.json").read_text())["video_token_id"]
    types = [2 if token == video_id else 0 for token in expected["ids"]]
    assert batch["types"] == types

    adapter = safetensors.load_file(project / "outputs/adapter_model.safetensors")
    assert adapter and all("language_model" in key for key in adapter)
    run([python, "export.py"], project, env)
    base = safetensors.load_file(model / "model.safetensors")
    exported = safetensors.load_file(project / "exported/model.safetensors")
    assert base.keys() == exported.keys()
    changed = {key for key in base if not torch.equal(base[key], exported[key])}
    assert any(key.startswith(MERGER) for key in base)
    assert not {key for key in changed if key.startswith("visual.")}, "the frozen vision changed"
    assert {key for key in changed if key.startswith(LANGUAGE)}

    flags = ["--prompt", "Who is he?", "--image", str(IMAGE), "--chat_max_new_tokens", "4"]
    out = run([python, "chat.py", *flags], project, env)
    assert "[chat] model: exported/" in out
    print(f"[qwen2_5_vl] images and videos project: {time.monotonic() - started:.0f} s")


@pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed here"
)
@pytest.mark.parametrize("architecture", ["qwen2_vl", "qwen2_5_vl"])
def test_tiny_qwen_vl_without_torchvision_says_what_to_install(
    tmp_path: Path, architecture: str
) -> None:
    from lfc.tiny_model import build_tiny_model

    with pytest.raises(SystemExit, match=rf"{architecture} model needs torchvision .*==0\.29\.1"):
        build_tiny_model(tmp_path / "tiny", architecture=architecture)
