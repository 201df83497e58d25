"""Run by a qwen2_vl project's own python (torchvision is there, not in lfc's test env).

`build MODEL_DIR LFC_SOURCE [ARCHITECTURE]`: `lfc tiny-model --architecture qwen2_vl` (or
qwen2_5_vl) from lfc's source tree.
`ids MODEL_DIR TEMPLATE MAX_PIXELS MIN_PIXELS` with a JSON request on stdin
({"messages": [...], "images": [paths], "generation_prompt": bool, and for videos
"videos": [paths], "video": {"fps", "maxlen", "max_pixels", "min_pixels"}}): the token ids the
tiny model's own processor makes, with its pixel bounds set to the spec's and each image scaled
first (aspect kept) to within them, as LLaMA-Factory does. Videos are decoded by transformers'
PyAV reader at LLaMA-Factory's frame indices (`fps` per second, at most `maxlen`, evenly from
the first frame to the last). Prints the ids (and the processor's video grids and seconds per
temporal patch) as JSON.
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


def build(model_dir: str, source: str, architecture: str = "qwen2_vl") -> None:
    _import_lfc(Path(source))
    from lfc.tiny_model import build_tiny_model

    build_tiny_model(Path(model_dir), architecture=architecture)


def _videos(paths: list[str], settings: dict) -> tuple[list, list]:
    """Each video's frames and metadata, sampled as LLaMA-Factory samples them."""
    import math

    import numpy as np
    from transformers.video_utils import load_video

    def indices(metadata, **kwargs):
        seconds = metadata.total_num_frames / metadata.fps
        count = math.floor(seconds * settings["fps"])
        count = min(metadata.total_num_frames, settings["maxlen"], max(1, count))
        return np.linspace(0, metadata.total_num_frames - 1, count).astype(np.int32)

    loaded = [load_video(path, backend="pyav", sample_indices_fn=indices) for path in paths]
    return [frames for frames, _ in loaded], [meta for _, meta in loaded]


def ids(model_dir: str, template: str, max_pixels: str, min_pixels: str) -> None:
    """Answers a request, or a list of them (one process: one import of transformers)."""
    request = json.loads(sys.stdin.read())
    requests = request if isinstance(request, list) else [request]
    source = Path(template).read_text()
    out = [_ids(model_dir, source, int(max_pixels), int(min_pixels), one) for one in requests]
    print(json.dumps(out if isinstance(request, list) else out[0]))


def _ids(model_dir: str, template: str, high: int, low: int, request: dict) -> dict:
    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    processor.image_processor.size = {"shortest_edge": low, "longest_edge": high}
    images = []
    for path in request.get("images", []):
        image = Image.open(path).convert("RGB")
        pixels = image.width * image.height
        if pixels > high or pixels < low:
            scale = ((high if pixels > high else low) / pixels) ** 0.5
            image = image.resize((int(image.width * scale), int(image.height * scale)))
        images.append(image)
    videos, metadata, settings = [], [], request.get("video")
    if request.get("videos"):
        videos, metadata = _videos(request["videos"], settings)
        size = {"shortest_edge": settings["min_pixels"], "longest_edge": settings["max_pixels"]}
        processor.video_processor.size = size
    text = processor.apply_chat_template(
        request["messages"],
        chat_template=template,
        add_generation_prompt=request["generation_prompt"],
        tokenize=False,
    )
    encoded = processor(
        text=[text],
        images=images or None,
        videos=videos or None,
        video_metadata=metadata or None,
        add_special_tokens=False,
    )
    out = {"text": text, "ids": list(map(int, encoded["input_ids"][0]))}
    if videos:
        out["video_grid_thw"] = [list(map(int, grid)) for grid in encoded["video_grid_thw"]]
        out["frames"] = [len(frames) for frames in videos]
        if "second_per_grid_ts" in encoded:
            out["second_per_grid_ts"] = [float(t) for t in encoded["second_per_grid_ts"]]
    return out


if __name__ == "__main__":
    {"build": build, "ids": ids}[sys.argv[1]](*sys.argv[2:])
