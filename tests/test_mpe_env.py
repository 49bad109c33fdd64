"""Our MPE env steps mpe2's raw scenarios (no PettingZoo checking wrappers): the same
observations, rewards and episode ends as mpe2's own parallel_env."""
import numpy as np
import pytest

from wqmix_cli.config import MPEConfig
from wqmix_cli.envs.mpe import MPEEnv


def _checked_parallel_env(scenario: str):
    from mpe2 import simple_reference_v3, simple_speaker_listener_v4, simple_spread_v3

    common = dict(max_cycles=25, continuous_actions=False)
    if scenario == "simple_spread":
        return simple_spread_v3.parallel_env(N=3, local_ratio=0.5, **common)
    if scenario == "simple_speaker_listener":
        return simple_speaker_listener_v4.parallel_env(**common)
    return simple_reference_v3.parallel_env(local_ratio=0.0, **common)


@pytest.mark.parametrize("scenario", ["simple_spread", "simple_speaker_listener", "simple_reference"])
def test_steps_match_mpe2s_checked_parallel_env(scenario: str) -> None:
    ours = MPEEnv(MPEConfig(scenario=scenario))
    theirs = _checked_parallel_env(scenario)
    rng = np.random.default_rng(0)
    first = ours.reset(seed=7)
    obs, _ = theirs.reset(seed=7)
    agents = list(theirs.possible_agents)
    for i, agent in enumerate(agents):
        np.testing.assert_array_equal(first.obs[i, : len(obs[agent])], obs[agent])
    for _ in range(25):
        actions = np.array([rng.integers(0, theirs.action_space(a).n) for a in agents])
        reward, terminated, truncated, _ = ours.step(actions)
        obs, rewards, terms, truncs, _ = theirs.step({a: int(u) for a, u in zip(agents, actions)})
        for i, agent in enumerate(agents):
            np.testing.assert_array_equal(ours.observe().obs[i, : len(obs[agent])], obs[agent])
        assert reward == pytest.approx(np.mean([rewards[a] for a in agents]))
        assert (terminated, truncated) == (any(terms.values()), any(truncs.values()))
    assert truncated
