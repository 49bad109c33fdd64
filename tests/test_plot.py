"""Tests of `wqmix plot` on fake run folders: 2 agents x 2 seeds, one of them resumed."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from omegaconf import OmegaConf
from torch.utils.tensorboard import SummaryWriter

from wqmix_cli.plot import bootstrap_ci, find_runs, format_steps, main, read_scalars

METRIC = "test/return_mean"
# Final values, exactly representable in float32 (TensorBoard stores float32).
FINALS = {("cwqmix", 0): 10.5, ("cwqmix", 1): 12.25, ("owqmix", 0): 4.0, ("owqmix", 1): 7.5}
W = {"cwqmix": 0.75, "owqmix": 0.5}


def write_events(tb: Path, series: list[tuple[int, float]], wall_start: float) -> None:
    """One writer session (one event file) logging METRIC and loss/total."""
    writer = SummaryWriter(log_dir=str(tb))
    for i, (step, value) in enumerate(series):
        writer.add_scalar(METRIC, value, step, walltime=wall_start + i)
        writer.add_scalar("loss/total", 1.0 / (i + 1), step, walltime=wall_start + i)
    writer.close()


def make_run(run: Path, agent: str, seed: int, sessions: list[list[tuple[int, float]]]) -> None:
    """A Hydra-like run folder: .hydra/config.yaml and tb/ with one file per session."""
    config = {
        "seed": seed,
        "resume": None if len(sessions) == 1 else str(run),
        "t_max": 3000,
        "agent": {"name": agent, "w": W[agent]},
        "env": {"name": "smax", "map_name": "3m", "n_envs": 1},
        "learner": {"lr": 0.0005, "gamma": 0.99},
    }
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(config), run / ".hydra" / "config.yaml")
    for index, series in enumerate(sessions):
        write_events(run / "tb", series, wall_start=1000.0 * (index + 1))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sweep folder with runs 0..3; run 3 was stopped and resumed from step 2000."""
    root = tmp_path_factory.mktemp("multirun") / "2026-11-25" / "11-00-00"
    index = 0
    for agent in ("cwqmix", "owqmix"):
        for seed in (0, 1):
            final = FINALS[(agent, seed)]
            # Seed 1 logs at slightly different steps, as episode boundaries do.
            steps = [0, 1000, 2000, 3000] if seed == 0 else [0, 1010, 2020, 3000]
            values = [0.0, final / 3, 2 * final / 3, final]
            series = list(zip(steps, values))
            if (agent, seed) == ("owqmix", 1):
                # First session logged a bad value at 2020, then the run resumed there.
                sessions = [series[:2] + [(2020, -100.0)], series[2:]]
            else:
                sessions = [series]
            make_run(root / str(index), agent, seed, sessions)
            index += 1
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


@pytest.fixture(scope="module")
def plotted(sweep: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run `wqmix plot` once on the sweep and keep its outputs."""
    out = tmp_path_factory.mktemp("plots") / "curves.png"
    code = main([str(sweep), "--out", str(out)])
    with out.with_suffix(".csv").open() as handle:
        rows = {row["group"]: row for row in csv.DictReader(handle)}
    return {"code": code, "out": out, "rows": rows}


def test_png_is_written(plotted: dict) -> None:
    assert plotted["code"] == 0
    png = plotted["out"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000
    height, width, _ = imread(png).shape
    assert (width, height) == (1200, 750)


def test_csv_has_one_row_per_group_labelled_by_agent(plotted: dict) -> None:
    rows = plotted["rows"]
    # agent.w differs too but adds nothing to agent; seed and resume never group.
    assert set(rows) == {"agent=cwqmix", "agent=owqmix"}
    for agent in ("cwqmix", "owqmix"):
        row = rows[f"agent={agent}"]
        assert int(row["n_seeds"]) == 2
        assert int(row["final_step"]) == 3000
        expected = (FINALS[(agent, 0)] + FINALS[(agent, 1)]) / 2
        assert float(row["final_mean"]) == expected
        assert float(row["ci_low"]) <= expected <= float(row["ci_high"])
        assert float(row["ci_low"]) < float(row["ci_high"])


def test_table_printed(sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(sweep), "--out", str(tmp_path / "c.png"), "--group-by", "agent"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["group", "n_seeds", "final_step", "final_mean", "ci_low", "ci_high"]
    assert lines[1].split()[:4] == ["agent=cwqmix", "2", "3k", "11.38"]
    assert lines[2].split()[:4] == ["agent=owqmix", "2", "3k", "5.75"]


def test_resumed_run_is_merged(sweep: Path) -> None:
    steps, values = read_scalars(sweep / "3", METRIC)
    assert len(list((sweep / "3" / "tb").glob("events.out.tfevents*"))) == 2
    assert steps.tolist() == [0, 1010, 2020, 3000]
    assert values.tolist() == [0.0, 2.5, 5.0, 7.5]  # 2020 from the later session


def test_find_runs_recurses(sweep: Path) -> None:
    assert [run.name for run in find_runs([sweep.parent.parent])] == ["0", "1", "2", "3"]


def test_empty_folder_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty), "--out", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "no run folders" in err[0] and str(empty) in err[0]
    assert not (tmp_path / "c.png").exists()


def test_missing_metric_lists_tags(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main([str(sweep), "--metric", "test/nope", "--out", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "test/nope" in err[0]
    assert "loss/total" in err[0] and METRIC in err[0]


def test_a_figure_format_matplotlib_cannot_write_is_bad_input(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main([str(sweep), "--out", str(tmp_path / "c.txt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a figure format matplotlib writes; allowed endings:" in err[0]
    assert "png" in err[0] and "pdf" in err[0] and "svg" in err[0]


@pytest.mark.parametrize("flag", ["--out", "--csv"])
def test_an_output_that_cannot_be_written_is_bad_input(
    sweep: Path, tmp_path: Path, flag: str, capsys: pytest.CaptureFixture
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    target = blocker / ("c.png" if flag == "--out" else "c.csv")
    other = ["--csv", str(tmp_path / "c.csv")] if flag == "--out" else ["--out", str(tmp_path / "c.png")]
    assert main([str(sweep), flag, str(target), *other]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"wqmix plot: {flag} {target}: cannot write it (File exists)"]


def test_usage_error_is_one_line(capsys: pytest.CaptureFixture) -> None:
    assert main(["--metric"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_bootstrap_ci_brackets_mean_and_is_reproducible() -> None:
    values = np.random.default_rng(1).normal(size=(5, 7))
    low, high = bootstrap_ci(values)
    assert np.all(low <= values.mean(axis=0)) and np.all(values.mean(axis=0) <= high)
    again = bootstrap_ci(values)
    assert np.array_equal(low, again[0]) and np.array_equal(high, again[1])


@pytest.mark.parametrize(
    ("steps", "text"), [(0, "0"), (500, "500"), (1500, "1.5k"), (20_000, "20k"), (2_500_000, "2.5M")]
)
def test_format_steps(steps: int, text: str) -> None:
    assert format_steps(steps) == text
