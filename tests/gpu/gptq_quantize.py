"""Quantize the tiny model to 4-bit GPTQ with gptqmodel (the project venv's pin), for the
pre-quantized base check of run_gpu_checks.py. Run with the venv's python: SOURCE TARGET.

Calibration: the example Alpaca rows (instruction + output), which gptqmodel 7.6.0's
quantize() takes as plain strings with a tokenizer; rows of at most
`calibration_data_min_length` tokens are dropped, so the bound is set below the shortest.
group_size 32 divides the tiny model's linear widths (64 and 128).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gptqmodel import GPTQModel, QuantizeConfig
from transformers import AutoTokenizer

EXAMPLE_DATA = Path(__file__).resolve().parents[2] / "examples" / "data" / "alpaca_en_demo.json"


def main(source: str, target: str) -> None:
    rows = json.loads(EXAMPLE_DATA.read_text(encoding="utf-8"))
    texts = [f"{row['instruction']}\n{row['output']}" for row in rows[:32]]
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = GPTQModel.load(source, QuantizeConfig(bits=4, group_size=32))
    model.quantize(texts, tokenizer=tokenizer, calibration_data_min_length=4)
    model.save(target)
    tokenizer.save_pretrained(target)
    saved = json.loads((Path(target) / "config.json").read_text()).get("quantization_config")
    if not saved:
        raise SystemExit(f"{target}/config.json has no quantization_config")
    print(f"quantized {source} -> {target}: {saved.get('quant_method')}, {saved.get('bits')} bits")


if __name__ == "__main__":
    main(*sys.argv[1:])
