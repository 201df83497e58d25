"""Audio-text models end to end: a tiny random Qwen2-Audio (built here, with its processor)
trained 2 steps on LLaMA-Factory's demo audio (mp3, wav, flac), exported, asked about a clip.

What is checked is what the spec promises: the qwen2_audio template renders what transformers'
Qwen2AudioProcessor template renders, data.py's ids equal the model's own processor output, the
frozen audio tower and projector keep their weights while the language model changes, LoRA
adapters sit only in the language model, the exported processor renders the same template,
chat.py and serve.py (OpenAI `input_audio` parts) answer about a clip, the pins (av for
training, vLLM's audio extra for serving) are the recorded ones, and rows whose placeholders
and audio files disagree, or whose files do not decode, are reported by row.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lfc.cli import app
from lfc.pipeline import compile_file
from lfc.writer import write_project

from conftest import FIXTURES, write_media_spec
from project_env import run, serving

torch = pytest.importorskip("torch")
av = pytest.importorskip("av")
safetensors = pytest.importorskip("safetensors.torch")

LAUNCH = ["-m", "accelerate.commands.launch", "--config_file", "accelerate/single.yaml"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
DEMO = FIXTURES / "mllm"
COLUMNS = {
    "messages": "messages",
    "audios": "audios",
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
}
AUDIO_SIDE = ("model.audio_tower.", "model.multi_modal_projector.")
RATE = 16000


@pytest.fixture(scope="session")
def tiny_qwen2_audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    from lfc.tiny_model import build_tiny_model

    folder = tmp_path_factory.mktemp("models") / "tiny-qwen2-audio"
    return build_tiny_model(folder, architecture="qwen2_audio")


def _spec(folder: Path, base: Path, rows: str = "mllm_audio_demo.json", **sections: dict) -> Path:
    return write_media_spec(folder, base, "qwen2_audio", rows, COLUMNS, **sections)


def _project(folder: Path, base: Path, **sections: dict) -> Path:
    project = folder / "run"
    write_project(compile_file(_spec(folder, base, **sections)).files, project)
    ruff = str(Path(sys.executable).with_name("ruff"))
    for check in (["check", "--isolated", "."], ["format", "--isolated", "--check", "."]):
        run([ruff, *check], project, ENV)
    # The project re-renders from its own spec.yaml, audio files included.
    verified = CliRunner().invoke(app, ["verify", str(project)])
    assert verified.exit_code == 0, verified.output
    media = project / "data/mllm_audio_demo-media/mllm_demo_data"
    assert sorted(p.name for p in media.iterdir()) == ["1.mp3", "2.wav", "3.flac"]
    assert (media / "3.flac").read_bytes() == (DEMO / "mllm_demo_data/3.flac").read_bytes()
    return project


def _decode(path: Path):
    """The clip as 16 kHz mono float32, decoded here with av's resampler (what data.py uses)."""
    import numpy as np
    from av.audio.resampler import AudioResampler

    resampler = AudioResampler(format="flt", layout="mono", rate=RATE)
    with av.open(str(path)) as container:
        chunks = [o.to_ndarray() for f in container.decode(audio=0) for o in resampler.resample(f)]
    chunks += [o.to_ndarray() for o in resampler.resample(None)]
    return np.concatenate(chunks, axis=1)[0]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    """The parameters of a saved model under the names transformers gives them once loaded."""
    from transformers import AutoModelForMultimodalLM

    model = AutoModelForMultimodalLM.from_pretrained(folder, dtype=torch.float32)
    return {name: tensor.detach() for name, tensor in model.named_parameters()}


def _parts(messages: list[dict]) -> list[dict]:
    """LLaMA-Factory's <audio> placeholders as text and audio parts (what data.py makes)."""
    out = []
    for message in messages:
        pieces = message["content"].split("<audio>")
        content = [{"type": "text", "text": pieces[0]}]
        for piece in pieces[1:]:
            content += [{"type": "audio"}, {"type": "text", "text": piece}]
        content = [part for part in content if part.get("text") != ""]
        out.append({"role": message["role"], "content": content})
    return out


