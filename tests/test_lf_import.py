"""`lfc import llamafactory` over every example config LLaMA-Factory ships.

Each one either becomes a spec that validates and compiles against LLaMA-Factory's own demo
registry, or is refused with a reason per key. docs/llamafactory-import.md holds the result
table and the key mapping; this test regenerates both and fails when the doc is stale
(`LFC_UPDATE_GOLDEN=1` rewrites it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lfc import lf_import
from lfc.cli import app
from lfc.errors import SpecError
from lfc.lf_import import import_llamafactory, spec_text
from lfc.pipeline import compile_file
from lfc.render import plan_project
from lfc.schemas.spec import Spec

from conftest import EXAMPLES, FIXTURES, ROOT

LF_EXAMPLES = FIXTURES / "llamafactory_examples"
CONFIGS = sorted(LF_EXAMPLES.rglob("*.yaml"))
IDS = [c.relative_to(LF_EXAMPLES).as_posix() for c in CONFIGS]
DOC = ROOT / "docs" / "llamafactory-import.md"
MINIMAL = {
    "model_name_or_path": "org/model",
    "stage": "sft",
    "finetuning_type": "lora",
    "dataset": "alpaca_en_demo",
    "template": "llama3",
}


def _workdir(tmp_path: Path) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "data").symlink_to(EXAMPLES / "data" / "llamafactory")
    return tmp_path


def _outcome(config: Path, tmp_path: Path) -> tuple[bool, str]:
    """(imported, what): the compiled file count, or every refusal reason."""
    data = yaml.safe_load(config.read_text())
    try:
        imported = import_llamafactory(data, config.name)
    except SpecError as error:
        return False, "; ".join(
            f"`{p.key}`: {p.message}" if p.key else p.message for p in error.problems
        )
    spec = _workdir(tmp_path) / "spec.yaml"
    spec.write_text(spec_text(imported, config.name))
    try:
        files = compile_file(spec).files
    except SpecError as error:  # converted, but lfc's own rules refuse the combination
        return False, "; ".join(p.message for p in error.problems)
    return (
        True,
        f"{imported.spec['stage']['kind']}, {imported.spec['adapter']['kind']}, {len(files)} files",
    )


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_every_example_imports_and_compiles_or_is_refused_with_reasons(
    config: Path, tmp_path: Path
) -> None:
    data = yaml.safe_load(config.read_text())
    imported, what = _outcome(config, tmp_path)
    if not imported:
        assert what, "a refusal must say why"
        return
    # Never dropped: every key is mapped, consumed, or reported as a note in the spec.
    result = import_llamafactory(data, config.name)
    noted = {key for key, _ in result.notes}
    mapped = set(lf_import.DIRECT) | set(lf_import.HANDLERS) | lf_import.CONSUMED
    for key in data:
        assert key in mapped or key in noted, key
    text = spec_text(result, config.name)
    for key in noted:
        assert f"#   {key}: " in text


def test_the_doc_lists_the_current_outcome_and_mapping(tmp_path: Path) -> None:
    rows = []
    for index, (config, name) in enumerate(zip(CONFIGS, IDS, strict=True)):
        imported, what = _outcome(config, tmp_path / str(index))
        rows.append(f"| `{name}` | {'imported' if imported else 'refused'} | {what} |")
    doc = _doc(rows)
    if os.environ.get("LFC_UPDATE_GOLDEN"):
        DOC.write_text(doc)
    assert DOC.read_text() == doc, "docs/llamafactory-import.md is stale: LFC_UPDATE_GOLDEN=1"


def _doc(rows: list[str]) -> str:
    direct = [f"| `{k}` | `{s}.{f}` |" for k, (s, f) in lf_import.DIRECT.items()]
    special = [
        "| `stage` + `pref_loss` | `stage.kind` (dpo with pref_loss orpo/simpo: stage orpo/simpo; "
        "hinge/ipo: `stage.loss_type`) |",
        "| `pref_beta`, `simpo_gamma`, `kto_chosen_weight`, `kto_rejected_weight` | "
        "`stage.beta`, `stage.gamma`, `stage.desirable_weight`, `stage.undesirable_weight` |",
        "| `finetuning_type` + `lora_*` / `freeze_*` | `adapter` (lora_target all: all-linear; "
        "lora_alpha unset: 2 x rank) |",
        "| `dataset`, `dataset_dir`, `mix_strategy`, `interleave_probs` | `data.registry` "
        "(dataset_dir/dataset_info.json), `data.datasets`, `data.mix`, `data.probabilities` |",
        "| `lr_scheduler_type` | `train.scheduler` |",
        "| `report_to`, `use_swanlab` | `train.report_to` (tensorboard, wandb, mlflow, swanlab; "
        "none: []; use_swanlab adds swanlab) |",
        "| `run_name`, `swanlab_run_name`, `swanlab_project`, `swanlab_mode` | "
        "`tracking.run_name`, `tracking.project`, `tracking.mode` (cloud: online, local: "
        "offline); without wandb, mlflow or swanlab: noted, no effect |",
        "| `flash_attn` | `model.attn_implementation` (auto, sdpa: sdpa; disabled: eager) |",
        "| `disable_gradient_checkpointing` | `train.gradient_checkpointing` (LF's default: on) |",
        "| `max_steps` | `train.max_steps` (-1: unset) |",
    ]
    templates = [
        f"| `{lf}` | `{ours}` | {why or ''} |" for lf, (ours, why) in lf_import.TEMPLATES.items()
    ]
    no_effect = [f"| `{k}` | {why} |" for k, why in lf_import.NO_EFFECT.items()]
    refused = [f"| `{k}` | {why} |" for k, why in lf_import.UNSUPPORTED.items()]
    defaults = [f"| `{k}` | `{v!r}` |" for k, v in lf_import.LF_DEFAULTS.items()]
    parts = [
        "# Importing LLaMA-Factory configs",
        "",
        "`lfc import llamafactory CONFIG.yaml -o spec.yaml` turns a LLaMA-Factory (v0) training "
        "YAML into an lfc spec. Every key is mapped, or reported by name: keys without effect in "
        "an lfc project become comments at the top of the spec (and lines on stderr); keys of "
        "features lfc lacks make the import fail (exit 2, nothing written) with one line per "
        "key and its position. Where LLaMA-Factory's defaults differ from lfc's, the import "
        "writes LLaMA-Factory's value, so the run trains with the same settings.",
        "",
        "This file is generated by `tests/test_lf_import.py` (`LFC_UPDATE_GOLDEN=1`).",
        "",
        "## Keys copied as they are",
        "",
        "| LLaMA-Factory | lfc |",
        "| --- | --- |",
        *direct,
        "",
        "## Keys translated",
        "",
        "| LLaMA-Factory | lfc |",
        "| --- | --- |",
        *special,
        "",
        "## LLaMA-Factory defaults written explicitly when the key is absent",
        "",
        "| key | value |",
        "| --- | --- |",
        *defaults,
        "",
        "## Templates",
        "",
        "| LLaMA-Factory | lfc | note |",
        "| --- | --- | --- |",
        *templates,
        "",
        "`llava` and `qwen2_vl` map to lfc's template of that name with `model.multimodal: "
        "{plugin: ...}` of the same name (and image_max_pixels, image_min_pixels, "
        "freeze_vision_tower, freeze_multi_modal_projector onto it); with `qwen2_vl`, which "
        "LLaMA-Factory uses for Qwen2.5-VL too, a model_name_or_path naming Qwen2.5-VL gives "
        "plugin `qwen2_5_vl` (a note says so), and video_fps, video_maxlen, video_max_pixels, "
        "video_min_pixels map onto it as well (with any other template they are refused). The "
        "other multimodal templates (qwen3_vl, moss_vl, mllama, ...) are refused: lfc has no "
        "plugin for them. `qwen2_audio` maps to lfc's `qwen2_audio` template with "
        "`model.multimodal: {plugin: qwen2_audio}` (audio_sampling_rate onto it, and "
        "freeze_vision_tower, which LLaMA-Factory applies to Qwen2-Audio's audio_tower, as "
        "freeze_audio_tower; freeze_multi_modal_projector as freeze_projector); lfc writes each "
        "clip as transformers' Qwen2AudioProcessor template does (`Audio N: <|audio_bos|>"
        "<|AUDIO|><|audio_eos|>` and a newline), LLaMA-Factory the audio tokens alone. Other "
        "names are refused with the list above. Registry entries' `images`, `videos` and "
        "`audios` columns read their files from the registry's folder.",
        "",
        "## Keys without effect in an lfc project (kept as notes)",
        "",
        "| key | why |",
        "| --- | --- |",
        *no_effect,
        "",
        "`bf16` / `fp16` / `pure_bf16` are noted as not applied: the cpu pin set trains in "
        "float32.",
        "",
        "## Keys refused",
        "",
        "| key | why |",
        "| --- | --- |",
        *refused,
        "",
        "Any other key is refused as unknown. Accelerate, Megatron, LLaMA-Factory v1, inference "
        "and export configs are refused as a whole, saying what they are.",
        "",
        "## LLaMA-Factory's example configs",
        "",
        "| config | result | stage, method, files / reasons |",
        "| --- | --- | --- |",
        *rows,
        "",
    ]
    return "\n".join(parts)


def _spec(config: dict) -> dict:
    return import_llamafactory(config).spec


def test_llava_image_keys_map_onto_model_multimodal() -> None:
    image = {"template": "llava", "image_max_pixels": 262144, "freeze_multi_modal_projector": False}
    spec = _spec({**MINIMAL, **image})
    assert spec["template"] == "llava"
    expected = {"plugin": "llava", "image_max_pixels": 262144, "freeze_projector": False}
    assert spec["model"]["multimodal"] == expected
    text = import_llamafactory({**MINIMAL, "template": "qwen", "image_max_pixels": 4096})
    assert "multimodal" not in text.spec["model"]
    assert ("image_max_pixels", "4096: no effect without an image model") in text.notes
    with pytest.raises(SpecError, match="video_fps: 2.0: video needs template qwen2_vl"):
        import_llamafactory({**MINIMAL, "template": "llava", "video_fps": 2.0})


def test_qwen2_vl_template_maps_onto_the_qwen2_vl_plugin() -> None:
    image = {"template": "qwen2_vl", "image_max_pixels": 262144, "image_min_pixels": 1024}
    spec = _spec({**MINIMAL, **image})
    assert spec["template"] == "qwen2_vl"
    expected = {"plugin": "qwen2_vl", "image_max_pixels": 262144, "image_min_pixels": 1024}
    assert spec["model"]["multimodal"] == expected


def test_qwen2_vl_template_with_a_qwen2_5_vl_model_and_video_keys() -> None:
    # LLaMA-Factory renders Qwen2.5-VL with template qwen2_vl too: the plugin follows the name.
    video = {"video_fps": 1.0, "video_maxlen": 64, "video_max_pixels": 16384}
    config = {**MINIMAL, "model_name_or_path": "Qwen/Qwen2.5-VL-7B-Instruct", **video}
    imported = import_llamafactory({**config, "template": "qwen2_vl"})
    assert imported.spec["template"] == "qwen2_vl"
    assert imported.spec["model"]["multimodal"] == {"plugin": "qwen2_5_vl", **video}
    assert any("Qwen2.5-VL" in why for key, why in imported.notes if key == "template")
    qwen2 = import_llamafactory({**MINIMAL, "template": "qwen2_vl", "video_min_pixels": 1024})
    assert qwen2.spec["model"]["multimodal"] == {"plugin": "qwen2_vl", "video_min_pixels": 1024}


def test_qwen2_audio_template_maps_onto_the_qwen2_audio_plugin() -> None:
    audio = {
        "template": "qwen2_audio",
        "audio_sampling_rate": 16000,
        "freeze_vision_tower": True,
        "freeze_multi_modal_projector": False,
    }
    imported = import_llamafactory({**MINIMAL, **audio})
    spec = imported.spec
    assert spec["template"] == "qwen2_audio"
    expected = {
        "plugin": "qwen2_audio",
        "audio_sampling_rate": 16000,
        "freeze_audio_tower": True,
        "freeze_projector": False,
    }
    assert spec["model"]["multimodal"] == expected
    assert any("Audio N: " in note for key, note in imported.notes if key == "template")
    # Without the audio template the key does nothing, and says so.
    notes = import_llamafactory({**MINIMAL, "audio_sampling_rate": 16000}).notes
    assert ("audio_sampling_rate", "16000: no effect without an audio model") in notes


def test_registry_audios_column_reads_media_from_the_registry_folder() -> None:
    from lfc.registry import translate_entry

    registry = json.loads((EXAMPLES / "data/llamafactory/dataset_info.json").read_text())
    dataset = translate_entry("mllm_audio_demo", registry["mllm_audio_demo"], "lf", "sft")
    assert dataset["columns"]["audios"] == "audios"
    assert dataset["media_dir"] == "lf"
    assert dataset["path"] == "lf/mllm_audio_demo.json"


def test_registry_images_column_reads_media_from_the_registry_folder() -> None:
    from lfc.registry import translate_entry

    registry = json.loads((EXAMPLES / "data/llamafactory/dataset_info.json").read_text())
    dataset = translate_entry("mllm_demo", registry["mllm_demo"], "lf", "sft")
    assert dataset["columns"]["images"] == "images"
    assert dataset["media_dir"] == "lf"
    assert dataset["path"] == "lf/mllm_demo.json"
    video = translate_entry("mllm_video_demo", registry["mllm_video_demo"], "lf", "sft")
    assert video["columns"]["videos"] == "videos"
    assert video["media_dir"] == "lf"


def test_llamafactory_defaults_are_written_when_absent() -> None:
    spec = _spec(MINIMAL)
    assert spec["train"]["learning_rate"] == 5e-5
    assert spec["train"]["batch_size"] == 8
    assert spec["train"]["scheduler"] == "linear"
    assert spec["train"]["logging_steps"] == 500
    assert spec["train"]["save_total_limit"] is None
    assert spec["train"]["gradient_checkpointing"] is True
    assert spec["data"]["cutoff_len"] == 2048
    assert spec["adapter"] == {
        "kind": "lora",
        "rank": 8,
        "alpha": 16,
        "dropout": 0.0,
        "target": "all-linear",
    }
    given = _spec(
        {
            **MINIMAL,
            "learning_rate": 1e-3,
            "lora_rank": 4,
            "lora_target": "q_proj,v_proj",
            "disable_gradient_checkpointing": True,
        }
    )
    assert given["train"]["learning_rate"] == 1e-3
    assert given["adapter"]["alpha"] == 8 and given["adapter"]["target"] == ["q_proj", "v_proj"]
    assert given["train"]["gradient_checkpointing"] is False


@pytest.mark.parametrize(
    ("extra", "stage"),
    [
        ({"pref_loss": "sigmoid"}, {"kind": "dpo", "beta": 0.1}),
        ({"pref_loss": "ipo", "pref_beta": 0.3}, {"kind": "dpo", "loss_type": "ipo", "beta": 0.3}),
        ({"pref_loss": "orpo"}, {"kind": "orpo", "beta": 0.1}),
        ({"pref_loss": "simpo", "simpo_gamma": 1.0}, {"kind": "simpo", "beta": 0.1, "gamma": 1.0}),
    ],
)
def test_preference_losses_choose_the_stage(extra: dict, stage: dict) -> None:
    config = {**MINIMAL, "stage": "dpo", "dataset": "dpo_en_demo", **extra}
    assert _spec(config)["stage"] == stage


def test_method_options_map_onto_the_spec() -> None:
    lora = _spec(
        {
            **MINIMAL,
            "pissa_init": True,
            "pissa_iter": 4,
            "pissa_convert": True,
            "loraplus_lr_ratio": 16.0,
            "quantization_bit": 4,
            "quantization_type": "fp4",
            "double_quantization": False,
            "neftune_noise_alpha": 5,
        }
    )
    assert lora["adapter"]["init"] == "pissa" and lora["adapter"]["pissa_niter"] == 4
    assert lora["adapter"]["loraplus_lr_ratio"] == 16.0
    assert lora["model"]["quantization"] == {"bits": 4, "type": "fp4", "double_quant": False}
    assert lora["train"]["neftune_alpha"] == 5
    exact = _spec({**MINIMAL, "pissa_init": True, "pissa_iter": -1, "additional_target": "lm_head"})
    assert "pissa_niter" not in exact["adapter"]
    assert exact["adapter"]["modules_to_save"] == ["lm_head"]
    freeze = {"finetuning_type": "freeze", "freeze_trainable_modules": "mlp,self_attn"}
    assert _spec({**MINIMAL, **freeze})["adapter"]["trainable_modules"] == ["mlp", "self_attn"]
    pro = {"finetuning_type": "freeze", "freeze_trainable_layers": 8, "use_llama_pro": True}
    assert _spec({**MINIMAL, **pro})["adapter"] == {
        "kind": "freeze",
        "llama_pro": {"new_layers": 8, "expand": False},
    }
    full = {**MINIMAL, "finetuning_type": "full"}
    galore = {"use_galore": True, "galore_rank": 16, "galore_update_interval": 50}
    galore |= {"galore_scale": 2.0, "galore_proj_type": "left", "galore_target": "q_proj,v_proj"}
    assert _spec({**full, **galore, "galore_layerwise": True})["train"]["optimizer"] == {
        "kind": "galore",
        "rank": 16,
        "update_proj_gap": 50,
        "scale": 2.0,
        "proj_type": "left",
        "target": ["q_proj", "v_proj"],
        "layerwise": True,
    }
    apollo = {"use_apollo": True, "apollo_rank": 1, "apollo_scale_type": "tensor"}
    apollo |= {"apollo_proj": "svd", "apollo_target": "all"}
    assert _spec({**full, **apollo})["train"]["optimizer"] == {
        "kind": "apollo",
        "rank": 1,
        "proj": "svd",
        "scale_type": "tensor",
        "target": "all-linear",
    }
    badam = {"use_badam": True, "badam_switch_mode": "fixed", "badam_start_block": 3}
    assert _spec({**full, **badam, "badam_switch_interval": 5})["train"]["optimizer"] == {
        "kind": "badam",
        "switch_mode": "fixed",
        "switch_interval": 5,
        "start_block": 3,
    }


def test_trackers_run_name_and_swanlab_keys_map_to_report_to_and_tracking() -> None:
    both = import_llamafactory({**MINIMAL, "report_to": "wandb,mlflow", "run_name": "r1"})
    assert both.spec["train"]["report_to"] == ["wandb", "mlflow"]
    assert both.spec["tracking"] == {"run_name": "r1"}
    assert any(key == "report_to" and "offline" in what for key, what in both.notes)
    swanlab = _spec(
        {
            **MINIMAL,
            "report_to": "tensorboard",
            "use_swanlab": True,
            "swanlab_project": "proj",
            "swanlab_run_name": "s1",
            "swanlab_mode": "cloud",
        }
    )
    assert swanlab["train"]["report_to"] == ["tensorboard", "swanlab"]
    assert swanlab["tracking"] == {"run_name": "s1", "project": "proj", "mode": "online"}
    Spec.model_validate({**swanlab, "data": {"datasets": [{"path": "d.json", "format": "alpaca"}]}})
    quiet = import_llamafactory(
        {**MINIMAL, "report_to": "none", "run_name": "r", "swanlab_project": "p"}
    )
    assert "tracking" not in quiet.spec and quiet.spec["train"]["report_to"] == []
    assert {key for key, _ in quiet.notes} >= {"run_name", "swanlab_project"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"no_such_key": 1}, "no_such_key: lfc has no mapping for this option"),
        ({"finetuning_type": "full", "lora_rank": 8}, "lora_rank: a lora option, but"),
        ({"pref_beta": 0.2}, "pref_beta: a preference option, but stage is sft"),
        ({"quantization_bit": 3}, "quantization_bit: quantization_bit 3: use 4 or 8"),
        (
            {"quantization_bit": 4, "quantization_method": "hqq"},
            "quantization_method: quantization_method 'hqq': LLaMA-Factory quantizes on load "
            "with HqqConfig, which transformers 5.24 refuses",
        ),
        (
            {"quantization_bit": 8, "quantization_method": "eetq"},
            "quantization_method: quantization_method 'eetq': LLaMA-Factory quantizes on load "
            "with EetqConfig, and peft 0.21.2 puts LoRA on EETQ layers only with the eetq",
        ),
        (
            {"quantization_bit": 4, "quantization_method": "quanto"},
            "quantization_method: quantization_method 'quanto': lfc trains on bitsandbytes "
            r"\(bnb\) only; use quantization_method bnb",
        ),
        ({"rope_scaling": "linear"}, "rope_scaling: set model.rope_scaling"),
        ({"template": "qwen3_vl"}, "template: 'qwen3_vl' is multimodal"),
        ({"template": "nonsense"}, "template: no lfc template for 'nonsense'"),
        ({"shift_attn": True}, "shift_attn: LongLoRA's shift-short attention is not supported"),
        ({"report_to": "neptune"}, r"report_to: trackers \['neptune'\] are not supported"),
        ({"report_to": "all"}, "report_to: report_to all depends on what is installed"),
        (
            {"report_to": "wandb,swanlab", "run_name": "a", "swanlab_run_name": "b"},
            "swanlab_run_name: lfc names the run once for every tracker; run_name is 'a'",
        ),
        ({"use_swanlab": True, "swanlab_api_key": "k"}, "swanlab_api_key: a secret does not"),
        ({"use_swanlab": True, "swanlab_mode": "remote"}, "swanlab_mode: swanlab_mode 'remote'"),
        ({"deepspeed": "ds_z3_config.json"}, "deepspeed: lfc writes ds_config.json itself"),
        ({"galore_rank": 8}, "galore_rank: a galore option, but use_galore is not set"),
        ({"use_llama_pro": True}, "use_llama_pro: LLaMA Pro trains new blocks with .*freeze"),
        ({"use_badam": True, "badam_mode": "ratio"}, "badam_mode: .*layer-wise block mode only"),
        ({"use_apollo": True, "apollo_scale_front": True}, "apollo_scale_front: lfc's APOLLO"),
    ],
)
def test_refusals_name_the_key(extra: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        import_llamafactory({**MINIMAL, **extra}, "c.yaml")


def test_refusals_have_positions_and_nothing_is_written(tmp_path: Path) -> None:
    config = tmp_path / "lf.yaml"
    config.write_text("model_name_or_path: m\nstage: sft\nuse_muon: true\n")
    out = tmp_path / "spec.yaml"
    result = CliRunner().invoke(app, ["import", "llamafactory", str(config), "-o", str(out)])
    assert result.exit_code == 2
    assert f"{config}:3:1: use_muon: the Muon optimizer is not supported yet" in result.output
    assert not out.exists()


def test_cli_writes_refuses_to_overwrite_and_prints(tmp_path: Path) -> None:
    work = _workdir(tmp_path)
    config = LF_EXAMPLES / "train_lora" / "qwen3_lora_sft.yaml"
    out = work / "spec.yaml"
    runner = CliRunner()
    result = runner.invoke(app, ["import", "llamafactory", str(config), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "bf16: True: not applied" in result.output
    spec = compile_file(out).spec
    plan = plan_project(spec, {})
    assert {d.name for d in plan.datasets} == {"identity", "alpaca_en_demo"}
    assert all(d.options["max_samples"] == 1000 for d in plan.datasets)
    before = out.read_bytes()
    again = runner.invoke(app, ["import", "llamafactory", str(config), "-o", str(out)])
    assert again.exit_code == 3 and out.read_bytes() == before
    printed = runner.invoke(app, ["import", "llamafactory", str(config), "--dataset-dir", "lf"])
    assert printed.exit_code == 0 and "registry: lf/dataset_info.json" in printed.stdout
    assert "# Imported from qwen3_lora_sft.yaml" in printed.stdout
