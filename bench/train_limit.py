"""The limit: a bare PyTorch loop over the same batches lfc's train.py trains on.

Reads a compiled lfc project's data/processed/dataset (the same tokenization, labels and
cutoff), drops rows without a supervised token (as TRL does), then builds every batch before the
first step, untimed by the loop (but inside the process's time to first step):

- padded: 8 rows in a seeded random order, right-padded to the longest, attention mask, labels
  -100 on padding (TRL's collator without packing);
- padfree: TRL's own `pack_dataset(..., strategy="bfd")` bins, 8 per batch, flattened into one
  row with position ids that restart at each example and no attention mask (what TRL's
  padding-free collator hands the model; transformers then builds a block-diagonal mask over
  the whole flattened row);
- rows: the same bins as 8 rows of at most cutoff_len, right-padded, position ids restarting at
  each example (the padding is one more "example" with label -100), no attention mask:
  transformers builds a block-diagonal mask per row. Not what lfc runs; a diagnostic of the
  packed layout.

Each step is model(**batch) -> loss.backward() -> clip_grad_norm_(1.0) -> AdamW.step() ->
zero_grad(), the same model (float32, sdpa), LoRA via peft (or every weight), and AdamW
(fused, the Trainer's default `adamw_torch_fused`). Step times go to $TRAIN_PROBE_OUT like the
probe's.

    python bench/train_limit.py --project P --model M --adapter lora --layout padded --steps 30
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_probe import count_tokens, emit  # noqa: E402

IGNORE_INDEX = -100


def _padded(rows: list[dict], pad_id: int):
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        ids[i, :n] = torch.tensor(row["input_ids"])
        labels[i, :n] = torch.tensor(row["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _positions(seq_lengths: list[int]) -> list[int]:
    return [p for n in seq_lengths for p in range(n)]


def _padfree(rows: list[dict], pad_id: int):
    import torch

    ids = torch.tensor([t for r in rows for t in r["input_ids"]])[None]
    labels = torch.tensor([t for r in rows for t in r["labels"]])[None]
    positions = torch.tensor([p for r in rows for p in _positions(r["seq_lengths"])])[None]
    labels[positions == 0] = IGNORE_INDEX  # as TRL's collator: no loss across example boundaries
    return {"input_ids": ids, "position_ids": positions, "labels": labels}


def _rows(rows: list[dict], pad_id: int):
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        ids[i, :n] = torch.tensor(row["input_ids"])
        labels[i, :n] = torch.tensor(row["labels"])
        positions[i, :n] = torch.tensor(_positions(row["seq_lengths"]))
        positions[i, n:] = torch.arange(width - n)
    labels[positions == 0] = IGNORE_INDEX
    return {"input_ids": ids, "position_ids": positions, "labels": labels}


LAYOUTS = {"padded": _padded, "padfree": _padfree, "rows": _rows}


def build_batches(dataset, layout: str, steps: int, batch: int, cutoff: int, seed: int, pad: int):
    import random

    dataset = dataset.filter(lambda row: any(t != IGNORE_INDEX for t in row["labels"]))
    if layout != "padded":
        from trl import pack_dataset

        dataset = pack_dataset(dataset.select_columns(["input_ids", "labels"]), cutoff, "bfd")
    rows = dataset.to_list()
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    if len(order) < steps * batch:
        raise SystemExit(f"{len(order)} rows: too few for {steps} steps of {batch}")
    make = LAYOUTS[layout]
    return [make([rows[j] for j in order[i * batch : (i + 1) * batch]], pad) for i in range(steps)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True, help="a compiled lfc project")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--adapter", choices=("lora", "full"), required=True)
    parser.add_argument("--layout", choices=sorted(LAYOUTS), required=True)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--cutoff", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    import torch
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(args.seed)
    pad_id = AutoTokenizer.from_pretrained(args.model).pad_token_id
    dataset = load_from_disk(str(args.project / "data" / "processed" / "dataset"))["train"]
    batches = build_batches(
        dataset, args.layout, args.steps, args.batch, args.cutoff, args.seed, pad_id
    )
    model = AutoModelForCausalLM.from_pretrained(
        args.model, dtype=torch.float32, attn_implementation="sdpa"
    )
    if args.adapter == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
        )
        model = get_peft_model(model, config)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0, fused=True)
    emit({"event": "train_begin", "t": time.time(), "pad_id": pad_id})
    for step, batch in enumerate(batches, start=1):
        counts = count_tokens(batch, pad_id)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        emit({"event": "step", "step": step, "t": time.time(), **counts, "loss": loss.item()})


if __name__ == "__main__":
    main()
