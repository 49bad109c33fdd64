"""SMAX frames: a drawn battle's size and colours, frames that follow the battle, attack
lines decoded from jaxmarl's actions, and the GIF of `wqmix evaluate render=true`."""
from __future__ import annotations

import re
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from wqmix_cli.cli import main
from wqmix_cli.config import SMAXConfig
from wqmix_cli.envs.smax_render import FRAME_PX, TEAM_COLOURS, Battle, attack_targets, outcome

# Through smax.py's quiet import: jaxmarl's own import resets sys.stdout/stderr.
smax = pytest.importorskip("wqmix_cli.envs.smax")

TINY_SMAX = [
    "env=smax", "env.n_envs=2", "t_max=100", "test_interval=100", "test_episodes=1", "learner.batch_size=2",
    "learner.buffer_size=4", "learner.hidden_dim=16", "learner.mixer_embed_dim=8", "learner.hypernet_dim=16",
    "learner.central_mixer_dim=32",
]
STOP = 4  # SMAX's no-move action; attack actions follow it


@pytest.fixture(scope="module")
def env3m() -> smax.SMAXEnv:
    return smax.SMAXEnv(SMAXConfig(map_name="3m"), render_mode="rgb_array")


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.uint8)


def _has_colour(frame: np.ndarray, hex_colour: str) -> bool:
    return bool(np.all(frame == _rgb(hex_colour), axis=-1).any())


def test_a_reset_battle_is_an_rgb_frame_with_both_teams(env3m: smax.SMAXEnv) -> None:
    env3m.reset(0)
    frame = env3m.render()
    assert frame.shape == (FRAME_PX, FRAME_PX, 3) and frame.dtype == np.uint8
    assert len(np.unique(frame.reshape(-1, 3), axis=0)) > 10
    assert _has_colour(frame, TEAM_COLOURS[0]) and _has_colour(frame, TEAM_COLOURS[1])


def test_frames_follow_the_battle_and_repeat_with_the_seed(env3m: smax.SMAXEnv) -> None:
    ob = env3m.reset(3)
    first = env3m.render()
    frames = []
    for _ in range(4):
        # Attack the first enemy in range, else stop: the battle changes either way (the enemies advance).
        actions = [a[STOP + 1 :].argmax() + STOP + 1 if a[STOP + 1 :].any() else STOP for a in ob.avail]
        env3m.step(np.array(actions))
        frames.append(env3m.render())
        ob = env3m.observe()
    assert all(not np.array_equal(a, b) for a, b in zip([first, *frames], frames))
    env3m.reset(3)
    np.testing.assert_array_equal(env3m.render(), first)


def test_attack_lines_join_the_units_jaxmarl_decodes() -> None:
    # 3 allies and 3 enemies, 5 movement actions: an ally's attack k hits enemy k (unit 3 + k),
    # an enemy's attack k hits ally 2 - k (enemies see the allies in reverse order).
    actions = np.array([0, 5, 7, 5, 6, 4])
    np.testing.assert_array_equal(attack_targets(actions, n_allies=3, n_movement_actions=5), [-1, 3, 5, 2, 1, -1])


@pytest.mark.parametrize(("alive", "says"), [([1, 0, 1, 1], ""), ([1, 0, 0, 0], "won"),
                                             ([0, 0, 0, 1], "lost"), ([0, 0, 0, 0], "draw")])
def test_outcome_once_a_side_is_wiped_out(alive: list[int], says: str) -> None:
    battle = Battle(positions=np.zeros((4, 2)), alive=np.array(alive, dtype=bool), health=np.ones(4),
                    types=np.zeros(4, dtype=np.int64), targets=np.full(4, -1), step=0)
    assert outcome(battle, n_allies=2) == says


def test_render_needs_the_rgb_array_mode() -> None:
    with pytest.raises(RuntimeError, match="render_mode='rgb_array'"):
        smax.SMAXEnv(SMAXConfig(map_name="3m")).render()
    with pytest.raises(ValueError, match="rgb_array"):
        smax.SMAXEnv(SMAXConfig(map_name="3m"), render_mode="human")


@pytest.fixture(scope="module")
def smax_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Trained outside capsys, as in test_evaluate_cli: `wqmix train` run under capsys breaks pytest's
    # capture teardown ("I/O operation on closed file").
    run = tmp_path_factory.mktemp("smax") / "run"
    assert main(["train", *TINY_SMAX, f"hydra.run.dir={run}"]) == 0
    return run


@pytest.mark.slow
def test_evaluate_writes_a_gif_of_one_smax_episode(
    smax_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gif = tmp_path / "smax.gif"
    assert main(["evaluate", f"checkpoint={smax_run}", "render=true", "episodes=2", f"gif={gif}"]) == 0
    steps = int(re.search(r"one greedy episode, (\d+) steps", capsys.readouterr().out).group(1))
    frames = iio.imread(gif, index=None)
    # The title counts the steps, so no two frames are alike and none is merged away.
    assert frames.shape == (steps + 1, FRAME_PX, FRAME_PX, 3) and steps >= 1
