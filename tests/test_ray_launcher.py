"""A two-job sweep through Hydra's Ray launcher on a local Ray instance."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

pytest.importorskip("ray")
pytest.importorskip("hydra_plugins.hydra_ray_launcher")

TINY = [
    "env.max_cycles=8", "t_max=48", "test_interval=16", "test_episodes=1", "learner.batch_size=2",
    "learner.buffer_size=4", "learner.hidden_dim=16", "learner.mixer_embed_dim=8", "learner.hypernet_dim=16",
    "learner.central_mixer_dim=32",
]
RAY = ["hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2",
       "+hydra.launcher.ray.init.include_dashboard=false"]


def test_ray_sweep_writes_one_run_per_job(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    # Its own process: the launcher starts Ray and leaves it running until the process ends.
    proc = subprocess.run(
        [sys.executable, "-m", "wqmix_cli", "train", "-m", "seed=0,1", *RAY, *TINY, f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Ray Launcher is launching 2 jobs" in proc.stdout + proc.stderr

    runs = sorted(p.parent for p in sweep.glob("*/.hydra"))
    assert [run.name for run in runs] == ["0", "1"]
    assert sorted(OmegaConf.load(run / ".hydra" / "config.yaml").seed for run in runs) == [0, 1]
    for run in runs:
        assert (run / "checkpoints" / "latest").read_text().strip() == "64"  # 8 envs x 8 steps
        events = list((run / "tb").glob("events.out.tfevents*"))
        assert events and all(e.stat().st_size > 0 for e in events)
        assert "test return" in (run / "train.log").read_text()