def test_demo_audio_decodes_to_16khz_mono() -> None:
    # mp3 (48 kHz stereo), wav and flac: av's wheel decodes all three, no system FFmpeg.
    for name, seconds in (("1.mp3", 4.03), ("2.wav", 2.90), ("3.flac", 5.86)):
        clip = _decode(DEMO / "mllm_demo_data" / name)
        assert clip.ndim == 1 and clip.dtype.name == "float32"
        assert abs(len(clip) / RATE - seconds) < 0.01, name


def test_template_renders_what_qwen2_audio_processor_renders(tiny_qwen2_audio: Path) -> None:
    from transformers import AutoProcessor
    from transformers.utils.chat_template_utils import render_jinja_template

    from lfc.chat_templates import get_template

    official = AutoProcessor.from_pretrained(tiny_qwen2_audio).default_chat_template
    ours = get_template("qwen2_audio").source
    audio, text = {"type": "audio"}, {"type": "text", "text": "What's that?"}
    chats = [
        [{"role": "user", "content": [audio, text]}, {"role": "assistant", "content": "Glass."}],
        [
            {"role": "system", "content": "S"},
            {"role": "user", "content": [audio, audio, text]},
            {"role": "assistant", "content": "Two."},
            {"role": "user", "content": [text, audio]},
        ],
        [{"role": "user", "content": "plain"}],
    ]
    for chat in chats:
        for prompt in (False, True):
            rendered = [
                render_jinja_template(
                    conversations=[chat], chat_template=source, add_generation_prompt=prompt
                )[0][0]
                for source in (ours, official)
            ]
            assert rendered[0] == rendered[1]
    # Audio clips are numbered across the conversation, each on its own line.
    two = render_jinja_template(conversations=[chats[1]], chat_template=ours)[0][0]
    assert "Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nAudio 2: " in two
    assert "What's that?Audio 3: <|audio_bos|><|AUDIO|><|audio_eos|>\n<|im_end|>" in two


def test_audio_project_pins_av_and_vllms_audio_extra(
    tmp_path: Path, tiny_qwen2_audio: Path
) -> None:
    files = compile_file(_spec(tmp_path, tiny_qwen2_audio)).files
    training = files["requirements.txt"].decode().splitlines()
    assert "av==18.1.0" in training and "numpy==2.4.6" in training
    # The decoder these tests ran with is the pinned one.
    assert f"av=={metadata.version('av')}" in training
    serving_lines = files["requirements-serve.txt"].decode().splitlines()
    recorded = (FIXTURES / "vllm/serve_audio_resolution_py3.12.txt").read_text().splitlines()
    recorded = [line for line in recorded if line and not line.startswith("#")]
    for name in ("av", "scipy", "soundfile", "soxr"):
        line = next(line for line in recorded if line.startswith(f"{name}=="))
        assert line in serving_lines
    # The rest of the audio resolution is the recorded vLLM set, unchanged.
    assert set(recorded) <= set(serving_lines)
    assert "RUN pip install --no-cache-dir av==19.0.2 " in files["Dockerfile.serve"].decode()
    script = files["serve_vllm.sh"].decode()
    assert "--limit-mm-per-prompt '{\"audio\": 1}'" in script


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        (
            {"serve": {"max_images_per_prompt": 2}},
            "serve.max_images_per_prompt: max_images_per_prompt is for an image model",
        ),
        (
            {"model": {"name_or_path": "m", "multimodal": {"plugin": "llava"}}},
            "columns.audios: an audios column needs an audio model (plugin llava reads images)",
        ),
        (
            {
                "model": {
                    "name_or_path": "m",
                    "multimodal": {"plugin": "llava", "audio_max_seconds": 9},
                }
            },
            "model.multimodal.audio_max_seconds: audio_max_seconds is an audio setting; plugin "
            "llava has no use for it",
        ),
        (
            {"adapter": {"kind": "freeze"}},
            "adapter.kind: not supported yet: adapter freeze with an audio model",
        ),
    ],
)
def test_audio_refusals_outside_the_corpus(
    tmp_path: Path, tiny_qwen2_audio: Path, sections: dict, expected: str
) -> None:
    spec = _spec(tmp_path, tiny_qwen2_audio, **sections)
    if "llava" in json.dumps(sections):
        text = spec.read_text().replace("template: qwen2_audio", "template: llava")
        spec.write_text(text)
    result = CliRunner().invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2, result.output
    assert expected in result.output


