"""Chat with the trained model: one prompt, or an interactive session.

Run: python chat.py --prompt "Hello"     (one answer, then exit)
     python chat.py                      (interactive; an empty line or Ctrl-D quits)

Uses exported/ when `python export.py` has run, otherwise the base model
plus the adapter in the training output_dir.
"""

import torch

from config import parse_args
from model import load_for_inference, stop_token_ids


def answer(
    model,
    tokenizer,
    messages: list[dict[str, str]],
    max_new_tokens: int,
    temperature: float,
) -> str:
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    sampling = {"do_sample": False}
    if temperature > 0:
        sampling = {"do_sample": True, "temperature": temperature}
    with torch.inference_mode():
        output = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            eos_token_id=stop_token_ids(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            **sampling,
        )
    new_tokens = output[0, inputs["input_ids"].shape[1] :]
    return tokenizer.decode(new_tokens, skip_special_tokens=True)


def main() -> None:
    args = parse_args()
    model, tokenizer, origin = load_for_inference(args)
    print(f"[chat] model: {origin}")

    settings = (args.export.chat_max_new_tokens, args.export.chat_temperature)
    if args.export.prompt is not None:
        messages = [{"role": "user", "content": args.export.prompt}]
        print(answer(model, tokenizer, messages, *settings))
        return
    messages: list[dict[str, str]] = []
    while True:
        try:
            prompt = input("user> ")
        except EOFError:
            break
        if not prompt.strip():
            break
        messages.append({"role": "user", "content": prompt})
        reply = answer(model, tokenizer, messages, *settings)
        messages.append({"role": "assistant", "content": reply})
        print(f"assistant> {reply}")


if __name__ == "__main__":
    main()
