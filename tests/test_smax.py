"""SMAXVectorEnv over jaxmarl's HeuristicEnemySMAX: shapes, masks, win/timeout flags, inactive envs.

Compiling a map takes 10-20 s, so each map is built once per module; the second map's
tests (2s3z) are marked slow.
"""
from __future__ import annotations

import numpy as np
import pytest

from wqmix_cli.config import SMAXConfig
from wqmix_cli.envs.smax import SMAXVectorEnv

E = 8
STOP = 4


@pytest.fixture(scope="module")
def env3m() -> SMAXVectorEnv:
    return SMAXVectorEnv(SMAXConfig(map_name="3m", n_envs=E))


@pytest.fixture(scope="module")
def env2s3z() -> SMAXVectorEnv:
    return SMAXVectorEnv(SMAXConfig(map_name="2s3z", n_envs=2))


def unit_alive(env: SMAXVectorEnv) -> np.ndarray:
    """``[E, allies + enemies]`` bool, read from the env's JAX state (test-only peek)."""
    return np.asarray(env._state.state.unit_alive)


def random_actions(rng: np.random.Generator, avail: np.ndarray) -> np.ndarray:
    return np.argmax(rng.random(avail.shape) * avail, axis=-1)


def focus_fire(avail: np.ndarray) -> np.ndarray:
    """Every ally attacks the lowest-numbered enemy in range, else moves east (action 1) towards them."""
    attack = avail[..., 5:]
    return np.where(attack.any(-1), 5 + np.argmax(attack, axis=-1), 1)


def run(env: SMAXVectorEnv, seed: int, policy) -> tuple[int, np.ndarray, object]:
    """Play every env to its end; returns (steps, returns [E], last BatchStep)."""
    obs = env.reset(seed)
    active = np.ones(env.n_envs, dtype=bool)
    returns = np.zeros(env.n_envs)
    steps = 0
    while active.any():
        out = env.step(policy(obs.avail), active)
        returns += out.reward
        obs = out.observation
        active &= ~(out.terminated | out.truncated)
        steps += 1
        assert steps <= env.info().episode_limit
    return steps, returns, out


@pytest.mark.parametrize(
    "fixture, sizes",
    [("env3m", (3, 75, 72, 8)), pytest.param("env2s3z", (5, 127, 120, 10), marks=pytest.mark.slow)],
)
def test_shapes_and_dtypes(request, fixture, sizes):
    env = request.getfixturevalue(fixture)
    n, o, s, a = sizes
    info = env.info()
    assert (info.n_agents, info.obs_dim, info.state_dim, info.n_actions, info.episode_limit) == (n, o, s, a, 100)
    e = env.n_envs
    obs = env.reset(0)
    assert obs.obs.shape == (e, n, o) and obs.obs.dtype == np.float32
    assert obs.state.shape == (e, s) and obs.state.dtype == np.float32
    assert obs.avail.shape == (e, n, a) and obs.avail.dtype == np.bool_
    out = env.step(np.full((e, n), STOP), np.ones(e, dtype=bool))
    assert out.reward.shape == (e,) and out.reward.dtype == np.float32
    assert out.terminated.dtype == np.bool_ and out.truncated.dtype == np.bool_
    assert out.info["battle_won"].shape == (e,)
    assert out.observation.obs.flags.writeable


def test_dead_ally_sees_zeros_and_may_only_stop(env3m):
    rng = np.random.default_rng(0)
    obs = env3m.reset(1)
    active = np.ones(E, dtype=bool)
    for _ in range(100):
        out = env3m.step(random_actions(rng, obs.avail), active)
        obs = out.observation
        dead = ~unit_alive(env3m)[:, :3]
        if dead.any():
            break
    assert dead.any(), "random play should lose an ally within 100 steps"
    stop_only = np.zeros(env3m.info().n_actions, dtype=bool)
    stop_only[STOP] = True
    assert (obs.avail[dead] == stop_only).all()
    assert (obs.obs[dead] == 0).all()
    assert (obs.obs[~dead] != 0).any(axis=-1).all()
    assert obs.avail[~dead][:, :4].all(), "living allies may move"


