"""Arguments of this project: config.yaml first, then the command line.

Imported by every script of the project. Every script reads the same config.yaml,
so `python data.py --cutoff_len 512` or `accelerate launch train.py --learning_rate 1e-5`
overrides one value without editing the file. Unknown keys are errors.
"""

import argparse
import sys
import types
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from trl import SFTConfig

CONFIG_FILE = "config.yaml"


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "Hub id or local model folder."})
    model_revision: str | None = field(default=None, metadata={"help": "Hub revision."})
    dtype: str = field(default="auto", metadata={"help": "auto, float32, bfloat16..."})
    attn_implementation: str = field(default="sdpa", metadata={"help": "or eager"})


@dataclass
class LoraArguments:
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: float = field(default=16.0, metadata={"help": "scale = alpha / r"})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA input dropout."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["all-linear"],
        metadata={"help": "Module names that get adapters, or all-linear."},
    )


@dataclass
class DataArguments:
    cutoff_len: int = field(default=1024, metadata={"help": "Max tokens per example."})
    val_size: float = field(default=0.0, metadata={"help": "Fraction held out."})
    processed_dir: str = field(
        default="data/processed", metadata={"help": "Where data.py saves."}
    )
    num_proc: int = field(default=1, metadata={"help": "Processes for data.py."})
    on_bad_row: str = field(
        default="error", metadata={"help": "error, or skip (listed in rejected.jsonl)."}
    )
    shuffle: bool = field(default=False, metadata={"help": "Shuffle processed rows."})
    overwrite: bool = field(
        default=False, metadata={"help": "Process again even if the cache is fresh."}
    )


@dataclass
class RunArguments:
    auto_resume: bool = field(
        default=True, metadata={"help": "Resume from the newest complete checkpoint."}
    )


@dataclass
class ExportArguments:
    export_dir: str = field(
        default="exported", metadata={"help": "Where export.py saves."}
    )
    export_dtype: str = field(
        default="auto", metadata={"help": "auto (as trained), float32, float16..."}
    )
    export_max_shard_size: str = field(
        default="5GB", metadata={"help": "Largest safetensors shard."}
    )
    export_extra_adapters: list[str] = field(
        default_factory=list, metadata={"help": "More LoRA adapters merged, in order."}
    )
    prompt: str | None = field(default=None, metadata={"help": "chat.py: one prompt."})
    chat_max_new_tokens: int = field(default=128, metadata={"help": "chat.py: tokens."})
    chat_temperature: float = field(default=0.0, metadata={"help": "chat.py: 0 greedy"})


@dataclass
class ServeArguments:
    serve_host: str = field(default="127.0.0.1", metadata={"help": "serve.py: host."})
    serve_port: int = field(default=8000, metadata={"help": "serve.py: TCP port."})
    served_model_name: str = field(
        default="lfc-model", metadata={"help": "The model name clients send."}
    )
    serve_max_model_len: int | None = field(
        default=None, metadata={"help": "Longest prompt + answer (tokens)."}
    )


@dataclass
class Args:
    """Everything one run needs, grouped as config.yaml groups it."""

    model: ModelArguments
    lora: LoraArguments
    data: DataArguments
    run: RunArguments
    export: ExportArguments
    serve: ServeArguments
    training: "SFTConfig"

    @property
    def trust_remote_code(self) -> bool:
        return self.training.trust_remote_code


@dataclass
class DataRun:
    """What data.py needs: the model (for its tokenizer), the data settings and the seed."""

    model: ModelArguments
    data: DataArguments
    seed: int
    trust_remote_code: bool


def parse_args(argv: list[str] | None = None) -> Args:
    """Parse config.yaml (or the file after --config), then the command line on top."""
    from trl import SFTConfig, TrlParser  # here: data.py starts without TRL

    args = sys.argv[1:] if argv is None else argv
    if "--config" not in args:
        args = ["--config", CONFIG_FILE, *args]
    parser = TrlParser(
        (
            ModelArguments,
            LoraArguments,
            DataArguments,
            RunArguments,
            ExportArguments,
            ServeArguments,
            SFTConfig,
        )
    )
    return Args(*parser.parse_args_and_config(args))


def parse_data_args(argv: list[str] | None = None) -> DataRun:
    """The model and data keys of config.yaml (and seed), then --key value; no TRL import.

    data.py starts in a fraction of a second this way, which makes a fresh cache instant. The
    other keys of config.yaml are train.py's; train.py rejects unknown ones.
    """
    args = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description="config.yaml values, overridden here")
    parser.add_argument("--config", default=CONFIG_FILE)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--trust_remote_code", type=_boolean)
    for group in (ModelArguments, DataArguments):
        for item in fields(group):
            parser.add_argument(f"--{item.name}", type=_flag_type(item.type))
    flags = vars(parser.parse_args(args))
    values = yaml.safe_load(Path(flags.pop("config")).read_text(encoding="utf-8")) or {}
    values.update({key: value for key, value in flags.items() if value is not None})
    model, data = (
        group(**{f.name: values[f.name] for f in fields(group) if f.name in values})
        for group in (ModelArguments, DataArguments)
    )
    return DataRun(model, data, values["seed"], values["trust_remote_code"])


def _flag_type(annotation: object):
    """The argparse converter for a field annotation (bool reads true/false)."""
    if isinstance(annotation, types.UnionType):
        annotation = next(arg for arg in annotation.__args__ if arg is not type(None))
    if annotation is bool:
        return _boolean
    return annotation


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
