"""Runs that survive: exact resume, SIGTERM, SIGKILL while saving."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from wqmix_cli.checkpoint import latest_checkpoint, load_checkpoint
from wqmix_cli.cli import main

RUN = ["env.n_envs=1", "env.workers=0", "test_interval=150", "test_episodes=2", "log_interval=50", "learner.batch_size=4",
       "learner.target_update_interval=3", "epsilon.anneal_time=200", "deterministic=true", "seed=5"]


def losses(run_dir) -> list[tuple[int, float]]:
    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars("loss/total")] + [
        (e.step, e.value) for e in acc.Scalars("test/return_mean")
    ]


def test_stopped_and_resumed_run_logs_the_same_losses_as_one_run(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert main(["train", *RUN, "t_max=400", f"hydra.run.dir={whole}"]) == 0
    assert main(["train", *RUN, "t_max=200", "checkpoint.save_buffer=true", f"hydra.run.dir={parts}"]) == 0
    assert main(["train", f"resume={parts}", "t_max=400"]) == 0
    assert (parts / "checkpoints" / "latest").read_text().strip() == "400"
    expected, got = losses(whole), losses(parts)
    assert len(expected) > 8
    assert got == expected


def test_resume_from_a_run_without_checkpoints_is_bad_input(tmp_path, capsys):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("[]\n")
    assert main(["train", f"resume={tmp_path}"]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err


def test_a_refused_resume_closes_the_env_it_opened(tmp_path, capsys, monkeypatch):
    """The envs (and their worker processes) are made before the checkpoint is read: bad
    input found then must not leave them running (a sweep's later jobs share the process)."""
    import wqmix_cli.train as train_module

    opened, make = [], train_module.make_collector

    def recording(*args):
        collector = make(*args)
        opened.append(collector)
        return collector

    monkeypatch.setattr(train_module, "make_collector", recording)
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("[]\n")
    assert main(["train", f"resume={tmp_path}", "env.workers=1", "env.n_envs=2"]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err
    (collector,) = opened
    assert collector.workers and all(not worker.process.is_alive() for worker in collector.workers)


def test_resume_into_another_env_says_the_sizes_differ(tmp_path, capsys):
    assert main(["train", *RUN, "t_max=50", "test_episodes=0", f"hydra.run.dir={tmp_path}"]) == 0
    assert main(["train", f"resume={tmp_path}", "env.scenario=simple_speaker_listener", "t_max=100"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was made for env sizes" in err


def test_a_refused_resume_leaves_the_run_as_it_was(tmp_path, capsys):
    """Hydra rewrites the run's .hydra files before the job starts: a refused resume must not
    leave them naming its overrides, or every later resume of the run is refused too."""
    assert main(["train", *RUN, "t_max=50", "test_episodes=0", f"hydra.run.dir={tmp_path}"]) == 0
    record = {path.name: path.read_bytes() for path in (tmp_path / ".hydra").glob("*.yaml")}
    assert main(["train", f"resume={tmp_path}", "agent=qmix", "t_max=100"]) == 2
    assert "the networks do not match this config" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in (tmp_path / ".hydra").glob("*.yaml")} == record
    assert main(["train", f"resume={tmp_path}", "t_max=100"]) == 0
    assert main(["train", f"resume={tmp_path}", "t_max=150"]) == 0
    overrides = (tmp_path / ".hydra" / "overrides.yaml").read_text()
    assert overrides.count("t_max=") == 1 and "t_max=150" in overrides  # each key once, its last value


def _spawn(run_dir, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "wqmix_cli", "train", "t_max=1000000", "test_episodes=0", "learner.batch_size=4",
         f"hydra.run.dir={run_dir}", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def _wait_for(predicate, timeout: float = 120.0) -> None:
    end = time.time() + timeout
    while not predicate():
        assert time.time() < end, "timed out"
        time.sleep(0.01)


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_exits_143(tmp_path):
    proc = _spawn(tmp_path, "save_interval=1000000")
    _wait_for(lambda: (tmp_path / "tb").is_dir() and any((tmp_path / "tb").iterdir()))
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    folder = latest_checkpoint(tmp_path)
    state, _ = load_checkpoint(folder)
    assert state["counters"]["t_env"] == int(folder.name) > 0
    assert "stopped by signal" in (tmp_path / "train.log").read_text()


@pytest.mark.slow
def test_sigkill_while_saving_leaves_the_previous_checkpoint_as_latest(tmp_path):
    root = tmp_path / "checkpoints"
    proc = _spawn(tmp_path, "save_interval=25", "checkpoint.save_buffer=true", "checkpoint.keep=2")

    def saving() -> bool:
        return root.is_dir() and (root / "latest").is_file() and any(p.name.endswith(".tmp") for p in root.iterdir())

    _wait_for(saving)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    folder = latest_checkpoint(tmp_path)
    assert folder is not None and not folder.name.endswith(".tmp")
    state, buffer = load_checkpoint(folder, with_buffer=True)
    assert buffer is not None and buffer["size"] == state["counters"]["episodes"]
    assert main(["train", f"resume={tmp_path}", f"t_max={int(folder.name) + 100}", "save_interval=1000000"]) == 0
    assert int(latest_checkpoint(tmp_path).name) >= int(folder.name) + 100


def test_nan_stops_the_run_with_one_line_and_keeps_the_last_checkpoint(tmp_path, capsys):
    # lr=1e30 drives the networks to inf within a few updates.
    code = main(["train", "t_max=2000", "save_interval=100", "test_episodes=0", "learner.batch_size=4",
                 "learner.lr=1e30", "learner.grad_clip=1e30", f"hydra.run.dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "the loss became" in err and "t_env=" in err
    folder = latest_checkpoint(tmp_path)
    assert folder is not None and f"last good checkpoint is {folder}" in err
    state, _ = load_checkpoint(folder)
    assert all(torch.isfinite(v).all() for v in state["policy"].values())
