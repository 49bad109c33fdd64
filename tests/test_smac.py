"""SMACEnv's mapping of the SMAC API, its crash restarts and its missing-package errors.

No StarCraft II here: ``FakeStarCraft2Env`` stands in for the game.
"""
from __future__ import annotations

import logging
import sys
import types

import numpy as np
import pytest

from wqmix_cli.config import SMACConfig
from wqmix_cli.envs.smac import EpisodeRestart, MissingDependency, SMACEnv

N, O, S, A, LIMIT = 3, 6, 10, 9, 5


class FakeStarCraft2Env:
    """A stand-in following smacv2's documented ``StarCraft2Env`` API, not the game.

    ``get_env_info``, ``reset``, ``get_obs`` (list of N arrays), ``get_state``,
    ``get_avail_actions`` (list of N int lists; a dead agent has only the no-op, index 0),
    ``step(actions) -> (reward, terminated, info)`` with ``info["battle_won"]``, and
    ``info["episode_limit"]`` on a timeout only when built with ``continuing_episode=True``,
    as SMAC does. Agent 2 dies at step 2. ``win_at``: the step at which the battle is won;
    ``fail_at``: the step, counted over the game's life, at which it "crashes" (raises
    ConnectionError);
    ``silent_fail_at``: the step at which it returns SMAC's own post-relaunch answer
    ``(0, True, {})``.
    """

    def __init__(self, map_name: str = "3m", seed: int | None = None, continuing_episode: bool = False,
                 capability_config: dict | None = None, win_at: int | None = None,
                 fail_at: int | None = None, silent_fail_at: int | None = None) -> None:
        self.map_name, self.seed, self.continuing_episode = map_name, seed, continuing_episode
        self.capability_config = capability_config
        self.win_at, self.fail_at, self.silent_fail_at = win_at, fail_at, silent_fail_at
        self.t = self.life = 0
        self.closed = False

    def get_env_info(self) -> dict:
        return {"n_agents": N, "n_actions": A, "obs_shape": O, "state_shape": S, "episode_limit": LIMIT}

    def reset(self):
        self.t = 0
        return self.get_obs(), self.get_state()

    def get_obs(self) -> list[np.ndarray]:
        return [np.full(O, self.t + i, dtype=np.float64) for i in range(N)]

    def get_state(self) -> np.ndarray:
        return np.arange(S, dtype=np.float64) + self.t

    def get_avail_actions(self) -> list[list[int]]:
        alive = [1] * (A - 1)
        return [[0] + alive, [0] + alive, [1] + [0] * (A - 1) if self.t >= 2 else [0] + alive]

    def step(self, actions):
        assert len(actions) == N and all(isinstance(a, int) for a in actions)
        self.t += 1
        self.life += 1
        if self.life == self.fail_at:
            raise ConnectionError("websocket timed out")
        if self.t == self.silent_fail_at:
            return 0, True, {}
        info = {"battle_won": False, "dead_allies": int(self.t >= 2), "dead_enemies": 0}
        if self.t == self.win_at:
            info["battle_won"] = True
            return 1.5, True, info
        if self.t >= LIMIT:
            if self.continuing_episode:
                info["episode_limit"] = True
            return 0.5, True, info
        return 0.5, False, info

    def close(self) -> None:
        self.closed = True


class Factory:
    """Builds FakeStarCraft2Envs, recording each; the k-th gets ``plan[k]`` (or the last entry)."""

    def __init__(self, *plan: dict) -> None:
        self.plan = list(plan)
        self.built: list[FakeStarCraft2Env] = []

    def __call__(self, **kwargs) -> FakeStarCraft2Env:
        options = self.plan[min(len(self.built), len(self.plan) - 1)] if self.plan else {}
        env = FakeStarCraft2Env(**kwargs, **options)
        self.built.append(env)
        return env


def run_episode(env: SMACEnv) -> tuple[float, bool, bool, dict]:
    total = 0.0
    for _ in range(LIMIT):
        reward, terminated, truncated, info = env.step(np.zeros(N, dtype=np.int64))
        total += reward
        if terminated or truncated:
            return total, terminated, truncated, info
    raise AssertionError("the episode did not end")


