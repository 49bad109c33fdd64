"""Predator-prey with punishment: shapes, the catch rule, freezing, episode ends, seeding.

Scenes are set with ``PredatorPrey.place``. A prey in a corner whose two neighbours hold
agents cannot move, which keeps scripted scenes deterministic.
"""
import numpy as np
import pytest

from wqmix_cli.config import PredatorPreyConfig
from wqmix_cli.envs.predator_prey import CATCH, COLOURS, PredatorPrey

RIGHT, DOWN, LEFT, UP, STAY = 0, 1, 2, 3, 4


def make(agents: list, prey: list, **cfg) -> PredatorPrey:
    env = PredatorPrey(PredatorPreyConfig(n_agents=len(agents), n_prey=len(prey), **cfg))
    env.reset(seed=0)
    env.place(agents=agents, prey=prey)
    return env


def grid_of(env: PredatorPrey) -> np.ndarray:
    """The state as ``[grid, grid, 3]``."""
    return env.observe().state.reshape(env.grid, env.grid, 3)


def test_default_shapes() -> None:
    env = PredatorPrey(PredatorPreyConfig())
    info = env.info()
    sizes = (info.n_agents, info.obs_dim, info.state_dim, info.n_actions, info.episode_limit)
    assert sizes == (8, 75, 300, 6, 200)
    ob = env.reset(seed=1)
    assert ob.obs.shape == (8, 75) and ob.obs.dtype == np.float32
    assert ob.state.shape == (300,) and ob.state.dtype == np.float32
    assert ob.avail.shape == (8, 6) and ob.avail.all()
    state = ob.state.reshape(10, 10, 3)
    assert state[..., 0].sum() == 8 and state[..., 1].sum() == 8 and state[..., 2].sum() == 0
    # Each agent sees itself at the centre of its window.
    assert np.all(ob.obs.reshape(8, 5, 5, 3)[:, 2, 2, 0] == 1)


def test_non_default_shapes() -> None:
    env = PredatorPrey(PredatorPreyConfig(grid_size=6, sight=1, n_agents=3, n_prey=2))
    assert (env.info().obs_dim, env.info().state_dim) == (27, 108)
    ob = env.reset(seed=0)
    assert ob.obs.shape == (3, 27) and ob.state.shape == (108,) and ob.avail.shape == (3, 6)


def test_too_many_units_for_the_grid_is_rejected() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        PredatorPrey(PredatorPreyConfig(grid_size=3, n_agents=5, n_prey=5))


def test_observation_window_is_agent_centred_and_zero_off_grid() -> None:
    env = make(agents=[(0, 0), (9, 9)], prey=[(0, 1)])
    window = env.observe().obs.reshape(2, 5, 5, 3)
    expected = np.zeros((5, 5, 3), dtype=np.float32)
    expected[2, 2, 0] = 1.0  # itself
    expected[2, 3, 1] = 1.0  # the prey one cell to the right
    np.testing.assert_array_equal(window[0], expected)
    state = grid_of(env)
    assert state[0, 0, 0] == 1 and state[9, 9, 0] == 1 and state[0, 1, 1] == 1 and state.sum() == 3


def test_place_rejects_shared_cells() -> None:
    env = PredatorPrey(PredatorPreyConfig(n_agents=2, n_prey=1))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="distinct"):
        env.place(agents=[(0, 0), (0, 0)], prey=[(5, 5)])


def test_capture_needs_two_adjacent_catchers_in_the_same_step() -> None:
    env = make(agents=[(0, 1), (1, 0)], prey=[(0, 0)])
    assert env.step(np.array([CATCH, STAY])) == (-2.0, False, False, {})
    assert env.step(np.array([STAY, CATCH])) == (-2.0, False, False, {})
    assert env.prey_alive.all() and env.agent_alive.all()
    assert env.step(np.array([CATCH, CATCH])) == (10.0, True, False, {})
    assert not env.prey_alive.any() and not env.agent_alive.any()


def test_non_adjacent_catch_gives_nothing() -> None:
    # Diagonal (1, 1) and distance-2 (0, 2) agents are not in the prey's 4-neighbourhood.
    env = make(agents=[(1, 1), (0, 2)], prey=[(0, 0)])
    reward, terminated, _, _ = env.step(np.array([CATCH, CATCH]))
    assert reward == 0.0 and not terminated and env.prey_alive.all()


def test_diagonal_helper_does_not_complete_a_capture() -> None:
    env = make(agents=[(0, 1), (1, 1)], prey=[(0, 0)])
    reward, _, _, _ = env.step(np.array([CATCH, CATCH]))
    assert reward == -2.0 and env.prey_alive.all() and env.agent_alive.all()


def test_agent_next_to_two_prey_joins_one_capture_only() -> None:
    # Agent 0 touches both prey; with agent 1 it catches prey 0 (lower index), so prey 1
    # is left with agent 2 alone: +10 - 2.
    env = make(agents=[(0, 1), (1, 0), (1, 2)], prey=[(0, 0), (0, 2)])
    reward, _, _, _ = env.step(np.array([CATCH, CATCH, CATCH]))
    assert reward == 8.0
    np.testing.assert_array_equal(env.prey_alive, [False, True])
    np.testing.assert_array_equal(env.agent_alive, [False, False, True])


def test_all_adjacent_catchers_are_frozen() -> None:
    env = make(agents=[(4, 5), (5, 4), (5, 6), (0, 0)], prey=[(5, 5), (9, 9)])
    reward, _, _, _ = env.step(np.array([CATCH, CATCH, CATCH, STAY]))
    assert reward == 10.0
    np.testing.assert_array_equal(env.agent_alive, [False, False, False, True])


