"""`wqmix evaluate`: the table, the JSON line, the GIF, bad input, and the matrix-game tables."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from wqmix_cli.actor import Actor
from wqmix_cli.buffer import EpisodeBatch
from wqmix_cli.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from wqmix_cli.cli import main
from wqmix_cli.config import validate
from wqmix_cli.envs import make_vector_env
from wqmix_cli.envs.base import EnvInfo
from wqmix_cli.evaluate import run_greedy
from wqmix_cli.learner import wqmix_loss
from wqmix_cli.policy import WQMIXPolicy
from wqmix_cli.runner import EpisodeRunner

# Small networks and a few short episodes: the runs exist to be loaded, not to learn.
TINY = [
    "test_episodes=1", "learner.batch_size=2", "learner.buffer_size=4", "learner.hidden_dim=16",
    "learner.mixer_embed_dim=8", "learner.hypernet_dim=16", "learner.central_mixer_dim=32",
]


def _train(run_dir: Path, *overrides: str) -> Path:
    assert main(["train", *overrides, *TINY, f"hydra.run.dir={run_dir}"]) == 0
    assert (run_dir / "checkpoints" / "latest").is_file()
    return run_dir


@pytest.fixture(scope="module")
def mpe_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory.mktemp("mpe") / "run", "env.max_cycles=8", "t_max=48", "test_interval=24")


@pytest.fixture(scope="module")
def matrix_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory.mktemp("matrix") / "run", "env=matrix", "t_max=40", "test_interval=20")


def _policy_from(run: Path) -> tuple[WQMIXPolicy, dict]:
    state, _ = load_checkpoint(latest_checkpoint(run))
    cfg = validate(state["config"])
    policy = WQMIXPolicy(EnvInfo(**state["env_info"]), cfg.learner, central=cfg.agent.name != "qmix")
    policy.load_state_dict(state["policy"])
    return policy, state


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("wqmix: ") and "Traceback" not in err[0]
    return err[0]


@pytest.mark.slow
def test_table_mean_is_run_greedys_mean(mpe_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json = tmp_path / "eval.json"
    code = main(["evaluate", f"checkpoint={mpe_run}", "episodes=5", "seed=7", f"json={out_json}"])
    assert code == 0
    printed = capsys.readouterr().out

    policy, state = _policy_from(mpe_run)
    cfg = validate(state["config"])
    env = make_vector_env(cfg.env)
    try:
        returns = run_greedy(EpisodeRunner(env, Actor(policy, torch.device("cpu"))), 5, seed=7)["returns"]
    finally:
        env.close()
    expected = returns.astype(np.float64)

    record = json.loads(out_json.read_text())
    assert record["episodes"] == 5 and record["seed"] == 7
    assert record["return"]["mean"] == float(expected.mean())
    assert record["return"]["min"] == float(expected.min())
    assert record["return"]["max"] == float(expected.max())
    low, high = record["return"]["ci95"]
    assert low <= record["return"]["mean"] <= high
    assert "battle_won" not in record  # MPE has no battles

    row = next(line for line in printed.splitlines() if line.startswith("return "))
    assert float(row.split()[1]) == pytest.approx(float(expected.mean()), rel=1e-3)
    assert "bootstrap" in printed


@pytest.mark.slow
def test_json_dash_prints_only_the_json_line(mpe_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", f"checkpoint={mpe_run / 'checkpoints' / 'latest'}", "episodes=2", "json=-"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["return"]["std"] is not None


@pytest.mark.slow
def test_render_writes_a_gif_of_one_episode(mpe_run: Path, tmp_path: Path) -> None:
    gif = tmp_path / "sub" / "episode.gif"
    assert main(["evaluate", f"checkpoint={mpe_run}", "episodes=1", "render=true", f"gif={gif}"]) == 0
    frames = iio.imread(gif, index=None)
    assert frames.ndim == 4 and frames.shape[0] > 1 and frames.shape[-1] == 3


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_gif_that_cannot_be_written_is_one_line(mpe_run: Path) -> None:
    """Only our line: imageio's writer, left holding a file it could not open (/proc takes
    no new files), printed a second traceback when it was collected. In a process of its own:
    under pytest, pytest would catch that complaint itself."""
    proc = subprocess.run([sys.executable, "-m", "wqmix_cli", "evaluate", f"checkpoint={mpe_run}", "render=true",
                           "gif=/proc/wqmix-episode.gif"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr == "wqmix: evaluate: gif=/proc/wqmix-episode.gif: cannot write it (No such file or directory)\n"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "checkpoint=PATH is required"),
        (["checkpoint=/no/such/run"], "no such file or folder"),
        (["checkpoint=run", "episodes=0"], "must be positive"),
        (["checkpoint=run", "episodes=many"], "must be an integer"),
        (["checkpoint=run", "episods=3"], "did you mean episodes"),
        (["checkpoint=run", "--json"], "expected key=value"),
        (["checkpoint=run", "render=maybe"], "true or false"),
        (["checkpoint=run", "device=tpu"], "allowed: cpu, cuda, auto"),
        (["checkpoint=run", "epsilon=2"], "epsilon=2 must be a number in [0, 1]"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", *args]) == 2
    assert says in _one_error_line(capsys)


@pytest.mark.slow
@pytest.mark.parametrize(("override", "says"), [("env.nope=1", "env.nope"), ("env.n_agents=4", "env sizes")])
def test_env_overrides_that_do_not_fit_exit_2(
    mpe_run: Path, override: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", f"checkpoint={mpe_run}", override]) == 2
    assert says in _one_error_line(capsys)


@pytest.mark.slow
def test_smax_settings_that_this_machine_cannot_run_exit_2(
    mpe_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked before any env is built, as `wqmix train` checks them: a map jaxmarl does not
    know, and battles on a GPU that jax does not see."""
    smax = pytest.importorskip("wqmix_cli.envs.smax")
    state, _ = load_checkpoint(latest_checkpoint(mpe_run))
    state["config"]["env"] = {"name": "smax", "map_name": "3m", "n_envs": 1, "workers": 0, "t_max": 48,
                              "jax_device": "cpu"}
    save_checkpoint(tmp_path / "checkpoints", 48, state)
    assert main(["evaluate", f"checkpoint={tmp_path}", "env.map_name=4m"]) == 2
    assert "env.map_name='4m' is not a SMAX map; allowed:" in _one_error_line(capsys)
    if "gpu" in smax.jax_platforms():
        pytest.skip("this jax sees a GPU: env.jax_device=gpu is allowed here")
    assert main(["evaluate", f"checkpoint={tmp_path}", "env.jax_device=gpu"]) == 2
    assert _one_error_line(capsys) == (
        "wqmix: evaluate: env.jax_device='gpu', but this jax has no such device; allowed here: cpu"
    )