def test_shapes_and_avail_mask():
    env = SMACEnv(SMACConfig(map_name="3m"), env_factory=Factory())
    info = env.info()
    assert (info.n_agents, info.obs_dim, info.state_dim, info.n_actions, info.episode_limit) == (N, O, S, A, LIMIT)
    obs = env.reset()
    assert obs.obs.shape == (N, O) and obs.obs.dtype == np.float32
    assert obs.state.shape == (S,) and obs.state.dtype == np.float32
    assert obs.avail.shape == (N, A) and obs.avail.dtype == np.bool_
    env.step(np.zeros(N, dtype=np.int64))
    env.step(np.zeros(N, dtype=np.int64))
    dead = env.observe().avail[2]
    assert dead[0] and not dead[1:].any()
    np.testing.assert_array_equal(env.observe().obs[1], np.full(O, 3.0))


def test_timeout_is_truncation_not_termination():
    factory = Factory()
    env = SMACEnv(SMACConfig(), env_factory=factory)
    assert factory.built[0].continuing_episode, "SMAC flags timeouts only with continuing_episode=True"
    env.reset()
    total, terminated, truncated, info = run_episode(env)
    assert (terminated, truncated) == (False, True)
    assert info["battle_won"] == 0.0 and isinstance(info["battle_won"], float)
    assert total == pytest.approx(0.5 * LIMIT)


def test_win_is_termination_with_battle_won():
    env = SMACEnv(SMACConfig(), env_factory=Factory({"win_at": 3}))
    env.reset()
    total, terminated, truncated, info = run_episode(env)
    assert (terminated, truncated, info["battle_won"]) == (True, False, 1.0)
    assert total == pytest.approx(2.5)


def test_only_the_first_seed_rebuilds_the_env():
    factory = Factory()
    env = SMACEnv(SMACConfig(), env_factory=factory)
    env.reset(seed=7)
    assert [e.seed for e in factory.built] == [None, 7] and factory.built[0].closed
    env.reset()
    env.reset(seed=8)  # a new seed per episode must not relaunch the game
    assert len(factory.built) == 2 and not factory.built[-1].closed


def test_capability_config_is_passed_as_a_fresh_copy():
    capability = {"n_units": 5, "n_enemies": 5, "team_gen": {"dist_type": "weighted_teams"}}
    factory = Factory()
    SMACEnv(SMACConfig(map_name="10gen_protoss", capability_config=capability), env_factory=factory)
    given = factory.built[0].capability_config
    assert given == capability and given is not capability and given["team_gen"] is not capability["team_gen"]


def test_crash_mid_episode_restarts_the_game(caplog):
    factory = Factory({"fail_at": 2}, {})
    env = SMACEnv(SMACConfig(max_restarts=3), env_factory=factory)
    env.reset()
    env.step(np.zeros(N, dtype=np.int64))
    with caplog.at_level(logging.WARNING, logger="wqmix_cli.envs.smac"), pytest.raises(EpisodeRestart) as raised:
        env.step(np.zeros(N, dtype=np.int64))
    assert isinstance(raised.value.__cause__, ConnectionError)
    assert env.restarts == 1 and "restart 1" in caplog.text
    assert len(factory.built) == 2 and factory.built[0].closed and not factory.built[1].closed
    env.reset()
    _, terminated, truncated, _ = run_episode(env)
    assert truncated and not terminated


def test_smacs_silent_relaunch_also_restarts_the_episode():
    factory = Factory({"silent_fail_at": 1}, {})
    env = SMACEnv(SMACConfig(), env_factory=factory)
    env.reset()
    with pytest.raises(EpisodeRestart):
        env.step(np.zeros(N, dtype=np.int64))
    assert env.restarts == 1 and len(factory.built) == 2


def test_crash_on_reset_restarts_too():
    class FailingReset(FakeStarCraft2Env):
        def reset(self):
            raise ConnectionError("SC2 did not start")

    built = []
    env = SMACEnv(SMACConfig(max_restarts=1), env_factory=lambda **kw: built.append(kw) or FailingReset(**kw))
    with pytest.raises(EpisodeRestart):
        env.reset()
    with pytest.raises(ConnectionError):
        env.reset()
    assert env.restarts == 1 and len(built) == 2


