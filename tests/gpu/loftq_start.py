"""LoftQ's starting point, checked in a compiled LoftQ project on a CUDA GPU.

run_gpu_checks.py runs this inside the project folder with the project's venv, before
train.py. It builds what train.py builds, with the project's own config.py and model.py
functions: the 4-bit base with its LoRA adapters, then fit_loftq. It checks that LoftQ's
adapter is not the default one (B is not zero) and that the 4-bit base + adapter is closer
to the full-precision model than the 4-bit base alone, two ways computed here: each target
layer's weight error (against the weights in model.safetensors) and the logits' error.
Prints one line and exits 1 when a check fails. (peft's LoftQ computes on CUDA only, so
this cannot run in the CPU test suite.)
"""

from __future__ import annotations

import sys
from pathlib import Path

import bitsandbytes as bnb
import torch
from config import parse_args
from model import fit_loftq, load_model, lora_config, quantization_config
from peft import get_peft_model
from peft.tuners.lora import Linear4bit
from safetensors import safe_open

PREFIX = "base_model.model."


def weight_errors(model, weights: Path) -> tuple[float, float]:
    """Summed squared error of (4-bit weight) and of (4-bit weight + scale x B x A) against
    the full-precision weights, over the LoRA layers."""
    alone = with_adapter = 0.0
    with safe_open(str(weights), framework="pt", device="cuda") as tensors:
        for name, module in model.named_modules():
            if not isinstance(module, Linear4bit):
                continue
            full = tensors.get_tensor(name[len(PREFIX) :] + ".weight").float()
            base = module.base_layer.weight
            quantized = bnb.functional.dequantize_4bit(base.data, base.quant_state).float()
            update = module.lora_B["default"].weight @ module.lora_A["default"].weight
            update = module.scaling["default"] * update.float()
            alone += (full - quantized).pow(2).sum().item()
            with_adapter += (full - quantized - update).pow(2).sum().item()
    return alone, with_adapter


def main() -> int:
    args = parse_args([])
    torch.manual_seed(0)
    full = load_model(args.model).to("cuda").eval()
    quantized = load_model(args.model, quantization=quantization_config(args.quantization))
    model = get_peft_model(quantized, lora_config(args.lora)).eval()
    fit_loftq(model, args.model)

    b_zero = [
        name
        for name, module in model.named_modules()
        if isinstance(module, Linear4bit) and not module.lora_B["default"].weight.any()
    ]
    weights = Path(args.model.model_name_or_path) / "model.safetensors"
    alone, with_adapter = weight_errors(model, weights)
    ids = torch.randint(0, full.config.vocab_size, (2, 32), device="cuda")
    with torch.no_grad():
        reference = full(input_ids=ids).logits.float()
        loftq = (model(input_ids=ids).logits.float() - reference).norm().item()
        with model.disable_adapter():
            base = (model(input_ids=ids).logits.float() - reference).norm().item()
    print(
        f"layers with B = 0: {len(b_zero)}; weight error^2 {alone:.4g} -> {with_adapter:.4g}; "
        f"logit error {base:.4g} -> {loftq:.4g}"
    )
    return 0 if not b_zero and with_adapter < alone and loftq < base else 1


if __name__ == "__main__":
    sys.exit(main())
