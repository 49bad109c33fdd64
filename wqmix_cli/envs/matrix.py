"""The one-step, two-agent cooperative matrix game of the Weighted QMIX paper.

Both agents pick one of A actions at once; the team reward is ``payoff[u1][u2]`` and the
episode ends. Observations and the state are constant, so the agents are told apart only
by the one-hot agent id the learner appends to their inputs.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from wqmix_cli.config import MatrixConfig
from wqmix_cli.envs.base import EnvInfo, Observation

N_AGENTS = 2


def payoff_table(cfg: MatrixConfig) -> np.ndarray:
    """The payoff as a float64 array ``[A, A]``: row = agent 0's action, column = agent 1's.

    Raises ValueError unless ``cfg.payoff`` is a non-empty square list of lists of numbers.
    """
    rows = cfg.payoff
    if not rows or any(len(row) != len(rows) for row in rows):
        raise ValueError(f"env.payoff must be a non-empty square list of lists, got {rows!r}")
    return np.asarray(rows, dtype=np.float64)


class MatrixGame:
    """A one-step matrix game with 2 agents and A actions each.

    obs ``[2, 1]`` (ones), state ``[1]`` (one), avail ``[2, A]`` (all True); every episode
    is one step long and ends with ``terminated=True``.
    """

    def __init__(self, cfg: MatrixConfig) -> None:
        self.payoff = payoff_table(cfg)
        self.n_actions = self.payoff.shape[0]
        self._done = True
        self._obs = Observation(
            obs=np.ones((N_AGENTS, 1), dtype=np.float32),
            state=np.ones(1, dtype=np.float32),
            avail=np.ones((N_AGENTS, self.n_actions), dtype=bool),
        )

    def info(self) -> EnvInfo:
        return EnvInfo(n_agents=N_AGENTS, obs_dim=1, state_dim=1, n_actions=self.n_actions, episode_limit=1)

    def reset(self, seed: int | None = None) -> Observation:
        """Start the (deterministic) game; ``seed`` is accepted for the interface and unused."""
        self._done = False
        return self.observe()

    def step(self, actions: np.ndarray) -> tuple[float, bool, bool, dict[str, Any]]:
        """Play joint action ``actions [2]``; returns ``(payoff[u1][u2], True, False, {})``."""
        if self._done:
            raise RuntimeError("the matrix game is over after one step: call reset() first")
        u = np.asarray(actions).reshape(-1)
        if u.shape != (N_AGENTS,) or not np.all((u >= 0) & (u < self.n_actions)):
            raise ValueError(f"actions must be {N_AGENTS} integers in [0, {self.n_actions}), got {actions!r}")
        self._done = True
        return float(self.payoff[int(u[0]), int(u[1])]), True, False, {}

    def observe(self) -> Observation:
        """The constant observation: obs ``[2, 1]``, state ``[1]``, avail ``[2, A]``."""
        ob = self._obs
        return Observation(obs=ob.obs.copy(), state=ob.state.copy(), avail=ob.avail.copy())

    def render(self) -> np.ndarray:
        raise NotImplementedError("the matrix game has no picture: it is one step with a constant state")

    def close(self) -> None:
        """Nothing to release."""
