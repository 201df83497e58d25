"""Training and serving tokenize a conversation identically.

Run: python tests/test_chat_template.py   (from the project folder; pytest runs it too)

data.py renders chat_template.jinja itself and tokenizes in batches; chat.py, the exported
tokenizer and vLLM use the tokenizer's own apply_chat_template. Both must give the same ids,
and the exported tokenizer must carry the same template.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers import AutoTokenizer

import data
from config import parse_args
from model import CHAT_TEMPLATE, load_tokenizer

CONVERSATION = [
    {"role": "system", "content": "You answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris is the capital of France."},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome."},
]


def training_ids(tokenizer) -> list[int]:
    """The ids data.py produces for CONVERSATION."""
    template = data.compile_template(CHAT_TEMPLATE)
    example = {"messages": CONVERSATION}
    text, _ = data.render(template, example, data.template_context(tokenizer))
    return tokenizer([text], add_special_tokens=False)["input_ids"][0]


def test_training_and_serving_tokenize_alike() -> None:
    args = parse_args([])
    tokenizer = load_tokenizer(args.model, args.trust_remote_code)
    serving = tokenizer.apply_chat_template(CONVERSATION, return_dict=True)
    assert training_ids(tokenizer) == serving["input_ids"]


def test_exported_tokenizer_carries_the_template() -> None:
    export_dir = Path(parse_args([]).export.export_dir)
    if not export_dir.is_dir():
        print(f"{export_dir}/ not found: run export.py to check the exported tokenizer")
        return
    exported = AutoTokenizer.from_pretrained(export_dir)
    assert exported.chat_template == CHAT_TEMPLATE
    serving = exported.apply_chat_template(CONVERSATION, return_dict=True)
    assert training_ids(exported) == serving["input_ids"]


if __name__ == "__main__":
    test_training_and_serving_tokenize_alike()
    test_exported_tokenizer_carries_the_template()
    print("chat template parity: ok")
