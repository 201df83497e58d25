"""Experiment trackers: W&B, MLflow, SwanLab and TensorBoard in one real, offline training run.

The sft-tracking example trains 2 steps on the tiny model with HOME in a fresh folder; then
each tracker's own files are read back (W&B's .wandb log, MLflow's file store, SwanLab's
backup.swanlab, TensorBoard's events) and must hold the spec's run name, project and tags,
and exactly the losses the trainer recorded in trainer_state.json. The compile tests check
that only the chosen trackers are pinned and configured.
"""

from __future__ import annotations

import glob
import json
import math
import os
import struct
import sys
import zlib
from pathlib import Path

import pytest
import yaml

from lfc.pipeline import compile_file

from conftest import EXAMPLES, compile_example, write_variant
from project_env import run

TRACKER_PACKAGES = {
    "wandb": ["wandb"],
    "mlflow": ["mlflow-skinny"],
    "swanlab": ["swanlab", "protobuf"],
    "tensorboard": ["tensorboard"],
}
ENV_PREFIX = {"wandb": "WANDB_", "mlflow": "MLFLOW_", "swanlab": "SWANLAB_"}
LAUNCH = ["-m", "accelerate.commands.launch", "--config_file", "accelerate/single.yaml"]


def _pins(requirements: bytes) -> dict[str, str]:
    lines = [line for line in requirements.decode().splitlines() if "==" in line]
    return dict(line.split("==", 1) for line in lines if not line.startswith("#"))


def _variant(tmp_path: Path, report_to: list[str], tracking: dict | None = None) -> dict:
    quickstart = yaml.safe_load((EXAMPLES / "quickstart.yaml").read_text())
    sections: dict = {"train": {**quickstart["train"], "report_to": report_to}}
    if tracking is not None:
        sections["tracking"] = tracking
    return compile_file(write_variant(tmp_path, sections)).files


def test_a_spec_without_trackers_pins_and_configures_none() -> None:
    files = compile_file(EXAMPLES / "quickstart.yaml").files
    pins = _pins(files["requirements.txt"])
    for package in sum(TRACKER_PACKAGES.values(), []):
        assert package not in pins, package
    config = yaml.safe_load(files["config.yaml"])
    assert "env" not in config and "run_name" not in config and config["report_to"] == ["none"]
    readme = files["README.md"].decode()
    assert "## Tracking" not in readme
    assert not any(word in readme.lower() for word in ("wandb", "mlflow", "swanlab"))
    assert b"tracking" not in files["spec.yaml"]


@pytest.mark.parametrize("tracker", ["wandb", "mlflow", "swanlab"])
def test_each_tracker_alone_is_pinned_and_configured_alone(tmp_path: Path, tracker: str) -> None:
    files = _variant(tmp_path, [tracker], {"project": "p-1", "run_name": "r 1", "tags": ["a"]})
    matrix = json.loads((EXAMPLES.parent / "blueprints" / "pins" / "matrix.json").read_text())
    pins = _pins(files["requirements.txt"])
    for other, packages in TRACKER_PACKAGES.items():
        for package in packages:
            if other == tracker:
                assert pins[package] == matrix["cpu"]["extras"][tracker][package]
            else:
                assert package not in pins, (tracker, package)
    config = yaml.safe_load(files["config.yaml"])
    assert config["report_to"] == [tracker] and config["run_name"] == "r 1"
    assert config["env"] and all(key.startswith(ENV_PREFIX[tracker]) for key in config["env"])
    assert "p-1" in config["env"].values()
    readme = files["README.md"].decode()
    tracking = readme.split("## Tracking", 1)[1].split("\n## ", 1)[0]
    assert "offline" in tracking and "tracking.mode: online" in tracking
    for other in {"wandb", "mlflow", "swanlab"} - {tracker}:
        assert other not in tracking.lower(), other
    spec = yaml.safe_load(files["spec.yaml"])
    assert spec["tracking"]["mode"] == "offline" and spec["tracking"]["tags"] == ["a"]


def test_online_mode_sets_each_tracker_online(tmp_path: Path) -> None:
    server = "https://mlflow.example.org"
    tracking = {"mode": "online", "mlflow_tracking_uri": server}
    files = _variant(tmp_path, ["wandb", "mlflow", "swanlab"], tracking)
    env = yaml.safe_load(files["config.yaml"])["env"]
    assert env["WANDB_MODE"] == "online" and env["SWANLAB_MODE"] == "cloud"
    assert env["MLFLOW_TRACKING_URI"] == server and "MLFLOW_ALLOW_FILE_STORE" not in env
    assert server in files["README.md"].decode()


