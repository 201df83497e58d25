"""A timing probe for a `transformers.Trainer` run in another process; nothing in it is edited.

bench/train_bench.py puts a generated `sitecustomize.py` on the training command's PYTHONPATH;
it calls `install()` here at interpreter start-up (in every Python process of the command,
accelerate's launcher included). `install()` only registers an import hook: when
`transformers.trainer` is first imported, `Trainer.__init__` is wrapped so that every trainer
(TRL's SFTTrainer, LLaMA-Factory's CustomSeq2SeqTrainer, ...) gets

- its `training_step` wrapped, to count the tokens of each micro-batch it is given:
  `nonpad` = input ids that are not the tokenizer's pad token (what the model actually trains
  on; padding-free rows have none), `labels` = positions whose label is not -100, `total` =
  every position including padding;
- a `TrainerCallback` whose `on_step_end` (right after the optimizer step) appends one JSON
  line `{"event": "step", "step", "t" (time.time()), "nonpad", "labels", "total"}` to the file
  in $TRAIN_PROBE_OUT.

The cost is two tensor comparisons and a file write per step. With $TRAIN_PROBE_STUB_TORCHAUDIO
set and no importable torchaudio, an empty stand-in module is registered (LLaMA-Factory 0.9.5
imports torchaudio at module level, only CUDA builds of it exist for torch 2.13, and the text
path never calls it; the same stand-in as bench/lf_preprocess.py).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import time
import types

OUT_ENV = "TRAIN_PROBE_OUT"
IGNORE_INDEX = -100


def emit(record: dict) -> None:
    path = os.environ.get(OUT_ENV)
    if not path:
        return
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")


def count_tokens(inputs: dict, pad_id: int | None) -> dict[str, int]:
    ids = inputs.get("input_ids")
    if ids is None:
        return {"nonpad": 0, "labels": 0, "total": 0}
    labels = inputs.get("labels")
    nonpad = int((ids != pad_id).sum()) if pad_id is not None else ids.numel()
    supervised = int((labels != IGNORE_INDEX).sum()) if labels is not None else 0
    return {"nonpad": nonpad, "labels": supervised, "total": ids.numel()}


def _pad_id(trainer) -> int | None:
    tokenizer = getattr(trainer, "processing_class", None)
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor wraps its tokenizer
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(getattr(trainer.model, "config", None), "pad_token_id", None)
    return pad


def _attach(trainer, callback_base) -> None:
    pending = {"nonpad": 0, "labels": 0, "total": 0}
    pad_id = _pad_id(trainer)
    inner = trainer.training_step  # the most derived class's method, bound

    def training_step(model, inputs, *args, **kwargs):
        for key, value in count_tokens(inputs, pad_id).items():
            pending[key] += value
        return inner(model, inputs, *args, **kwargs)

    trainer.training_step = training_step

    class Probe(callback_base):
        def on_train_begin(self, args, state, control, **kwargs):
            emit({"event": "train_begin", "t": time.time(), "pad_id": pad_id})

        def on_step_end(self, args, state, control, **kwargs):
            emit({"event": "step", "step": state.global_step, "t": time.time(), **pending})
            for key in pending:
                pending[key] = 0

    trainer.add_callback(Probe())


def _patch(module: types.ModuleType) -> None:
    trainer_cls = module.Trainer
    if getattr(trainer_cls, "_bench_probe", False):
        return
    original = trainer_cls.__init__
    callback_base = module.TrainerCallback

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        _attach(self, callback_base)

    trainer_cls.__init__ = __init__
    trainer_cls._bench_probe = True


class _TrainerHook(importlib.abc.MetaPathFinder):
    """Finds transformers.trainer the normal way, and patches it right after it executes."""

    def find_spec(self, name, path=None, target=None):
        if name != "transformers.trainer":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        loader_exec = spec.loader.exec_module

        def exec_module(module):
            loader_exec(module)
            _patch(module)

        spec.loader.exec_module = exec_module
        return spec


def _stub_torchaudio() -> None:
    if "torchaudio" in sys.modules or importlib.util.find_spec("torchaudio") is not None:
        return
    module = types.ModuleType("torchaudio")
    module.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
    sys.modules["torchaudio"] = module


def install() -> None:
    if not os.environ.get(OUT_ENV):
        return
    emit({"event": "python_start", "t": time.time(), "pid": os.getpid(), "argv": sys.argv[:3]})
    if os.environ.get("TRAIN_PROBE_STUB_TORCHAUDIO"):
        _stub_torchaudio()
    sys.meta_path.insert(0, _TrainerHook())
