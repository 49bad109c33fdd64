"""A Hydra sweep through a launcher plugin, then `wqmix plot` over its folder."""
from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from wqmix_cli.checkpoint import latest_checkpoint, load_checkpoint
from wqmix_cli.cli import main
from wqmix_cli.cpu import available_cores, default_threads

AGENTS = ("cwqmix", "qmix")
TINY = [
    "env.max_cycles=8", "t_max=48", "test_interval=16", "test_episodes=1", "learner.batch_size=2",
    "learner.buffer_size=4", "learner.hidden_dim=16", "learner.mixer_embed_dim=8", "learner.hypernet_dim=16",
    "learner.central_mixer_dim=32",
]
LAUNCHERS = [
    pytest.param("joblib", id="joblib"),
    pytest.param(
        "submitit_local",
        id="submitit_local",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
            reason="hydra-submitit-launcher is not installed (pip install hydra-submitit-launcher)",
        ),
    ),
]


def _last_test_return(run: Path) -> float:
    """The last `test/return_mean` scalar of a run, read straight from its event files."""
    events = []
    for event_file in sorted((run / "tb").glob("events.out.tfevents*")):
        accumulator = EventAccumulator(str(event_file), size_guidance={SCALARS: 0})
        accumulator.Reload()
        if "test/return_mean" in accumulator.Tags()[SCALARS]:
            events.extend(accumulator.Scalars("test/return_mean"))
    assert events, f"no test/return_mean in {run / 'tb'}"
    return max(events, key=lambda e: (e.step, e.wall_time)).value


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_sweep_then_plot(launcher: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = tmp_path / "sweep"
    code = main(["train", "-m", f"agent={','.join(AGENTS)}", *TINY, f"hydra/launcher={launcher}",
                 f"hydra.sweep.dir={sweep}"])
    assert code == 0

    runs = sorted(p.parent for p in sweep.glob("*/.hydra"))
    assert len(runs) == 2
    by_agent = {}
    for run in runs:
        assert (run / "tb").is_dir() and any((run / "tb").iterdir())
        assert (run / "checkpoints" / "latest").is_file()
        by_agent[OmegaConf.load(run / ".hydra" / "config.yaml").agent.name] = run
        # joblib's default n_jobs=-1 runs one job per core: each gets one core's threads.
        config = load_checkpoint(latest_checkpoint(run / "checkpoints"))[0]["config"]
        expected = (1, 1) if launcher == "joblib" else (default_threads(), available_cores())
        assert (config["threads"], config["learner_threads"]) == expected
    assert sorted(by_agent) == sorted(AGENTS)

    out = tmp_path / "c.png"
    assert main(["plot", str(sweep), "--out", str(out)]) == 0
    capsys.readouterr()
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with out.with_suffix(".csv").open() as handle:
        rows = {row["group"]: row for row in csv.DictReader(handle)}
    assert sorted(rows) == sorted(f"agent={a}" for a in AGENTS)
    for agent, run in by_agent.items():
        row = rows[f"agent={agent}"]
        assert int(row["n_seeds"]) == 1
        assert float(row["final_mean"]) == pytest.approx(_last_test_return(run), rel=1e-9)
