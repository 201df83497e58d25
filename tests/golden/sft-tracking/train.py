"""Supervised fine-tuning of ../tiny-llama with LoRA (TRL SFTTrainer).

Run: accelerate launch --config_file accelerate/single.yaml train.py [--max_steps 5 ...]
Needs data/processed/ from `python data.py`.
Resume: rerun the same command (auto_resume: newest complete checkpoint in output_dir).
"""

import hashlib
import json
from importlib import metadata
from pathlib import Path

from datasets import load_from_disk
from transformers import Trainer
from trl import SFTTrainer

from config import parse_args
from model import CHAT_TEMPLATE, load_model, load_tokenizer, lora_config


class PlainLossSFTTrainer(SFTTrainer):
    """SFTTrainer with transformers' own causal-LM loss.

    TRL's fused LM-head loss also computes entropy and accuracy each step; without a GPU
    kernel that is most of a step's time on the CPU (bench/train_bench.py measures it).
    """

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        # No cache: packed rows get their attention masks from the position ids.
        inputs["use_cache"] = False
        return Trainer.compute_loss(self, model, inputs, return_outputs, **kwargs)


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


def complete_checkpoints(output_dir: str) -> list[Path]:
    """Checkpoints whose trainer_state.json (the Trainer writes it last) is whole, oldest first."""
    found = []
    for folder in Path(output_dir).glob("checkpoint-*"):
        try:
            text = (folder / "trainer_state.json").read_text(encoding="utf-8")
            state = json.loads(text)
        except (OSError, ValueError):
            continue  # killed while saving: never resume from it
        if folder.name == f"checkpoint-{state.get('global_step')}":
            found.append(folder)
    return sorted(found, key=lambda folder: int(folder.name.split("-")[1]))


def checkpoint_to_resume(training, auto_resume: bool) -> str | None:
    """A path given with --resume_from_checkpoint, else (`last` or auto_resume) the newest
    complete checkpoint in output_dir, else None: a fresh start."""
    wanted = training.resume_from_checkpoint
    if wanted not in (None, "last"):
        return wanted
    complete = complete_checkpoints(training.output_dir)
    if complete and (wanted == "last" or auto_resume):
        print(f"resuming from {complete[-1]}")
        return str(complete[-1])
    if wanted == "last":
        folder = training.output_dir
        raise SystemExit(f"resume_from_checkpoint last: no checkpoint in {folder}/")
    return None


def record_run(args) -> None:
    """Write output_dir/lfc_run.json: the resolved settings, package versions, lock hash."""
    if args.training.process_index != 0:
        return
    settings = {
        group: vars(value) if group != "training" else value.to_dict()
        for group, value in vars(args).items()
    }
    packages = {}
    for line in Path("requirements.txt").read_text(encoding="utf-8").splitlines():
        name = line.split("==")[0].strip()
        if name and not name.startswith(("#", "-")):
            packages[name] = metadata.version(name)
    lock = hashlib.sha256(Path("lfc.lock.json").read_bytes()).hexdigest()
    record = {"lock_sha256": lock, "packages": packages, "settings": settings}
    output = Path(args.training.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=2, default=str) + "\n"
    (output / "lfc_run.json").write_text(text, encoding="utf-8")


def main() -> None:
    args = parse_args()
    training = args.training
    check_processed_data(args.data.processed_dir, args.data.cutoff_len)
    dataset = load_from_disk(f"{args.data.processed_dir}/dataset")

    tokenizer = load_tokenizer(args.model, args.trust_remote_code)
    model = load_model(args.model, trust_remote_code=args.trust_remote_code)

    trainer = PlainLossSFTTrainer(
        model=model,
        args=training,
        train_dataset=dataset["train"],
        processing_class=tokenizer,
        peft_config=lora_config(args.lora),
    )
    record_run(args)
    checkpoint = checkpoint_to_resume(training, args.run.auto_resume)
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(training.output_dir)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(training.output_dir)


if __name__ == "__main__":
    main()
