"""Experiment trackers beside TensorBoard: wandb and MLflow runs kept in the run folder."""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any, Protocol

from wqmix_cli.config import ConfigError, LoggerConfig

WANDB_ID_FILE = "wandb_run_id"
MLFLOW_ID_FILE = "mlflow_run_id"
MLFLOW_DB = "mlflow.db"
MLFLOW_PARAMS_PER_CALL = 100


def check_trackers(cfg: LoggerConfig) -> None:
    """Raise ConfigError (one line) if an enabled tracker's package is not installed."""
    for package in ("wandb", "mlflow"):
        if getattr(cfg, package) and importlib.util.find_spec(package) is None:
            raise ConfigError(f"logger.{package}=true needs the {package} package: pip install -e '.[trackers]'")


class Tracker(Protocol):
    """An experiment tracker that receives the same scalars as TensorBoard."""

    def log(self, values: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as ``{"learner.lr": "0.0005", ...}`` (lists kept whole)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


def stored_run_id(path: Path, resumed: bool) -> str | None:
    """The tracker run id kept in ``path`` by an earlier part of a resumed run, else None."""
    if not resumed or not path.is_file():
        return None
    return path.read_text().strip() or None


class WandbTracker:
    """A Weights & Biases run whose files live in ``run_dir/wandb``; a resumed run continues it."""

    def __init__(self, cfg: LoggerConfig, run_dir: Path, run_config: dict[str, Any], resumed: bool) -> None:
        import wandb

        run_id = stored_run_id(run_dir / WANDB_ID_FILE, resumed)
        # console="off": train.log already holds the log, and capturing would wrap the progress bar's stream.
        self.run = wandb.init(
            project=cfg.wandb_project, mode=cfg.wandb_mode, dir=str(run_dir), id=run_id, resume="allow",
            config=None if run_id else run_config, settings=wandb.Settings(console="off"),
        )
        (run_dir / WANDB_ID_FILE).write_text(self.run.id)

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(dict(values), step=step)

    def close(self) -> None:
        self.run.finish()


class MlflowTracker:
    """An MLflow run (by default in ``run_dir/mlflow.db``); a resumed run appends to it."""

    def __init__(self, cfg: LoggerConfig, run_dir: Path, run_config: dict[str, Any], resumed: bool) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=cfg.mlflow_uri or f"sqlite:///{(run_dir / MLFLOW_DB).absolute()}")
        run_id = stored_run_id(run_dir / MLFLOW_ID_FILE, resumed)
        if run_id:
            self.client.update_run(run_id, status="RUNNING")
        else:
            experiment = self.client.get_experiment_by_name(cfg.mlflow_experiment)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
                cfg.mlflow_experiment
            )
            run_id = self.client.create_run(experiment_id, run_name=run_dir.name).info.run_id
            params = [Param(key, value) for key, value in flatten(run_config).items()]
            for start in range(0, len(params), MLFLOW_PARAMS_PER_CALL):
                self.client.log_batch(run_id, params=params[start : start + MLFLOW_PARAMS_PER_CALL])
        (run_dir / MLFLOW_ID_FILE).write_text(run_id)
        self.run_id = run_id

    def log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(tag, float(value), now, step) for tag, value in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def open_trackers(cfg: LoggerConfig, run_dir: Path, run_config: dict[str, Any], resumed: bool) -> list[Tracker]:
    """The enabled trackers, opened; if one fails to open, those already open are closed."""
    kinds = [kind for enabled, kind in ((cfg.wandb, WandbTracker), (cfg.mlflow, MlflowTracker)) if enabled]
    opened: list[Tracker] = []
    try:
        for kind in kinds:
            opened.append(kind(cfg, run_dir, run_config, resumed))
    except Exception:
        for tracker in opened:
            tracker.close()
        raise
    return opened