def _wandb_records(path: Path):
    """The protobuf records of a .wandb file: LevelDB-log framing (32 KiB blocks, 7-byte
    record headers: crc32 of type + data, length, type full/first/middle/last) after a 7-byte
    file header."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, position, pending = 32768, 7, b""
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        crc, length, kind = struct.unpack("<IHB", data[position : position + 7])
        piece = data[position + 7 : position + 7 + length]
        assert zlib.crc32(piece, zlib.crc32(bytes([kind]))) == crc, f"bad record at {position}"
        pending += piece
        position += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _read_wandb(output: Path) -> tuple[str, str, list[str], list[float]]:
    (log,) = output.glob("wandb/offline-run-*/run-*.wandb")
    run_record, losses = None, []
    for record in _wandb_records(log):
        if record.WhichOneof("record_type") == "run":
            run_record = record.run
        elif record.WhichOneof("record_type") == "history":
            items = {item.key or "/".join(item.nested_key): item for item in record.history.item}
            if "train/loss" in items:
                losses.append(json.loads(items["train/loss"].value_json))
    assert run_record is not None
    return run_record.display_name, run_record.project, list(run_record.tags), losses


def _read_mlflow(output: Path, project: str) -> tuple[str, dict[str, str], list[float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"file:{output}/mlruns")
    experiment = client.get_experiment_by_name(project)
    assert experiment is not None, f"no MLflow experiment {project!r}"
    (found,) = client.search_runs([experiment.experiment_id])
    tags = {k: v for k, v in found.data.tags.items() if not k.startswith("mlflow.")}
    history = client.get_metric_history(found.info.run_id, "loss")
    return found.info.run_name, tags, [m.value for m in sorted(history, key=lambda m: m.step)]


def _read_swanlab(output: Path) -> tuple[str, str, list[str], list[float]]:
    from swanlab.data.porter.datastore import DataStore

    (backup,) = output.glob("swanlog/run-*/backup.swanlab")
    store = DataStore()
    store.open_for_scan(str(backup))
    project = experiment = None
    losses = []
    for line in store:
        record = json.loads(line)
        kind, data = record["model_type"], record["data"]
        if kind == "Project":
            project = data["name"]
        elif kind == "Experiment":
            experiment = data
        elif kind == "Scalar" and data["key"] == "train/loss":
            losses.append(data["metric"]["data"])
    assert project is not None and experiment is not None
    return experiment["name"], project, experiment["tags"], losses


def _read_tensorboard(output: Path) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run_dir,) = (output / "runs").iterdir()
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [event.value for event in events.Scalars("train/loss")]


def test_one_offline_run_logs_name_project_tags_and_loss_to_every_tracker(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in ("wandb", "mlflow", "swanlab", "tensorboard"):
        pytest.importorskip(module)
    project = compile_example("sft-tracking", tmp_path / "run", tiny_model)
    spec = yaml.safe_load((EXAMPLES / "sft-tracking.yaml").read_text())["tracking"]
    home = tmp_path / "home"
    home.mkdir()
    # Nothing of the caller's tracker settings, accounts or caches reaches the run.
    env = {k: v for k, v in os.environ.items() if not k.startswith(tuple(ENV_PREFIX.values()))}
    env.update({"HOME": str(home), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    run([sys.executable, "data.py"], project, env)
    run([sys.executable, *LAUNCH, "train.py", "--max_steps", "2"], project, env, timeout=600)

    output = project / "outputs"
    (state,) = output.glob("checkpoint-2/trainer_state.json")
    logged = [
        entry["loss"] for entry in json.loads(state.read_text())["log_history"] if "loss" in entry
    ]
    assert len(logged) == 2 and all(math.isfinite(loss) and loss > 0 for loss in logged)

    name, wandb_project, wandb_tags, wandb_losses = _read_wandb(output)
    assert (name, wandb_project, wandb_tags) == (spec["run_name"], spec["project"], spec["tags"])
    assert wandb_losses == pytest.approx(logged)

    # The project's config.yaml allows MLflow's file store in train.py; so must this reader.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    name, mlflow_tags, mlflow_losses = _read_mlflow(output, spec["project"])
    assert name == spec["run_name"] and mlflow_tags == dict.fromkeys(spec["tags"], "")
    assert mlflow_losses == pytest.approx(logged)

    name, swanlab_project, swanlab_tags, swanlab_losses = _read_swanlab(output)
    assert (name, swanlab_project, swanlab_tags) == (
        spec["run_name"],
        spec["project"],
        spec["tags"],
    )
    assert swanlab_losses == pytest.approx(logged)

    assert _read_tensorboard(output) == pytest.approx(logged)
    # Offline: each tracker wrote its run inside the project, none into the fresh HOME.
    assert not glob.glob(str(home / "**" / "*.wandb"), recursive=True)
    assert not list(home.rglob("backup.swanlab")) and not list(home.rglob("mlruns"))
