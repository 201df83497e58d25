"""Save a standalone model: the LoRA adapter(s) merged into the base model, the tokenizer
with this project's chat template, and a generation config that stops at the end of a turn.

Run: python export.py     (after train.py; writes exported/)
     python export.py --export_dtype bfloat16 --export_max_shard_size 2GB
"""

import shutil
from pathlib import Path

import torch
from peft import PeftModel

from config import parse_args
from model import load_model, load_tokenizer, stop_token_ids


def save_atomically(target: Path, save) -> None:
    """Save beside the target, then swap it in: an interrupted export leaves no half model."""
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    save(staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def main() -> None:
    args = parse_args()
    trust = args.trust_remote_code
    trained = Path(args.training.output_dir)
    if not (trained / "adapter_config.json").is_file():
        raise SystemExit(f"{trained}/ holds no trained model: run train.py first")

    tokenizer = load_tokenizer(args.model, trust)
    adapters = [trained, *map(Path, args.export.export_extra_adapters)]
    for adapter in adapters:
        if not (adapter / "adapter_config.json").is_file():
            raise SystemExit(f"{adapter}/ holds no adapter_config.json")
    model = load_model(args.model, trust_remote_code=trust)
    for adapter in adapters:
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        print(f"merged {adapter}/")
    if args.export.export_dtype != "auto":
        model = model.to(getattr(torch, args.export.export_dtype))
    model.generation_config.eos_token_id = stop_token_ids(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id

    def save(folder: Path) -> None:
        model.save_pretrained(folder, max_shard_size=args.export.export_max_shard_size)
        tokenizer.save_pretrained(folder)

    target = Path(args.export.export_dir)
    save_atomically(target, save)
    print(f"exported to {target}/ (stop tokens: {stop_token_ids(tokenizer)})")


if __name__ == "__main__":
    main()
