"""MPE scenarios from mpe2 behind the MultiAgentEnv interface.

Agents with different observation or action sizes (simple_speaker_listener) are padded
to the largest: observations with zeros, actions with unavailable slots. The team reward
is the mean of the agents' rewards (for scenarios whose reward is shared, that is the
shared reward itself).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from wqmix_cli.config import MPEConfig
from wqmix_cli.envs.base import EnvInfo, Observation


def _make_raw_env(cfg: MPEConfig, render_mode: str | None) -> Any:
    """The scenario's AEC env without PettingZoo's order and bounds checks (about a third
    of a step's time; the runner resets first and picks only available actions)."""
    common = dict(max_cycles=cfg.max_cycles, continuous_actions=False, render_mode=render_mode)
    if cfg.scenario == "simple_spread":
        from mpe2 import simple_spread_v3

        return simple_spread_v3.raw_env(N=cfg.n_agents, local_ratio=cfg.local_ratio, **common)
    if cfg.scenario == "simple_speaker_listener":
        from mpe2 import simple_speaker_listener_v4

        return simple_speaker_listener_v4.raw_env(**common)
    if cfg.scenario == "simple_reference":
        from mpe2 import simple_reference_v3

        return simple_reference_v3.raw_env(local_ratio=0.0, **common)
    raise ValueError(f"unknown MPE scenario {cfg.scenario!r}")


class MPEEnv:
    """One mpe2 env: obs ``[N, O]``, state ``[S]``, avail ``[N, A]``.

    Stepped through PettingZoo's AEC interface (each agent acts in turn; the world moves
    after the last), which is what mpe2's parallel_env does too, less its wrapper's reading
    of every agent's observation before each agent acts: 3 of the 6 observations per
    simple_spread step, about a sixth of its time.
    """

    def __init__(self, cfg: MPEConfig, render_mode: str | None = None) -> None:
        self.cfg = cfg
        self.env = _make_raw_env(cfg, render_mode)
        self.env.reset(seed=0)
        self.agents = list(self.env.possible_agents)
        obs_dims = [self.env.observation_space(a).shape[0] for a in self.agents]
        act_dims = [int(self.env.action_space(a).n) for a in self.agents]
        self._obs_dim, self._n_actions = max(obs_dims), max(act_dims)
        self._avail = np.zeros((len(self.agents), self._n_actions), dtype=bool)
        for i, n in enumerate(act_dims):
            self._avail[i, :n] = True
        self._obs = np.zeros((len(self.agents), self._obs_dim), dtype=np.float32)
        self._steps = 0

    def info(self) -> EnvInfo:
        return EnvInfo(
            n_agents=len(self.agents),
            obs_dim=self._obs_dim,
            state_dim=len(self.agents) * self._obs_dim,
            n_actions=self._n_actions,
            episode_limit=self.cfg.max_cycles,
        )

    def _store(self) -> None:
        for i, agent in enumerate(self.agents):
            o = self.env.observe(agent)
            self._obs[i, : o.shape[0]] = o

    def reset(self, seed: int | None = None) -> Observation:
        self.env.reset(seed=seed)
        self._store()
        self._steps = 0
        return self.observe()

    def observe(self) -> Observation:
        return Observation(self._obs.copy(), self._obs.reshape(-1).copy(), self._avail.copy())

    def step(self, actions: np.ndarray) -> tuple[float, bool, bool, dict[str, Any]]:
        env = self.env
        for action in actions.tolist():  # agent_selection runs through self.agents in order
            env.step(action)
        self._store()
        self._steps += 1
        # The rewards of the world step, which the last agent's turn triggered.
        reward = float(np.mean([env.rewards[a] for a in self.agents]))
        terminated = any(env.terminations.values())
        truncated = not terminated and (any(env.truncations.values()) or self._steps >= self.cfg.max_cycles)
        return reward, terminated, truncated, {}

    def render(self) -> np.ndarray:
        frame = self.env.render()
        if frame is None:
            raise RuntimeError("this MPE env was made without render_mode='rgb_array'")
        return np.asarray(frame)

    def close(self) -> None:
        self.env.close()