def test_caught_prey_and_catchers_leave_the_grid() -> None:
    # Agents 0 and 1 catch the corner prey; agent 2 watches; agents 3 and 4 box in prey 1.
    env = make(agents=[(0, 1), (1, 0), (1, 1), (9, 8), (8, 9)], prey=[(0, 0), (9, 9)])
    reward, terminated, truncated, _ = env.step(np.array([CATCH, CATCH, STAY, STAY, STAY]))
    assert (reward, terminated, truncated) == (10.0, False, False)

    ob = env.observe()
    np.testing.assert_array_equal(ob.avail[:2], [[False, False, False, False, True, False]] * 2)
    assert ob.avail[2:].all()
    assert not ob.obs[:2].any()
    watcher = ob.obs[2].reshape(5, 5, 3)  # agent 2 at (1, 1): grid (r, c) is window (r + 1, c + 1)
    assert not watcher[1, 1].any() and not watcher[1, 2].any() and not watcher[2, 1].any()
    assert watcher[2, 2, 0] == 1
    state = grid_of(env)
    assert not state[0, 0].any() and not state[0, 1].any() and not state[1, 0].any()
    assert state[..., 0].sum() == 3 and state[..., 1].sum() == 1

    with pytest.raises(ValueError, match="unavailable"):
        env.step(np.array([CATCH, STAY, STAY, STAY, STAY]))
    # The freed cell can be entered.
    env.step(np.array([STAY, STAY, UP, STAY, STAY]))
    np.testing.assert_array_equal(env.agent_pos[2], [0, 1])

    reward, terminated, truncated, _ = env.step(np.array([STAY, STAY, STAY, CATCH, CATCH]))
    assert (reward, terminated, truncated) == (10.0, True, False)


CORNER_SCENE = {
    # Four boxed-in corner prey, each with two agents beside it, and four prey in the middle.
    "agents": [(0, 1), (1, 0), (0, 8), (1, 9), (9, 1), (8, 0), (9, 8), (8, 9)],
    "prey": [(0, 0), (0, 9), (9, 0), (9, 9), (4, 4), (4, 5), (5, 4), (5, 5)],
}


def test_scripted_optimal_episode_returns_40_with_default_sizes() -> None:
    env = make(**CORNER_SCENE)
    total, terminated = 0.0, False
    for pair in range(4):
        actions = np.full(8, STAY)
        actions[2 * pair : 2 * pair + 2] = CATCH
        reward, terminated, truncated, _ = env.step(actions)
        assert reward == 10.0 and not truncated
        total += reward
        assert terminated == (pair == 3)  # ends when every agent is frozen
    assert total == 40.0
    assert env.prey_alive.sum() == 4 and not env.agent_alive.any()


def test_everyone_catching_at_once_also_gives_40() -> None:
    env = make(**CORNER_SCENE)
    assert env.step(np.full(8, CATCH)) == (40.0, True, False, {})


def test_truncation_at_the_episode_limit() -> None:
    env = PredatorPrey(PredatorPreyConfig(episode_limit=5))
    env.reset(seed=3)
    for t in range(1, 6):
        reward, terminated, truncated, _ = env.step(np.full(8, STAY))
        assert reward == 0.0 and not terminated
        assert truncated == (t == 5)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.full(8, STAY))


def test_walls_and_occupied_cells_block_movement() -> None:
    env = make(agents=[(0, 0), (2, 0), (9, 0)], prey=[(0, 1)])
    env.step(np.array([UP, STAY, DOWN]))  # walls above (0, 0) and below (9, 0)
    env.step(np.array([LEFT, STAY, LEFT]))
    np.testing.assert_array_equal(env.agent_pos, [[0, 0], [2, 0], [9, 0]])
    env.place(agents=[(0, 0), (2, 0), (9, 0)], prey=[(0, 1)])
    env.step(np.array([RIGHT, STAY, STAY]))  # the prey is in the way
    np.testing.assert_array_equal(env.agent_pos[0], [0, 0])
    env.place(agents=[(1, 0), (2, 0), (9, 0)], prey=[(5, 5)])
    env.step(np.array([DOWN, STAY, RIGHT]))  # agent 1 is in the way; agent 2 moves freely
    np.testing.assert_array_equal(env.agent_pos, [[1, 0], [2, 0], [9, 1]])


def rollout(seed: int) -> list:
    env = PredatorPrey(PredatorPreyConfig())
    policy = np.random.default_rng(123)
    ob = env.reset(seed=seed)
    trace = [ob.obs.copy()]
    for _ in range(30):
        actions = np.array([policy.choice(np.flatnonzero(a)) for a in ob.avail])
        reward, terminated, truncated, _ = env.step(actions)
        ob = env.observe()
        trace += [reward, ob.obs.copy(), ob.state.copy()]
        if terminated or truncated:
            break
    return trace


def test_seeding_reproduces_episodes() -> None:
    first, second, other = rollout(7), rollout(7), rollout(8)
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_render_draws_agents_and_prey() -> None:
    env = make(agents=[(0, 0)], prey=[(9, 9)])
    image = env.render()
    assert image.shape == (160, 160, 3) and image.dtype == np.uint8
    assert tuple(image[8, 8]) == COLOURS["agent"]
    assert tuple(image[9 * 16 + 8, 9 * 16 + 8]) == COLOURS["prey"]
    assert tuple(image[8, 9 * 16 + 8]) == COLOURS["empty"]
