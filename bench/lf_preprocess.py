"""LLaMA-Factory 0.9.5's own SFT preprocessing, and nothing after it. Runs in LF's virtualenv.

The same calls as `llamafactory.train.sft.workflow.run_sft` up to the dataset: parse the
training arguments, `load_tokenizer`, `get_template_and_fix_tokenizer`, `get_dataset`, which
(with `tokenized_path` set) writes the tokenized dataset to disk like data.py does. The model is
never loaded and nothing trains. Prints one JSON line of timings.

    python bench/lf_preprocess.py --model M --dataset_dir D --dataset NAME --workers 2 --out T

LLaMA-Factory imports torchaudio at module level (for its audio plugin); only CUDA builds of
torchaudio are on PyPI and they fail to load without CUDA, so the benchmark uninstalls it and
this script puts an empty stand-in module in its place. Text preprocessing never touches it.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import json
import sys
import time
import types

STARTED = time.perf_counter()


def _stub_torchaudio() -> None:
    try:
        import torchaudio  # noqa: F401
    except (ImportError, OSError):
        module = types.ModuleType("torchaudio")
        module.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
        sys.modules["torchaudio"] = module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset_dir", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", required=True, help="tokenized_path (must not exist)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--cutoff_len", type=int, default=4096)
    parser.add_argument("--template", default="llama3")
    args = parser.parse_args()

    _stub_torchaudio()
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    imported = time.perf_counter()
    model_args, data_args, training_args, _, _ = get_train_args(
        {
            "model_name_or_path": args.model,
            "stage": "sft",
            "do_train": True,
            "finetuning_type": "lora",
            "dataset": args.dataset,
            "dataset_dir": args.dataset_dir,
            "template": args.template,
            "cutoff_len": args.cutoff_len,
            "preprocessing_num_workers": args.workers,
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
    done = time.perf_counter()
    result = {
        "samples": len(module["train_dataset"]),
        "import_s": imported - STARTED,
        "preprocess_s": done - imported,
        "total_s": done - STARTED,
    }
    print("LF_RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