def test_empty_folder_is_not_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", f"checkpoint={tmp_path}"]) == 2
    assert "no complete checkpoint" in _one_error_line(capsys)


@pytest.mark.slow
def test_matrix_run_prints_q_tot_and_q_star_tables(
    matrix_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = tmp_path / "m.json"
    assert main(["evaluate", f"checkpoint={matrix_run}", "episodes=2", f"json={out_json}"]) == 0
    printed = capsys.readouterr().out.splitlines()
    record = json.loads(out_json.read_text())

    for title, key in (("Q_tot", "q_tot"), ("Q*", "q_star")):
        start = next(i for i, line in enumerate(printed) if line.startswith(f"{title} ("))
        header, rows = printed[start + 1], printed[start + 2 : start + 5]
        assert header.split() == ["0", "1", "2"]
        table = np.array([[float(x) for x in row.split()[1:]] for row in rows])
        assert table.shape == (3, 3)
        np.testing.assert_allclose(table, np.array(record[key]), atol=1e-3)

    # Each cell is what the learner's own loss code computes for that joint action.
    policy, _ = _policy_from(matrix_run)
    for u0, u1 in [(0, 0), (1, 2), (2, 0)]:
        batch = EpisodeBatch(
            obs=torch.ones(1, 2, 2, 1), state=torch.ones(1, 2, 1), avail=torch.ones(1, 2, 2, 3, dtype=torch.bool),
            actions=torch.tensor([[[u0, u1]]]), reward=torch.zeros(1, 1),
            terminated=torch.ones(1, 1, dtype=torch.bool), filled=torch.ones(1, 1, dtype=torch.bool),
        )
        with torch.no_grad():
            parts = wqmix_loss(policy, batch, "cwqmix", 0.1, 0.99)
        assert record["q_tot"][u0][u1] == pytest.approx(parts.q_tot_mean.item(), abs=1e-5)


@pytest.mark.slow
def test_matrix_run_cannot_render(matrix_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", f"checkpoint={matrix_run}", "episodes=1", "render=true"]) == 2
    assert re.search(r"matrix cannot render", _one_error_line(capsys))
