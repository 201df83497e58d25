"""Pre-quantized formats beyond GPTQ/AWQ, checked against the installed transformers 5.24 and
peft 0.21.2: why lfc refuses `model.prequantized: hqq | eetq`, and why its AQLM projects name
the unquantized modules for transformers.

HQQ's quantizer never builds HQQ layers, and peft wraps EETQ layers only with the `eetq`
package (not on PyPI): refused (schemas/spec.py UNSUPPORTED_PREQUANTIZED, corpus 350, 351).
AQLM checkpoints name their unquantized weights (`lm_head.weight`), which transformers 5.24
matches against module names: loaded as they are, lm_head becomes an AQLM layer with no codes,
so the generated model.py strips `.weight` (tests/test_prequantized_aqlm.py trains on one).
These tests fail when a library fixes its part, so the refusal or the workaround is revisited.
The checks that need hqq or aqlm skip without them (hqq is not an lfc test dependency;
`pip install hqq==0.2.8.post1` runs its check).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from lfc.schemas.spec import UNSUPPORTED_PREQUANTIZED, Spec


def _tiny_llama() -> LlamaForCausalLM:
    """One decoder layer, hidden size 32: every linear width divides the group sizes below."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    return LlamaForCausalLM(config).eval()


def _decoder_linears(model: torch.nn.Module) -> list[tuple[torch.nn.Module, str]]:
    """(parent, attribute) of each linear layer inside the decoder blocks (not lm_head)."""
    found = []
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            found += [(parent, n) for n, c in parent.named_children() if type(c) is torch.nn.Linear]
    return found


@pytest.mark.parametrize("method", sorted(UNSUPPORTED_PREQUANTIZED))
def test_each_unsupported_format_is_refused_at_model_prequantized(method: str) -> None:
    spec = {
        "lfc": 1,
        "model": {"name_or_path": "m", "prequantized": method},
        "template": "llama3",
        "data": {"datasets": [{"path": "d.json", "format": "alpaca"}]},
        "serve": {"lora_adapter": True},
        "pins": {"target": "cuda13.0"},
    }
    with pytest.raises(ValueError, match=re.escape(UNSUPPORTED_PREQUANTIZED[method])):
        Spec.model_validate(spec)


def test_transformers_hqq_quantizer_has_no_way_to_build_hqq_layers() -> None:
    """HqqHfQuantizer keeps the base class's get_quantize_ops (which raises) and has no load
    operation that would turn a saved HQQ state dict into HQQLinear layers."""
    from transformers.quantizers.base import HfQuantizer
    from transformers.quantizers.quantizer_hqq import HqqHfQuantizer

    assert HqqHfQuantizer.get_quantize_ops is HfQuantizer.get_quantize_ops
    assert HqqHfQuantizer.get_load_operations is HfQuantizer.get_load_operations
    assert "create_quantized_param" not in vars(HqqHfQuantizer)


def test_hqq_model_does_not_quantize_on_load_nor_reload(tmp_path: Path) -> None:
    """With hqq installed: HqqConfig on load raises; a model of HQQLinear layers saved by
    transformers loads back as plain Linear layers (the W_q, scale, zero tensors unexpected,
    the weights missing, so newly initialized): not the quantized model."""
    pytest.importorskip("hqq")
    from hqq.core.quantize import BaseQuantizeConfig, HQQLinear
    from transformers import HqqConfig

    model = _tiny_llama()
    model.save_pretrained(tmp_path / "plain")
    with pytest.raises(NotImplementedError, match="HQQ is not available yet"):
        AutoModelForCausalLM.from_pretrained(
            tmp_path / "plain", quantization_config=HqqConfig(nbits=4, group_size=16)
        )
    settings = BaseQuantizeConfig(nbits=4, group_size=16)
    for parent, name in _decoder_linears(model):
        linear = getattr(parent, name)
        quantized = HQQLinear(linear, settings, compute_dtype=torch.float32, device="cpu")
        setattr(parent, name, quantized)
    model.config.quantization_config = HqqConfig(nbits=4, group_size=16).to_dict()
    ids = torch.tensor([[3, 4, 5, 6]])
    expected = model(ids).logits
    model.save_pretrained(tmp_path / "hqq")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "hqq").eval()
    q_proj = reloaded.model.layers[0].self_attn.q_proj
    assert type(q_proj) is torch.nn.Linear and not isinstance(q_proj, HQQLinear)
    assert not torch.allclose(reloaded(ids).logits, expected, atol=1e-3)


def test_peft_cannot_wrap_eetq_layers_without_the_eetq_package() -> None:
    """transformers 5.24's EetqLinear is what an EETQ model's linears become; peft 0.21.2's
    dispatch_eetq takes it only when `eetq` imports, and no other dispatcher does."""
    from transformers.integrations.eetq import EetqLinear

    assert importlib.util.find_spec("eetq") is None  # not on PyPI (tests/fixtures/cuda/README.md)

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = EetqLinear(16, 16)

    with pytest.raises(ValueError, match=r"Target module EetqLinear\(\) is not supported"):
        inject_adapter_in_model(LoraConfig(r=4, target_modules=["proj"]), Block())


