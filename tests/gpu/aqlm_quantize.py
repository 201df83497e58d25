"""Write an AQLM-quantized copy of a model, for the pre-quantized base checks (run_gpu_checks.py
runs it with the project venv's python; tests/test_prequantized_aqlm.py imports it). SOURCE TARGET.

The aqlm package holds AQLM's inference layers, not its calibration (beam search over a
calibration set), so the codes here are a plain fit: every decoder linear becomes aqlm's
QuantizedLinear with one codebook of 16 codewords over groups of 8 inputs (4 bits a group,
fitted by a few k-means steps on the group vectors, one scale per output row). That is a real
AQLM layer and checkpoint, only a worse fit than AQLM's own. The config names the unquantized
weights the way AQLM's checkpoints do (`lm_head.weight`), which is what lfc's model.py must
work around for transformers 5.24.
"""

from __future__ import annotations

import sys

import torch
from aqlm import QuantizedLinear
from transformers import AqlmConfig, AutoModelForCausalLM, AutoTokenizer

GROUP, CODEWORDS, STEPS = 8, 16, 5


def fit_layer(linear: torch.nn.Linear) -> QuantizedLinear:
    """One codebook of CODEWORDS codewords for the GROUP-wide input groups of each row."""
    weight = linear.weight.detach().float()
    rows = weight.reshape(linear.out_features, -1, GROUP)
    scales = rows.flatten(1).norm(dim=1).clamp_min(1e-8) / rows.shape[1] ** 0.5
    groups = (rows / scales[:, None, None]).reshape(-1, GROUP)
    generator = torch.Generator().manual_seed(0)
    codebook = groups[torch.randperm(len(groups), generator=generator)[:CODEWORDS]].clone()
    for _ in range(STEPS):
        codes = torch.cdist(groups, codebook).argmin(1)
        for word in range(CODEWORDS):
            members = groups[codes == word]
            if len(members):
                codebook[word] = members.mean(0)
    codes = torch.cdist(groups, codebook).argmin(1)
    bits = CODEWORDS.bit_length() - 1
    layer = QuantizedLinear(
        linear.in_features, linear.out_features, GROUP, 1, 1, bits, bias=linear.bias is not None
    )
    layer.codebooks.data = codebook.reshape(1, CODEWORDS, 1, GROUP).to(weight.dtype)
    layer.codes.data = codes.reshape(linear.out_features, -1, 1).to(layer.codes.dtype)
    layer.scales.data = scales.reshape(-1, 1, 1, 1)
    if linear.bias is not None:
        layer.bias.data = linear.bias.detach().clone()
    return layer


def quantize(source: str, target: str) -> None:
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    for name, module in list(model.named_modules()):
        if isinstance(module, torch.nn.Linear) and name != "lm_head":
            model.set_submodule(name, fit_layer(module))
    config = AqlmConfig(
        in_group_size=GROUP,
        out_group_size=1,
        num_codebooks=1,
        nbits_per_codebook=CODEWORDS.bit_length() - 1,
        linear_weights_not_to_quantize=["model.embed_tokens.weight", "lm_head.weight"],
    )
    model.config.quantization_config = config.to_dict()
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    print(f"quantized {source} -> {target}: AQLM 1x{CODEWORDS} codebook, groups of {GROUP}")


if __name__ == "__main__":
    quantize(*sys.argv[1:])
