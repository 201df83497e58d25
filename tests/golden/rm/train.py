"""Reward model of ../tiny-llama: a scalar head trained to score chosen answers above rejected ones (TRL RewardTrainer, every parameter trained).

Run: accelerate launch --config_file accelerate/single.yaml train.py [--max_steps 5 ...]
Needs data/processed/ from `python data.py` (tokenized chosen / rejected conversations).
The saved model in outputs/ is what a ppo project names as `reward_model`.
Resume: add `--resume_from_checkpoint last` (or a checkpoint folder).
"""

import hashlib
import json
from pathlib import Path

from datasets import load_from_disk
from transformers.trainer_utils import get_last_checkpoint
from trl import RewardTrainer

from config import parse_args
from model import CHAT_TEMPLATE, load_reward_model, load_tokenizer


def check_processed_data(processed_dir: str, cutoff_len: int) -> None:
    """Stop early if data.py has not run, or ran with another cutoff_len or template."""
    manifest_path = Path(processed_dir) / "lfc_data.json"
    if not manifest_path.is_file():
        raise SystemExit(f"{processed_dir}/ is missing: run `python data.py` first")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    template_sha = hashlib.sha256(CHAT_TEMPLATE.encode("utf-8")).hexdigest()
    made_with = (manifest["cutoff_len"], manifest["chat_template_sha256"])
    if made_with != (cutoff_len, template_sha):
        raise SystemExit(
            f"{processed_dir}/ was made with other settings: run `python data.py` again"
        )


def checkpoint_to_resume(training) -> str | None:
    """`--resume_from_checkpoint last`: the newest checkpoint in output_dir; a path: that."""
    wanted = training.resume_from_checkpoint
    if wanted != "last":
        return wanted
    checkpoint = get_last_checkpoint(training.output_dir)
    if checkpoint is None:
        folder = training.output_dir
        raise SystemExit(f"resume_from_checkpoint last: no checkpoint in {folder}/")
    return checkpoint


def main() -> None:
    args = parse_args()
    training = args.training
    check_processed_data(args.data.processed_dir, args.data.cutoff_len)
    dataset = load_from_disk(f"{args.data.processed_dir}/dataset")

    tokenizer = load_tokenizer(args.model, args.trust_remote_code)
    model = load_reward_model(args.model, tokenizer, args.trust_remote_code)

    trainer = RewardTrainer(
        model=model,
        args=training,
        train_dataset=dataset["train"],
        processing_class=tokenizer,
    )
    trainer.train(resume_from_checkpoint=checkpoint_to_resume(training))
    trainer.save_model(training.output_dir)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(training.output_dir)


if __name__ == "__main__":
    main()
