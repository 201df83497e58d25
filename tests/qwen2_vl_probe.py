"""Run by a qwen2_vl project's own python (torchvision is there, not in lfc's test env).

`build MODEL_DIR LFC_SOURCE`: `lfc tiny-model --architecture qwen2_vl` from lfc's source tree.
`ids MODEL_DIR TEMPLATE MAX_PIXELS MIN_PIXELS` with a JSON request on stdin
({"messages": [...], "images": [paths], "generation_prompt": bool}): the token ids the tiny
model's own processor makes, with its pixel bounds set to the spec's and each image scaled
first (aspect kept) to within them, as LLaMA-Factory does. Prints them as JSON.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path


def _import_lfc(source: Path) -> None:
    """lfc from its source tree: the package folders of pyproject's package-dir."""
    for name, folder in (
        ("lfc", "compiler"),
        ("lfc.blueprints", "blueprints"),
        ("lfc.schemas", "schemas"),
    ):
        spec = importlib.util.spec_from_file_location(
            name, source / folder / "__init__.py", submodule_search_locations=[str(source / folder)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


def build(model_dir: str, source: str) -> None:
    _import_lfc(Path(source))
    from lfc.tiny_model import build_tiny_model

    build_tiny_model(Path(model_dir), architecture="qwen2_vl")


def ids(model_dir: str, template: str, max_pixels: str, min_pixels: str) -> None:
    from PIL import Image
    from transformers import AutoProcessor

    request = json.loads(sys.stdin.read())
    processor = AutoProcessor.from_pretrained(model_dir)
    high, low = int(max_pixels), int(min_pixels)
    processor.image_processor.size = {"shortest_edge": low, "longest_edge": high}
    images = []
    for path in request["images"]:
        image = Image.open(path).convert("RGB")
        pixels = image.width * image.height
        if pixels > high or pixels < low:
            scale = ((high if pixels > high else low) / pixels) ** 0.5
            image = image.resize((int(image.width * scale), int(image.height * scale)))
        images.append(image)
    text = processor.apply_chat_template(
        request["messages"],
        chat_template=Path(template).read_text(),
        add_generation_prompt=request["generation_prompt"],
        tokenize=False,
    )
    encoded = processor(text=[text], images=images or None, add_special_tokens=False)
    print(json.dumps({"text": text, "ids": list(map(int, encoded["input_ids"][0]))}))


if __name__ == "__main__":
    {"build": build, "ids": ids}[sys.argv[1]](*sys.argv[2:])