def test_qwen2_audio_lora_trains_exports_and_answers_about_audio(
    tmp_path: Path, tiny_qwen2_audio: Path
) -> None:
    from transformers import AutoProcessor

    project = _project(tmp_path, tiny_qwen2_audio)
    run([sys.executable, "data.py"], project, ENV)

    # data.py's ids and labels for every demo row equal what the model's processor makes.
    from datasets import load_from_disk

    rows = load_from_disk(str(project / "data/processed/dataset"))["train"]
    demo = json.loads((DEMO / "mllm_audio_demo.json").read_text())
    processor = AutoProcessor.from_pretrained(tiny_qwen2_audio)
    template = (project / "chat_template.jinja").read_text()
    audio_id = processor.audio_token_id
    assert len(rows) == len(demo) == 3
    for row, example in zip(rows, demo, strict=True):
        assert row["audio_files"] == [f"data/mllm_audio_demo-media/{p}" for p in example["audios"]]
        conversation = _parts(example["messages"])
        text = processor.apply_chat_template(conversation, chat_template=template, tokenize=False)
        assert "Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\n" in text
        clips = [_decode(DEMO / p) for p in example["audios"]]
        expected = processor(text=[text], audio=clips, sampling_rate=RATE, add_special_tokens=False)
        assert row["input_ids"] == list(expected["input_ids"][0])
        # One audio token per 40 ms of audio: the encoder's stride-2 convolution, then pooling by 2.
        frames = int(expected["feature_attention_mask"].sum())
        assert row["input_ids"].count(audio_id) == ((frames - 1) // 2 + 1 - 2) // 2 + 1
        labelled = [
            t for t, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != -100
        ]
        answer = example["messages"][1]["content"] + "<|im_end|>"
        assert processor.tokenizer.decode(labelled) == answer

    run([sys.executable, *LAUNCH, "train.py"], project, ENV)
    adapter = safetensors.load_file(project / "outputs/adapter_model.safetensors")
    assert adapter and all("language_model" in key for key in adapter)

    run([sys.executable, "export.py"], project, ENV)
    base, exported = _weights(tiny_qwen2_audio), _weights(project / "exported")
    assert base.keys() == exported.keys()
    audio_side = [key for key in base if key.startswith(AUDIO_SIDE)]
    assert any(k.startswith("model.audio_tower.") for k in audio_side)
    for key in audio_side:
        assert torch.equal(base[key], exported[key]), f"{key} changed but it is frozen"
    assert any(
        not torch.equal(base[k], exported[k]) for k in base if k.startswith("model.language_model.")
    )

    # The exported processor carries the project's template, audio tokens included.
    saved = AutoProcessor.from_pretrained(project / "exported")
    assert saved.chat_template == template
    question = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "Who?"}]}]
    rendered = saved.apply_chat_template(question, add_generation_prompt=True, tokenize=False)
    assert rendered.endswith(
        "<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nWho?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )

    clip = DEMO / "mllm_demo_data/2.wav"
    flags = ["--prompt", "Who?", "--audio", str(clip), "--chat_max_new_tokens", "4"]
    out = run([sys.executable, "chat.py", *flags], project, ENV)
    assert "[chat] model: exported/" in out

    # serve.py answers an OpenAI-style input_audio message; the prompt holds the clip's tokens.
    openai = pytest.importorskip("openai")
    data = base64.b64encode(clip.read_bytes()).decode()
    parts = [
        {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}},
        {"type": "text", "text": "Who?"},
    ]
    prompt = saved(
        text=[rendered], audio=[_decode(clip)], sampling_rate=RATE, add_special_tokens=False
    )["input_ids"][0]
    with serving(sys.executable, project, ENV) as url:
        client = openai.OpenAI(base_url=url, api_key="unused")
        messages = [{"role": "user", "content": parts}]
        reply = client.chat.completions.create(model="lfc-model", messages=messages, max_tokens=3)
        assert reply.usage.prompt_tokens == len(prompt)
        assert reply.choices[0].finish_reason in ("stop", "length")
        flac = [{"type": "input_audio", "input_audio": {"data": data, "format": "flac"}}]
        with pytest.raises(openai.BadRequestError, match="wav or mp3"):
            client.chat.completions.create(
                model="lfc-model", messages=[{"role": "user", "content": flac}]
            )
        garbage = base64.b64encode(b"not audio at all").decode()
        noise = [{"type": "input_audio", "input_audio": {"data": garbage, "format": "mp3"}}]
        with pytest.raises(openai.BadRequestError, match="not readable audio"):
            client.chat.completions.create(
                model="lfc-model", messages=[{"role": "user", "content": noise}]
            )