def test_transformers_matches_aqlm_exclusions_against_module_names() -> None:
    """AqlmHfQuantizer passes linear_weights_not_to_quantize (weight names, 'lm_head.weight')
    to replace_with_aqlm_linear, which keeps a module only if should_convert_module says so for
    its module name: 'lm_head.weight' does not exclude the module 'lm_head'."""
    import inspect

    from transformers.integrations import aqlm
    from transformers.quantizers.quantizers_utils import should_convert_module

    assert "should_convert_module(module_name, modules_to_not_convert)" in (
        inspect.getsource(aqlm.replace_with_aqlm_linear)
    )
    assert should_convert_module("lm_head", ["model.embed_tokens.weight", "lm_head.weight"])
    assert not should_convert_module("lm_head", ["lm_head"])


def test_aqlm_checkpoint_loads_with_an_uninitialized_lm_head(tmp_path: Path) -> None:
    """With aqlm installed: a checkpoint of AQLM layers (codes fitted here by nearest codeword,
    not AQLM's calibration) whose config excludes 'lm_head.weight', as AQLM's own checkpoints
    do, loads with lm_head made an AQLM layer the checkpoint has no codes for; excluding
    'lm_head' (a module name) loads it right, and peft 0.21.2 then trains LoRA on its layers."""
    pytest.importorskip("aqlm")
    from aqlm import QuantizedLinear
    from transformers import AqlmConfig

    model = _tiny_llama()
    for parent, name in _decoder_linears(model):
        linear = getattr(parent, name)
        layer = QuantizedLinear(linear.in_features, linear.out_features, 8, 1, 1, 4, bias=False)
        groups = linear.weight.data.reshape(-1, 8)
        codebook = groups[:16].clone()
        layer.codebooks.data = codebook.reshape(1, 16, 1, 8)
        codes = torch.cdist(groups, codebook).argmin(1)
        layer.codes.data = codes.reshape(linear.out_features, -1, 1).to(layer.codes.dtype)
        layer.scales.data = torch.ones(linear.out_features, 1, 1, 1)
        setattr(parent, name, layer)
    ids = torch.tensor([[3, 4, 5, 6]])
    expected = model(ids).logits
    for exclude, right in ((["lm_head.weight"], False), (["lm_head"], True)):
        settings = {"in_group_size": 8, "nbits_per_codebook": 4}
        config = AqlmConfig(**settings, linear_weights_not_to_quantize=exclude)
        model.config.quantization_config = config.to_dict()
        folder = tmp_path / exclude[0]
        model.save_pretrained(folder)
        reloaded = AutoModelForCausalLM.from_pretrained(folder).eval()
        assert isinstance(reloaded.lm_head, QuantizedLinear) is not right
        if right:
            assert torch.allclose(reloaded(ids).logits, expected, atol=1e-5)
    adapted = inject_adapter_in_model(LoraConfig(r=4, target_modules=["q_proj"]), reloaded)
    loss = adapted(ids, labels=ids).loss
    loss.backward()
    q_proj = adapted.model.layers[0].self_attn.q_proj
    assert type(q_proj).__name__ == "AqlmLoraLinear" and torch.isfinite(loss)
    assert q_proj.lora_A["default"].weight.grad is not None


def test_peft_lora_on_aqlm_8bit_codebooks_cannot_train_on_the_cpu() -> None:
    """With aqlm and numba installed: aqlm 1.1.7 multiplies 8-bit codebooks on the CPU with its
    numba kernel, whose output is a view (a reshape inside a custom autograd Function), and
    peft 0.21.2's AqlmLoraLinear adds LoRA's output to it in place: autograd refuses."""
    pytest.importorskip("aqlm")
    pytest.importorskip("numba")
    from aqlm import QuantizedLinear
    from aqlm.inference_kernels import get_forward_pass_kernel

    layer = QuantizedLinear(16, 16, 8, 1, 1, 8, bias=False)
    layer.codebooks.data = torch.randn(1, 256, 1, 8)
    layer.codes.data = torch.randint(-128, 128, (16, 2, 1), dtype=torch.int8)
    layer.scales.data = torch.ones(16, 1, 1, 1)
    assert get_forward_pass_kernel(layer.codebooks, True).__name__ == "numba_gemm_lut"

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = layer

    block = inject_adapter_in_model(LoraConfig(r=4, target_modules=["proj"]), Block())
    with torch.no_grad():
        assert torch.isfinite(block.proj(torch.randn(2, 3, 16))).all()  # inference works
    with pytest.raises(RuntimeError, match="is a view and is being modified inplace"):
        block.proj(torch.randn(2, 3, 16, requires_grad=True))


def test_peft_all_linear_finds_no_quantized_layer_that_is_not_a_torch_linear() -> None:
    """peft 0.21.2 resolves all-linear to torch Linear (and Conv1D) modules only. gptqmodel
    7.6.0's quantized layers derive from its BaseQuantLinear(nn.Module) (read in its source) and
    aqlm's QuantizedLinear from nn.Module, so on those models it finds nothing: lfc refuses
    all-linear with a pre-quantized base. Shown with transformers' EetqLinear, another such
    module (constructed on the CPU; its kernels load only when a model is quantized)."""
    from peft import get_peft_model
    from peft.utils.error import NoMatchingPeftModuleError
    from transformers.integrations.eetq import EetqLinear

    model = _tiny_llama()
    for parent, name in _decoder_linears(model):
        linear = getattr(parent, name)
        setattr(parent, name, EetqLinear(linear.in_features, linear.out_features))
    with pytest.raises(NoMatchingPeftModuleError, match="No `target_modules` passed"):
        get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))
