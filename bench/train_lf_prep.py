"""Tokenize a data set the way `llamafactory-cli train` would, once, into `tokenized_path`.

Runs in LLaMA-Factory 0.9.5's virtualenv: its own `get_train_args`, `load_tokenizer`,
`get_template_and_fix_tokenizer` and `get_dataset` (the calls `run_sft` makes before loading the
model), with `tokenized_path` set, so the dataset (packed when asked) is saved to disk. The
timed training run then loads it from there, as lfc's train.py loads data.py's output: neither
contender's time to first step includes tokenizing.

    python bench/train_lf_prep.py --model M --dataset_dir D --dataset NAME --out T [--packing]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

STARTED = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset_dir", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--out", required=True, help="tokenized_path (must not exist)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--cutoff_len", type=int, default=512)
    parser.add_argument("--packing", action="store_true")
    parser.add_argument("--neat_packing", action="store_true")
    args = parser.parse_args()

    from train_probe import _stub_torchaudio

    _stub_torchaudio()
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    model_args, data_args, training_args, _, _ = get_train_args(
        {
            "model_name_or_path": args.model,
            "stage": "sft",
            "do_train": True,
            "finetuning_type": "lora",
            "dataset": args.dataset,
            "dataset_dir": args.dataset_dir,
            "template": "llama3",
            "cutoff_len": args.cutoff_len,
            "packing": args.packing or args.neat_packing,
            "neat_packing": args.neat_packing,
            "overwrite_cache": True,
            "tokenized_path": args.out,
            "output_dir": args.output_dir,
            "report_to": "none",
            "use_cpu": True,
        }
    )
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    module = get_dataset(
        template, model_args, data_args, training_args, stage="sft", **tokenizer_module
    )
    result = {"rows": len(module["train_dataset"]), "seconds": time.perf_counter() - STARTED}
    print("LF_PREP " + json.dumps(result))


if __name__ == "__main__":
    main()
