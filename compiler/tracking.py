"""The environment variables that configure each experiment tracker of a project.

transformers' callbacks for W&B, MLflow and SwanLab read their project, tags, mode and log
folder from the environment; the generated config.yaml sets them in its `env:` mapping (which
TRL's parser exports before training), so a project's tracking is written out in full.
"""

from __future__ import annotations

import json

from lfc.schemas.spec import TrackingSpec

# Where each tracker keeps its local files, inside train.output_dir.
LOCAL_DIRS = {"wandb": "wandb", "mlflow": "mlruns", "swanlab": "swanlog"}


def tracker_env(tracker: str, tracking: TrackingSpec, output_dir: str) -> dict[str, str]:
    """The variables `tracker` reads, for these settings and this output folder."""
    offline = tracking.mode == "offline"
    tags = ",".join(tracking.tags)
    if tracker == "wandb":
        env = {
            "WANDB_MODE": tracking.mode,
            # wandb writes DIR/wandb/offline-run-* (or run-*) itself.
            "WANDB_DIR": output_dir,
            "WANDB_PROJECT": tracking.project,
        }
        return {**env, "WANDB_TAGS": tags} if tags else env
    if tracker == "mlflow":
        if offline:
            # MLflow 3 keeps the file store in maintenance mode: it must be allowed explicitly.
            env = {
                "MLFLOW_TRACKING_URI": f"file:{output_dir}/{LOCAL_DIRS['mlflow']}",
                "MLFLOW_ALLOW_FILE_STORE": "true",
            }
        else:
            env = {"MLFLOW_TRACKING_URI": str(tracking.mlflow_tracking_uri)}
        env["MLFLOW_EXPERIMENT_NAME"] = tracking.project
        if tags:
            env["MLFLOW_TAGS"] = json.dumps(dict.fromkeys(tracking.tags, ""))
        return {**env, "MLFLOW_DISABLE_TELEMETRY": "true"}
    if tracker == "swanlab":
        env = {
            "SWANLAB_MODE": "offline" if offline else "cloud",
            "SWANLAB_LOG_DIR": f"{output_dir}/{LOCAL_DIRS['swanlab']}",
            "SWANLAB_PROJECT": tracking.project,
        }
        return {**env, "SWANLAB_TAGS": tags} if tags else env
    raise AssertionError(f"no environment for tracker {tracker}")
