"""Optional trackers: wandb (offline) and MLflow get TensorBoard's scalars, a resumed run continues them,
and a missing tracker package is one line and exit 2 before anything runs."""
from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from wqmix_cli.cli import main
from wqmix_cli.trackers import MLFLOW_DB, MLFLOW_ID_FILE, WANDB_ID_FILE

TINY = ["env=matrix", "test_interval=50", "test_episodes=2", "log_interval=50", "save_interval=100",
        "learner.batch_size=4", "learner.target_update_interval=5", "epsilon.anneal_time=100",
        "learner.hidden_dim=16", "learner.mixer_embed_dim=8", "learner.hypernet_dim=16",
        "learner.central_mixer_dim=32"]
TRACKED = ["logger.wandb=true", "logger.mlflow=true"]
FIRST_T_MAX, RESUMED_T_MAX = 200, 300
WANDB_BLOCK, WANDB_HEADER, RECORD_HEADER = 32768, 7, 7
FULL, LAST = 1, 4


def tensorboard(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def wandb_records(path: Path) -> list[bytes]:
    """The serialised records of an offline ``.wandb`` file (a LevelDB-style log after a 7-byte header)."""
    data, pos, pending, records = path.read_bytes(), WANDB_HEADER, b"", []
    while pos + RECORD_HEADER <= len(data):
        left = WANDB_BLOCK - pos % WANDB_BLOCK
        _, length, kind = struct.unpack("<IHB", data[pos : pos + RECORD_HEADER])
        if left < RECORD_HEADER or (length == 0 and kind == 0):
            pos += left
            continue
        pending += data[pos + RECORD_HEADER : pos + RECORD_HEADER + length]
        pos += RECORD_HEADER + length
        if kind in (FULL, LAST):
            records.append(pending)
            pending = b""
    return records


def wandb_history(path: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of ``tag`` in the history records of an offline run file."""
    from wandb.proto import wandb_internal_pb2

    points = []
    for data in wandb_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            items = {item.key or ".".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            if tag in items:
                points.append((items["_step"], items[tag]))
    return points


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A run with both trackers to t_env=200, then resumed to 300; what the first part left."""
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    run_dir = tmp_path_factory.mktemp("tracked")
    home = tmp_path_factory.mktemp("wandb_home")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WANDB_SILENT", "true")
        env.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
            env.setenv(var, str(home))
        assert main(["train", *TINY, *TRACKED, f"t_max={FIRST_T_MAX}", f"hydra.run.dir={run_dir}"]) == 0
        first = {"mlflow_id": (run_dir / MLFLOW_ID_FILE).read_text(), "wandb_id": (run_dir / WANDB_ID_FILE).read_text()}
        assert main(["train", f"resume={run_dir}", f"t_max={RESUMED_T_MAX}"]) == 0
    return {"run_dir": run_dir, **first}


def mlflow_client(run_dir: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{run_dir / MLFLOW_DB}")


def test_wandb_offline_runs_hold_the_tensorboard_history_under_one_id(tracked_run: dict) -> None:
    run_dir, run_id = tracked_run["run_dir"], tracked_run["wandb_id"]
    files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert [f.name for f in files] == [f"run-{run_id}.wandb"] * 2  # the resumed part continues the same run
    assert (run_dir / WANDB_ID_FILE).read_text() == run_id
    for tag in ("train/epsilon", "loss/total", "test/return_mean"):
        logged = [point for f in files for point in wandb_history(f, tag)]
        expected = tensorboard(run_dir, tag)
        assert [s for s, _ in logged] == [s for s, _ in expected] and expected[-1][0] > FIRST_T_MAX
        assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)


def test_mlflow_store_holds_the_tensorboard_metric_and_the_config(tracked_run: dict) -> None:
    run_dir, run_id = tracked_run["run_dir"], tracked_run["mlflow_id"]
    client = mlflow_client(run_dir)
    for tag in ("loss/total", "train/epsilon"):
        logged = [(m.step, m.value) for m in client.get_metric_history(run_id, tag)]
        expected = tensorboard(run_dir, tag)
        assert [s for s, _ in logged] == [s for s, _ in expected]
        assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)
    params = client.get_run(run_id).data.params
    assert params["agent.name"] == "cwqmix" and params["env.name"] == "matrix"
    assert params["t_max"] == str(FIRST_T_MAX) and params["logger.mlflow"] == "True"


def test_resumed_run_appends_to_the_same_mlflow_run(tracked_run: dict) -> None:
    run_dir, run_id = tracked_run["run_dir"], tracked_run["mlflow_id"]
    client = mlflow_client(run_dir)
    assert (run_dir / MLFLOW_ID_FILE).read_text() == run_id
    experiment = client.get_experiment_by_name("wqmix")
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [run_id]
    steps = [m.step for m in client.get_metric_history(run_id, "train/epsilon")]
    assert steps == sorted(set(steps)) and steps[0] <= FIRST_T_MAX < steps[-1] <= RESUMED_T_MAX
    assert client.get_run(run_id).info.status == "FINISHED"


@pytest.mark.parametrize("package", ["wandb", "mlflow"])
def test_missing_tracker_package_is_one_line_and_exit_2(
    package: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # `import package` fails as if it were not installed
    assert main(["train", *TINY, f"logger.{package}=true", f"hydra.run.dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert err == f"wqmix: logger.{package}=true needs the {package} package: pip install -e '.[trackers]'\n"
    assert not (tmp_path / "run").exists()


def test_unknown_wandb_mode_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "logger.wandb_mode=cloud"]) == 2
    err = capsys.readouterr().err
    assert err == "wqmix: logger.wandb_mode='cloud' is not known; allowed: offline, online, disabled\n"
