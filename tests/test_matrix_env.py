"""The one-step matrix game: rewards are the payoff cells, shapes, one-step episodes."""
import numpy as np
import pytest

from wqmix_cli.config import PAPER_PAYOFF, MatrixConfig
from wqmix_cli.envs.matrix import MatrixGame, payoff_table


def test_payoff_table_is_the_configured_matrix() -> None:
    table = payoff_table(MatrixConfig())
    assert table.shape == (3, 3)
    np.testing.assert_array_equal(table, np.array(PAPER_PAYOFF))


def test_payoff_table_rejects_a_non_square_payoff() -> None:
    with pytest.raises(ValueError, match="square"):
        payoff_table(MatrixConfig(payoff=[[1.0, 2.0], [3.0]]))


def test_info_and_shapes() -> None:
    env = MatrixGame(MatrixConfig())
    assert (env.info().n_agents, env.info().obs_dim, env.info().state_dim) == (2, 1, 1)
    assert (env.info().n_actions, env.info().episode_limit) == (3, 1)
    ob = env.reset(seed=0)
    assert ob.obs.shape == (2, 1) and ob.obs.dtype == np.float32
    assert ob.state.shape == (1,) and ob.state.dtype == np.float32
    assert ob.avail.shape == (2, 3) and ob.avail.dtype == bool and ob.avail.all()
    np.testing.assert_array_equal(ob.obs, np.ones((2, 1)))


@pytest.mark.parametrize("u1", range(3))
@pytest.mark.parametrize("u2", range(3))
def test_reward_is_the_payoff_cell_and_the_game_ends(u1: int, u2: int) -> None:
    env = MatrixGame(MatrixConfig())
    env.reset()
    reward, terminated, truncated, info = env.step(np.array([u1, u2]))
    assert reward == PAPER_PAYOFF[u1][u2]
    assert terminated is True and truncated is False
    assert info == {}
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.array([u1, u2]))


def test_custom_payoff_sets_the_action_count() -> None:
    env = MatrixGame(MatrixConfig(payoff=[[1.0, 0.0], [0.0, 5.0]]))
    assert env.info().n_actions == 2
    assert env.reset().avail.shape == (2, 2)
    assert env.step(np.array([1, 1]))[0] == 5.0
    env.reset()
    assert env.step(np.array([1, 0]))[0] == 0.0


def test_out_of_range_action_and_render_raise() -> None:
    env = MatrixGame(MatrixConfig())
    env.reset()
    with pytest.raises(ValueError):
        env.step(np.array([0, 3]))
    with pytest.raises(NotImplementedError):
        env.render()
