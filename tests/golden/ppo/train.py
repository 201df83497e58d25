"""PPO (RLHF) of ../tiny-llama against the reward model ../rm-run/outputs (TRL 1.12 PPOTrainer, every parameter trained).

Run: accelerate launch --config_file accelerate/single.yaml train.py [--total_episodes 16 ...]
Needs data/processed/ from `python data.py` (tokenized prompts). The policy samples
responses, the reward model scores them, a value model (initialised from the reward model)
estimates returns, and a KL penalty (kl_coef) keeps the policy near the reference.
Reference model: a frozen copy of the base model.
PPOTrainer cannot resume from a checkpoint: rerun from the start.
"""

import hashlib
import json
from importlib import metadata
from pathlib import Path

from datasets import load_from_disk
from trl.experimental.ppo import PPOTrainer

from config import parse_args
from model import CHAT_TEMPLATE, load_model, load_reward_model, load_tokenizer


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
    trust = args.trust_remote_code
    model = load_model(args.model, trust_remote_code=trust)
    reward_path = training.reward_model_path

    trainer = PPOTrainer(
        args=training,
        processing_class=tokenizer,
        model=model,
        ref_model=load_model(args.model, trust_remote_code=trust),
        reward_model=load_reward_model(args.model, tokenizer, trust, path=reward_path),
        value_model=load_reward_model(args.model, tokenizer, trust, path=reward_path),
        train_dataset=dataset["train"],
    )
    record_run(args)
    trainer.train()
    trainer.save_model(training.output_dir)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(training.output_dir)


if __name__ == "__main__":
    main()
