"""Collects whole episodes from a batch of envs with the actor."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from wqmix_cli.actor import Actor
from wqmix_cli.buffer import EpisodeBatch
from wqmix_cli.envs.base import EpisodeRestart, VectorEnv

log = logging.getLogger("wqmix")


@dataclass
class Episodes:
    """E finished episodes: ``batch`` padded to the longest, ``lengths [E]``,
    ``returns [E]``, ``battle_won [E]`` (None where the env has no battles)."""

    batch: EpisodeBatch
    lengths: torch.Tensor
    returns: np.ndarray
    battle_won: np.ndarray | None

    @property
    def steps(self) -> int:
        return int(self.lengths.sum())


class EpisodeRunner:
    """Runs E episodes in lockstep; an env stops being stepped once its episode ended."""

    def __init__(self, env: VectorEnv, actor: Actor) -> None:
        self.env, self.actor = env, actor
        self.info = env.info()
        self.restarts = 0

    @property
    def n_envs(self) -> int:
        return self.env.n_envs

    def run(self, epsilon: float, seed: int) -> Episodes:
        """E episodes; when a simulator had to be restarted mid-episode, all E are redone."""
        while True:
            try:
                return self._run(epsilon, seed)
            except EpisodeRestart as err:
                self.restarts += 1
                log.warning("simulator restarted (%d so far), redoing the episodes: %s", self.restarts, err)

    def _run(self, epsilon: float, seed: int) -> Episodes:
        info, e = self.info, self.env.n_envs
        t_max, n = info.episode_limit, info.n_agents
        obs = np.zeros((e, t_max + 1, n, info.obs_dim), dtype=np.float32)
        state = np.zeros((e, t_max + 1, info.state_dim), dtype=np.float32)
        avail = np.zeros((e, t_max + 1, n, info.n_actions), dtype=bool)
        actions = np.zeros((e, t_max, n), dtype=np.int64)
        reward = np.zeros((e, t_max), dtype=np.float32)
        terminated = np.zeros((e, t_max), dtype=bool)
        filled = np.zeros((e, t_max), dtype=bool)
        lengths = np.zeros(e, dtype=np.int64)
        battle_won: np.ndarray | None = None

        first = self.env.reset(seed)
        obs[:, 0], state[:, 0], avail[:, 0] = first.obs, first.state, first.avail
        self.actor.start(e)
        active = np.ones(e, dtype=bool)
        t = 0
        while active.any() and t < t_max:
            acts = self.actor.act(obs[:, t], avail[:, t], epsilon)
            out = self.env.step(acts, active)
            live = active.copy()
            rows = slice(None) if live.all() else live  # a slice copies without gathering
            actions[rows, t] = acts[rows]
            reward[rows, t] = out.reward[rows]
            terminated[rows, t] = out.terminated[rows]
            filled[rows, t] = True
            obs[rows, t + 1] = out.observation.obs[rows]
            state[rows, t + 1] = out.observation.state[rows]
            avail[rows, t + 1] = out.observation.avail[rows]
            ended = live & (out.terminated | out.truncated)
            if "battle_won" in out.info:
                if battle_won is None:
                    battle_won = np.zeros(e, dtype=np.float32)
                battle_won[ended] = out.info["battle_won"][ended]
            t += 1
            lengths[live] = t
            active &= ~ended
        steps = int(lengths.max())
        batch = EpisodeBatch(
            obs=torch.from_numpy(obs[:, : steps + 1]),
            state=torch.from_numpy(state[:, : steps + 1]),
            avail=torch.from_numpy(avail[:, : steps + 1]),
            actions=torch.from_numpy(actions[:, :steps]),
            reward=torch.from_numpy(reward[:, :steps]),
            terminated=torch.from_numpy(terminated[:, :steps]),
            filled=torch.from_numpy(filled[:, :steps]),
        )
        return Episodes(batch, torch.from_numpy(lengths), reward.sum(1), battle_won)
