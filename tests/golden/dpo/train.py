"""Direct preference optimization of ../tiny-llama (sigmoid loss, beta 0.1; TRL DPOTrainer, LoRA).

Run: accelerate launch --config_file accelerate/single.yaml train.py [--max_steps 5 ...]
Needs data/processed/ from `python data.py` (tokenized prompts, chosen and rejected answers).
Reference model: the base model itself, with the LoRA adapter switched off.
Resume: add `--resume_from_checkpoint last` (or a checkpoint folder).
"""

import hashlib
import json
from pathlib import Path

from datasets import load_from_disk
from transformers.trainer_utils import get_last_checkpoint
from trl import DPOTrainer

from config import parse_args
from model import CHAT_TEMPLATE, load_model, load_tokenizer, lora_config


class PretokenizedDPOTrainer(DPOTrainer):
    """DPOTrainer on data.py's rows, which chat_template.jinja already rendered and tokenized."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset  # prompt_ids, chosen_ids, rejected_ids: what the collator takes


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
    model = load_model(args.model, trust_remote_code=args.trust_remote_code)

    trainer = PretokenizedDPOTrainer(
        model=model,
        args=training,
        train_dataset=dataset["train"],
        processing_class=tokenizer,
        peft_config=lora_config(args.lora),
    )
    trainer.train(resume_from_checkpoint=checkpoint_to_resume(training))
    trainer.save_model(training.output_dir)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(training.output_dir)


if __name__ == "__main__":
    main()
