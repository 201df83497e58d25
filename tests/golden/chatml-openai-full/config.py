"""Arguments of this project: config.yaml first, then the command line.

Imported by data.py, train.py, chat.py and export.py. Every script reads the same config.yaml,
so `python data.py --cutoff_len 512` or `accelerate launch train.py --learning_rate 1e-5`
overrides one value without editing the file. Unknown keys are errors.
"""

import sys
from dataclasses import dataclass, field

from trl import SFTConfig, TrlParser

CONFIG_FILE = "config.yaml"


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "Hub id or local model folder."})
    model_revision: str | None = field(default=None, metadata={"help": "Hub revision."})
    dtype: str = field(default="auto", metadata={"help": "auto, float32, bfloat16..."})
    attn_implementation: str = field(default="sdpa", metadata={"help": "or eager"})


@dataclass
class DataArguments:
    cutoff_len: int = field(default=1024, metadata={"help": "Max tokens per example."})
    val_size: float = field(default=0.0, metadata={"help": "Fraction held out."})
    processed_dir: str = field(
        default="data/processed", metadata={"help": "Where data.py saves."}
    )
    skip_malformed: bool = field(
        default=False, metadata={"help": "Skip (and list) malformed rows, not fail."}
    )


@dataclass
class ExportArguments:
    export_dir: str = field(
        default="exported", metadata={"help": "Where export.py saves."}
    )
    prompt: str | None = field(default=None, metadata={"help": "chat.py: one prompt."})
    max_new_tokens: int = field(default=128, metadata={"help": "chat.py: new tokens."})
    temperature: float = field(default=0.0, metadata={"help": "chat.py: 0 is greedy."})


@dataclass
class Args:
    """Everything one run needs, grouped as config.yaml groups it."""

    model: ModelArguments
    data: DataArguments
    export: ExportArguments
    training: SFTConfig


def parse_args(argv: list[str] | None = None) -> Args:
    """Parse config.yaml (or the file after --config), then the command line on top."""
    args = sys.argv[1:] if argv is None else argv
    if "--config" not in args:
        args = ["--config", CONFIG_FILE, *args]
    parser = TrlParser(
        (
            ModelArguments,
            DataArguments,
            ExportArguments,
            SFTConfig,
        )
    )
    return Args(*parser.parse_args_and_config(args))
