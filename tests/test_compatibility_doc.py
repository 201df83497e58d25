"""docs/compatibility.md, the list of option combinations lfc refuses, is generated from the
bad-spec corpus: each row names a corpus case, and its message is what `lfc validate` prints for
that case, run here. So the doc cannot claim a refusal lfc does not make, nor word it
differently. `LFC_UPDATE_GOLDEN=1` rewrites the doc.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lfc.cli import app

from test_bad_spec_corpus import _workspace, runner

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "bad_specs"
DOC = ROOT / "docs" / "compatibility.md"

# (area, combination in words, corpus case). The message comes from the case.
COMBINATIONS: tuple[tuple[str, str, str], ...] = (
    ("Methods", "QLoRA (`model.quantization`) with full or freeze", "174-qlora-with-full.yaml"),
    ("Methods", "PiSSA/OLoRA init with DoRA", "175-pissa-with-dora.yaml"),
    ("Methods", "PiSSA/OLoRA init with trained biases", "177-olora-with-bias.yaml"),
    ("Methods", "PiSSA/OLoRA init with modules_to_save", "178-pissa-modules-to-save.yaml"),
    ("Methods", "PiSSA/OLoRA init on a quantized model", "182-pissa-with-quantization.yaml"),
    ("Methods", "8-bit quantization with a 4-bit type", "179-quantization-8bit-type.yaml"),
    ("Methods", "QLoRA with FSDP", "300-quantization-fsdp.yaml"),
    ("Methods", "QLoRA with stage ppo", "301-quantization-ppo.yaml"),
    ("Methods", "LoRA+ with stage ppo", "302-loraplus-ppo.yaml"),
    ("Methods", "PiSSA/OLoRA init with stage ppo or rm", "305-pissa-ppo.yaml"),
    ("Methods", "NEFTune with stage rm, ppo or grpo", "303-neftune-rm.yaml"),
    ("Methods", "LLaMA Pro with trainable_layers", "234-llama-pro-trainable-layers.yaml"),
    ("Methods", "LLaMA Pro with stage ppo", "237-llama-pro-ppo.yaml"),
    ("Optimizers", "GaLore or APOLLO with adapter lora", "220-galore-lora.yaml"),
    (
        "Optimizers",
        "layer-wise GaLore/APOLLO with grad_accum > 1",
        "222-galore-layerwise-grad-accum.yaml",
    ),
    ("Optimizers", "layer-wise GaLore/APOLLO with ddp", "223-apollo-layerwise-ddp.yaml"),
    ("Optimizers", "GaLore, APOLLO or BAdam with fsdp or deepspeed", "224-galore-fsdp.yaml"),
    ("Optimizers", "BAdam with adapter lora or freeze", "225-badam-lora.yaml"),
    ("Optimizers", "BAdam with more than one process", "227-badam-ddp.yaml"),
    ("Optimizers", "BAdam switch_mode fixed without start_block", "228-badam-fixed-no-start.yaml"),
    ("Stages", "packing outside stage sft", "067-packing-dpo.yaml"),
    ("Stages", "stage kto (loss kto) with batch size 1", "071-kto-batch-one.yaml"),
    ("Stages", "stage grpo with a batch not a multiple of the generations", "070-grpo-batch.yaml"),
    ("Stages", "train_on_prompt with mask_history", "077-mask-history-train-on-prompt.yaml"),
    ("Stages", "stage rm with serve or export settings", "076-rm-serve.yaml"),
    ("Distributed", "DeepSpeed on the cpu pin set", "068-deepspeed-cpu.yaml"),
    ("Distributed", "several machines on the cpu pin set", "069-multi-node-cpu.yaml"),
    ("Distributed", "stage ppo with more than one process", "072-ppo-ddp.yaml"),
    ("Distributed", "QLoRA with DeepSpeed ZeRO-3", "260-qlora-zero3.yaml"),
    (
        "Distributed",
        "LoRA+ with DeepSpeed optimizer offload",
        "261-loraplus-offload-optimizer.yaml",
    ),
    ("Distributed", "DeepSpeed parameter offload below ZeRO-3", "262-offload-params-zero2.yaml"),
    (
        "Tracking",
        "a tracking section without wandb, mlflow or swanlab",
        "200-tracking-without-tracker.yaml",
    ),
    (
        "Tracking",
        "mode online with mlflow and no server",
        "203-tracking-mlflow-online-without-uri.yaml",
    ),
    ("Tracking", "an MLflow server with mode offline", "204-tracking-uri-offline.yaml"),
    (
        "Tracking",
        "an MLflow server without the mlflow tracker",
        "205-tracking-uri-without-mlflow.yaml",
    ),
    ("Serving and export", "serving a LoRA adapter from a full run", "073-serve-lora-full.yaml"),
    ("Serving and export", "vLLM LoRA serving above rank 512", "075-serve-lora-rank.yaml"),
    ("Serving and export", "vLLM LoRA serving of a DoRA adapter", "304-serve-lora-dora.yaml"),
    (
        "Serving and export",
        "export.extra_adapters without adapter lora",
        "074-extra-adapters-freeze.yaml",
    ),
    ("Kernels", "flash_attention_2 on pins.target cpu", "280-flash-attention-cpu.yaml"),
    ("Kernels", "flash_attention_2 in float32", "281-flash-attention-float32.yaml"),
    ("Kernels", "flash_attention_2 with dtype auto", "283-flash-attention-dtype-auto.yaml"),
    ("Kernels", "Liger kernels on pins.target cpu", "282-liger-kernel-cpu.yaml"),
    ("Kernels", "Unsloth on pins.target cpu", "294-unsloth.yaml"),
    ("Kernels", "Unsloth with stage ppo", "340-unsloth-ppo.yaml"),
    ("Kernels", "Unsloth with stage rm", "345-unsloth-rm.yaml"),
    ("Kernels", "Unsloth with freeze tuning (or LLaMA Pro)", "341-unsloth-freeze.yaml"),
    ("Kernels", "Unsloth with PiSSA, OLoRA or LoftQ init", "342-unsloth-pissa.yaml"),
    ("Kernels", "Unsloth with flash_attention_2 (or eager)", "343-unsloth-flash-attn.yaml"),
    ("Kernels", "Unsloth with Liger kernels", "344-unsloth-liger.yaml"),
    ("Kernels", "Unsloth with a GPTQ/AWQ base", "349-unsloth-gptq.yaml"),
    ("Kernels", "Unsloth with an image-text model", "346-unsloth-multimodal.yaml"),
    ("Kernels", "Unsloth with model.rope_scaling", "347-unsloth-rope-scaling.yaml"),
    ("Kernels", "Unsloth with GaLore, APOLLO or BAdam", "348-unsloth-galore.yaml"),
    ("Methods", "LoftQ init without model.quantization", "310-loftq-no-quantization.yaml"),
    ("Methods", "LoftQ init on an 8-bit base", "311-loftq-8bit.yaml"),
    ("Methods", "LoftQ init on pins.target cpu", "312-loftq-cpu.yaml"),
    ("Methods", "LoftQ init with a LoRA scale other than 1", "313-loftq-alpha-not-rank.yaml"),
    ("Methods", "LoftQ init with DoRA", "315-loftq-dora.yaml"),
    ("Methods", "LoftQ init with modules_to_save", "316-loftq-modules-to-save.yaml"),
    ("Methods", "LoftQ init with trained biases", "319-loftq-bias.yaml"),
    ("Methods", "LoftQ init with stage ppo or rm", "317-loftq-rm.yaml"),
    (
        "Methods",
        "pre-quantized base served as a merged model",
        "330-prequantized-merged-serve.yaml",
    ),
    (
        "Methods",
        "pre-quantized base with export.dtype or max_shard_size",
        "333-prequantized-export-dtype.yaml",
    ),
    ("Methods", "pre-quantized base on pins.target cpu", "331-prequantized-cpu.yaml"),
    ("Methods", "pre-quantized base with DoRA", "332-prequantized-dora.yaml"),
    ("Methods", "pre-quantized base with full or freeze", "288-prequantized-full.yaml"),
    (
        "Methods",
        "pre-quantized base with model.quantization",
        "290-prequantized-and-quantization.yaml",
    ),
    ("Methods", "pre-quantized base with PiSSA/OLoRA/LoftQ init", "291-prequantized-pissa.yaml"),
    ("Methods", "pre-quantized base with stage ppo", "287-prequantized-ppo.yaml"),
    ("Methods", "pre-quantized base with export.quantization", "292-prequantized-export-bnb.yaml"),
    ("Methods", "pre-quantized base with the swanlab tracker", "385-prequantized-swanlab.yaml"),
    ("Methods", "an HQQ pre-quantized base", "350-prequantized-hqq.yaml"),
    ("Methods", "an EETQ pre-quantized base", "351-prequantized-eetq.yaml"),
    ("Methods", "pre-quantized base with an image model", "355-prequantized-image-model.yaml"),
    ("Methods", "pre-quantized base with target all-linear", "358-gptq-all-linear.yaml"),
    ("Methods", "AQLM base with target all-linear", "357-aqlm-all-linear.yaml"),
    ("Methods", "AQLM base with DoRA", "353-aqlm-dora.yaml"),
    ("Methods", "AQLM base with Unsloth", "359-aqlm-unsloth.yaml"),
    (
        "Methods",
        "AQLM base with vLLM settings (lora_adapter, ...)",
        "352-aqlm-serve-lora-adapter.yaml",
    ),
    ("Image models", "plugin qwen2_vl with pins.target cuda13.0", "320-qwen2vl-cuda-target.yaml"),
    ("Image models", "a videos column with the llava plugin", "241-multimodal-videos-column.yaml"),
    (
        "Image models",
        "an audios column (llava, qwen2_vl and qwen2_5_vl see, not hear)",
        "242-multimodal-audios-column.yaml",
    ),
    ("Image models", "an images column on a text model", "243-images-without-multimodal.yaml"),
    ("Image models", "an images column without media_dir", "244-images-without-media-dir.yaml"),
    ("Image models", "another template than the plugin's", "245-multimodal-template-mismatch.yaml"),
    ("Image models", "qwen2_vl with another template", "321-qwen2vl-template-mismatch.yaml"),
    ("Image models", "adapter freeze", "246-multimodal-freeze-adapter.yaml"),
    ("Image models", "data.packing", "247-multimodal-packing.yaml"),
    ("Image models", "more than one process", "248-multimodal-ddp.yaml"),
    ("Image models", "an Ollama Modelfile", "249-multimodal-ollama.yaml"),
    ("Image models", "stages other than sft", "254-multimodal-dpo.yaml"),
    ("Image models", "a quantized base model", "255-multimodal-quantization.yaml"),
    ("Video", "video settings with the llava plugin", "360-video-settings-llava.yaml"),
    ("Video", "video_min_pixels above video_max_pixels", "361-video-min-above-max.yaml"),
    ("Video", "video settings without a videos column", "362-video-settings-without-videos.yaml"),
    ("Video", "serve.max_videos_per_prompt without videos", "363-max-videos-without-videos.yaml"),
    ("Video", "qwen2_5_vl with another template than qwen2_vl", "364-qwen2-5-vl-template.yaml"),
    ("Video", "plugin qwen2_5_vl with pins.target cuda13.0", "365-qwen2-5-vl-cuda-target.yaml"),
    ("Video", "a videos column without media_dir", "366-videos-without-media-dir.yaml"),
    ("Video", "a videos column on a text model", "367-videos-without-model-multimodal.yaml"),
    ("Video", "video_maxlen below 1", "368-video-maxlen-zero.yaml"),
    ("Video", "videos of a hub dataset", "369-videos-hub-dataset.yaml"),
    ("Audio models", "an audios column on a text model", "370-audios-without-multimodal.yaml"),
    ("Audio models", "an images column with qwen2_audio", "371-qwen2audio-images-column.yaml"),
    ("Audio models", "qwen2_audio with another template", "372-qwen2audio-template-mismatch.yaml"),
    ("Audio models", "a sampling rate other than 16 kHz", "373-qwen2audio-sampling-rate.yaml"),
    ("Audio models", "image settings with qwen2_audio", "374-qwen2audio-image-setting.yaml"),
    ("Audio models", "audio longer than 30 s", "375-qwen2audio-max-seconds.yaml"),
    (
        "Audio models",
        "plugin qwen2_audio with pins.target cuda13.0",
        "376-qwen2audio-cuda-target.yaml",
    ),
    ("Audio models", "an audios column without media_dir", "377-audios-without-media-dir.yaml"),
    (
        "Audio models",
        "serve.max_audios_per_prompt on another model",
        "378-max-audios-on-image-model.yaml",
    ),
    (
        "Audio models",
        "data.packing (and the image models' other refusals)",
        "379-qwen2audio-packing.yaml",
    ),
    ("Audio models", "a videos column with qwen2_audio", "387-qwen2audio-videos-column.yaml"),
    ("Audio models", "video settings with qwen2_audio", "388-qwen2audio-video-setting.yaml"),
    ("Audio models", "audios and videos in one dataset", "389-audios-and-videos-one-dataset.yaml"),
    (
        "Audio models",
        "serve.max_videos_per_prompt on an audio model",
        "390-max-videos-on-audio-model.yaml",
    ),
)


def _message(case: str, scratch: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """The key and message `lfc validate` prints for a corpus case (its first error line)."""
    work = _workspace(scratch / case, case, (CORPUS / case).read_bytes())
    monkeypatch.chdir(work)
    result = runner.invoke(app, ["validate", "spec.yaml"])
    assert result.exit_code == 2, result.stderr
    first = result.stderr.splitlines()[0]
    key, message = first.split(": ", 2)[1:]
    return key, message


def render(scratch: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    lines = [
        "# Combinations lfc refuses",
        "",
        "Each of these fails at `lfc compile` (and `lfc validate`) with exit status 2, the",
        "message below, and the spec's file, line and column; nothing is written. The test case",
        "is a spec in `tests/bad_specs/` that proves it.",
        "",
        "This file is generated by `tests/test_compatibility_doc.py` (`LFC_UPDATE_GOLDEN=1`).",
    ]
    area = None
    for section, combination, case in COMBINATIONS:
        if section != area:
            area = section
            lines += ["", f"## {section}", "", "| combination | key | message | case |"]
            lines += ["| --- | --- | --- | --- |"]
        key, message = _message(case, scratch, monkeypatch)
        message = message.replace("|", "\\|")
        lines.append(f"| {combination} | `{key}` | {message} | `{case}` |")
    return "\n".join(lines) + "\n"


def test_every_row_names_a_corpus_case_once() -> None:
    cases = [case for _, _, case in COMBINATIONS]
    assert len(cases) == len(set(cases))
    for case in cases:
        assert (CORPUS / case).is_file(), case


def test_doc_matches_the_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = render(tmp_path, monkeypatch)
    if os.environ.get("LFC_UPDATE_GOLDEN"):
        DOC.write_text(doc)
    assert DOC.read_text() == doc, "docs/compatibility.md is stale: LFC_UPDATE_GOLDEN=1"