def test_error_propagates_after_max_restarts_in_a_row():
    factory = Factory({"fail_at": 1})
    env = SMACEnv(SMACConfig(max_restarts=2), env_factory=factory)
    for _ in range(2):
        env.reset()
        with pytest.raises(EpisodeRestart):
            env.step(np.zeros(N, dtype=np.int64))
    env.reset()
    with pytest.raises(ConnectionError, match="websocket timed out"):
        env.step(np.zeros(N, dtype=np.int64))
    assert env.restarts == 2


def test_a_finished_episode_resets_the_count_in_a_row():
    factory = Factory({"fail_at": 1}, {"fail_at": LIMIT + 1}, {})
    env = SMACEnv(SMACConfig(max_restarts=1), env_factory=factory)
    env.reset()
    with pytest.raises(EpisodeRestart):
        env.step(np.zeros(N, dtype=np.int64))
    env.reset()
    run_episode(env)
    env.reset()
    with pytest.raises(EpisodeRestart):
        env.step(np.zeros(N, dtype=np.int64))
    assert env.restarts == 2 and len(factory.built) == 3


def test_missing_package_is_one_line_with_install_hint(monkeypatch):
    for name in ("smacv2", "smacv2.env", "smac", "smac.env"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingDependency) as raised:
        SMACEnv(SMACConfig())
    message = str(raised.value)
    assert "\n" not in message
    assert "smacv2" in message and "pip install git+https://github.com/oxwhirl/smacv2" in message
    assert "SC2PATH" in message


def _fake_package(monkeypatch, name: str, with_wrapper: bool) -> None:
    """Install a module tree ``name.env`` whose StarCraft2Env is the stand-in."""
    package, env_module = types.ModuleType(name), types.ModuleType(f"{name}.env")
    env_module.StarCraft2Env = FakeStarCraft2Env
    monkeypatch.setitem(sys.modules, name, package)
    monkeypatch.setitem(sys.modules, f"{name}.env", env_module)
    if with_wrapper:
        sc2_module = types.ModuleType(f"{name}.env.starcraft2")
        wrapper_module = types.ModuleType(f"{name}.env.starcraft2.wrapper")

        class Wrapper(FakeStarCraft2Env):
            """Stand-in for StarCraftCapabilityEnvWrapper."""

        wrapper_module.StarCraftCapabilityEnvWrapper = Wrapper
        monkeypatch.setitem(sys.modules, f"{name}.env.starcraft2", sc2_module)
        monkeypatch.setitem(sys.modules, f"{name}.env.starcraft2.wrapper", wrapper_module)


def test_missing_starcraft_is_one_line(monkeypatch, tmp_path):
    _fake_package(monkeypatch, "smacv2", with_wrapper=False)
    monkeypatch.setenv("SC2PATH", str(tmp_path / "StarCraftII"))
    with pytest.raises(MissingDependency) as raised:
        SMACEnv(SMACConfig())
    message = str(raised.value)
    assert "\n" not in message and "StarCraft II" in message and "SC2PATH" in message

    monkeypatch.delenv("SC2PATH")
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(MissingDependency, match="SC2PATH is unset"):
        SMACEnv(SMACConfig())


def test_package_choice_and_capability_wrapper(monkeypatch, tmp_path):
    monkeypatch.setenv("SC2PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "smacv2", None)
    monkeypatch.setitem(sys.modules, "smacv2.env", None)
    _fake_package(monkeypatch, "smac", with_wrapper=False)
    env = SMACEnv(SMACConfig(package="auto"))
    assert type(env._env) is FakeStarCraft2Env and env._env.map_name == "3s5z"
    with pytest.raises(MissingDependency, match="StarCraftCapabilityEnvWrapper"):
        SMACEnv(SMACConfig(package="smac", capability_config={"n_units": 5}))

    _fake_package(monkeypatch, "smacv2", with_wrapper=True)
    env = SMACEnv(SMACConfig(map_name="10gen_protoss", package="smacv2", capability_config={"n_units": 5}))
    assert type(env._env).__name__ == "Wrapper" and env._env.capability_config == {"n_units": 5}
    monkeypatch.setitem(sys.modules, "smac.env", None)
    with pytest.raises(MissingDependency, match="cannot be imported"):
        SMACEnv(SMACConfig(package="smac"))
