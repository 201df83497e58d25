"""Save a standalone model: the LoRA adapter merged into the base model, the tokenizer
with this project's chat template, and a generation config that stops at the end of a turn.

Run: python export.py     (after train.py; writes exported/)
"""

import shutil
from pathlib import Path

from peft import PeftModel

from config import parse_args
from model import load_model, load_tokenizer, stop_token_ids


def main() -> None:
    args = parse_args()
    trust = args.trust_remote_code
    trained = Path(args.training.output_dir)
    if not (trained / "adapter_config.json").is_file():
        raise SystemExit(f"{trained}/ holds no trained model: run train.py first")

    tokenizer = load_tokenizer(args.model, trust)
    model = load_model(args.model, trust_remote_code=trust)
    model = PeftModel.from_pretrained(model, str(trained)).merge_and_unload()
    model.generation_config.eos_token_id = stop_token_ids(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id

    # Save beside the target, then swap it in: an interrupted export leaves no half model.
    target = Path(args.export.export_dir)
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    print(f"exported to {target}/ (stop tokens: {stop_token_ids(tokenizer)})")


if __name__ == "__main__":
    main()