def test_full_training_keeps_the_audio_tower_and_trains_the_projector(
    tmp_path: Path, tiny_qwen2_audio: Path
) -> None:
    multimodal = {"plugin": "qwen2_audio", "freeze_projector": False, "audio_max_seconds": 2.0}
    model = {"name_or_path": "../tiny-qwen2-audio", "multimodal": multimodal}
    project = _project(tmp_path, tiny_qwen2_audio, model=model, adapter={"kind": "full"})
    run([sys.executable, "data.py"], project, ENV)
    # Every demo clip is longer than 2 s: each is cut to 200 feature frames, 50 audio tokens.
    from datasets import load_from_disk
    from transformers import AutoProcessor

    audio_id = AutoProcessor.from_pretrained(tiny_qwen2_audio).audio_token_id
    rows = load_from_disk(str(project / "data/processed/dataset"))["train"]
    assert [row["input_ids"].count(audio_id) for row in rows] == [50, 50, 50]
    run([sys.executable, *LAUNCH, "train.py"], project, ENV)
    base, trained = _weights(tiny_qwen2_audio), _weights(project / "outputs")
    changed = {key for key in base if not torch.equal(base[key], trained[key])}
    assert not {k for k in changed if k.startswith("model.audio_tower.")}
    assert {k for k in base if k.startswith("model.multi_modal_projector.")} <= changed
    assert {k for k in changed if k.startswith("model.language_model.")}


def test_rows_whose_audio_and_placeholders_disagree_are_reported_by_row(
    tmp_path: Path, tiny_qwen2_audio: Path
) -> None:
    def row(user: str, audios: list[str], answer: str = "Them.") -> dict:
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        return {"messages": messages, "audios": audios}

    rows = [
        row("<audio><audio>Who?", ["mllm_demo_data/1.mp3"]),
        row("<audio>Who?", ["mllm_demo_data/missing.wav"]),
        row("Who?", ["mllm_demo_data/1.mp3"], answer="<audio>Them."),
        row("<audio>Who?", ["mllm_demo_data/broken.wav"]),
        row("<audio>Who?", ["mllm_demo_data/3.flac"]),
    ]
    shutil.copytree(DEMO, tmp_path / "mllm")
    (tmp_path / "mllm/mllm_demo_data/broken.wav").write_bytes(b"RIFF but no audio in here")
    (tmp_path / "mllm/bad.json").write_text(json.dumps(rows))
    project = tmp_path / "run"
    write_project(compile_file(_spec(tmp_path, tiny_qwen2_audio, rows="bad.json")).files, project)
    result = subprocess.run(
        [sys.executable, "data.py"], cwd=project, env=ENV, capture_output=True, text=True
    )
    assert result.returncode != 0
    where = "bad (data/bad.json) row"
    assert f"{where} 0: 2 <audio> placeholders but 1 audio files" in result.stderr
    assert f"{where} 1: audio 'mllm_demo_data/missing.wav' is not in data/bad-media/" in (
        result.stderr
    )
    assert f"{where} 2: turn 1 (assistant) has an <audio>; audio goes in user turns" in (
        result.stderr
    )
    broken = "data/bad-media/mllm_demo_data/broken.wav"
    assert f"{where} 3: audio '{broken}' cannot be decoded: " in result.stderr
    assert f"{where} 4" not in result.stderr
    assert "4 malformed rows" in result.stderr + result.stdout