def test_scripted_battle_win_matches_final_units(env3m):
    steps, returns, out = run(env3m, 0, focus_fire)
    alive = unit_alive(env3m)
    won = ~alive[:, 3:].any(-1) & alive[:, :3].any(-1)
    np.testing.assert_array_equal(out.info["battle_won"], won.astype(np.float32))
    assert won.any() and not won.all(), "seed 0 gives both wins and losses"
    assert (out.terminated & ~out.truncated).all(), "every battle ended by elimination"
    # Team reward: the enemies' health removed (1.0 in all) plus 1.0 for the win.
    np.testing.assert_allclose(returns[won], 2.0, atol=1e-4)
    assert (returns[~won] < 1.0).all()


@pytest.mark.slow
def test_2s3z_battles_end_by_elimination_or_limit(env2s3z):
    steps, _, out = run(env2s3z, 3, focus_fire)
    assert steps <= 100
    assert (out.terminated ^ out.truncated).all()
    alive = unit_alive(env2s3z)
    won = ~alive[:, 5:].any(-1) & alive[:, :5].any(-1)
    np.testing.assert_array_equal(out.info["battle_won"], won.astype(np.float32))


def test_random_episodes_end_within_the_limit(env3m):
    rng = np.random.default_rng(1)
    steps, _, out = run(env3m, 10, lambda avail: random_actions(rng, avail))
    assert steps <= 100
    assert (out.terminated ^ out.truncated).all()


def test_time_limit_is_truncation_and_a_finished_env_stays_put(env3m):
    import jax.numpy as jnp

    obs = env3m.reset(5)
    # Jump every battle to 99 steps taken (same dtype, so no recompile): the next step is the
    # 100th and last (jaxmarl on its own would allow a 101st).
    state = env3m._state
    env3m._state = state.replace(state=state.state.replace(step=jnp.full_like(state.state.step, 99)))
    out = env3m.step(np.full((E, 3), STOP), np.ones(E, dtype=bool))
    assert out.truncated.all() and not out.terminated.any()
    assert not out.info["battle_won"].any()
    again = env3m.step(np.full((E, 3), STOP), np.ones(E, dtype=bool))
    assert again.truncated.all() and (again.reward == 0).all()
    np.testing.assert_array_equal(again.observation.obs, out.observation.obs)
    np.testing.assert_array_equal(again.observation.state, out.observation.state)
    assert obs.obs.shape == again.observation.obs.shape


def test_inactive_envs_do_not_change(env3m):
    rng = np.random.default_rng(2)
    obs = env3m.reset(20)
    first = env3m.step(focus_fire(obs.avail), np.ones(E, dtype=bool))
    active = np.arange(E) % 2 == 0
    before = unit_alive(env3m).copy()
    last = first
    for _ in range(8):
        last = env3m.step(random_actions(rng, last.observation.avail), active)
        idle = ~active
        assert (last.reward[idle] == 0).all()
        np.testing.assert_array_equal(last.observation.obs[idle], first.observation.obs[idle])
        np.testing.assert_array_equal(last.observation.state[idle], first.observation.state[idle])
        np.testing.assert_array_equal(last.observation.avail[idle], first.observation.avail[idle])
        np.testing.assert_array_equal(unit_alive(env3m)[idle], before[idle])
    assert (last.observation.state[active] != first.observation.state[active]).any(axis=-1).all()


def test_same_seed_same_battle(env3m):
    a = run(env3m, 42, focus_fire)
    b = run(env3m, 42, focus_fire)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])


def test_unknown_map_lists_known_maps():
    with pytest.raises(ValueError) as raised:
        SMAXVectorEnv(SMAXConfig(map_name="4m_vs_nothing"))
    message = str(raised.value)
    assert "4m_vs_nothing" in message
    for name in ("3m", "2s3z", "5m_vs_6m", "smacv2_5_units"):
        assert name in message


def test_the_battles_live_on_the_cpu_by_default(env3m):
    import jax

    env3m.reset(seed=3)
    env3m.step(np.full((E, 3), STOP), np.ones(E, dtype=bool))
    devices = {d for leaf in jax.tree.leaves((env3m._keys, env3m._state)) for d in leaf.devices()}
    assert devices == {jax.devices("cpu")[0]}
