"""Epsilon-greedy action selection over available actions, one coin per agent."""
from __future__ import annotations

import copy

import numpy as np
import torch

from wqmix_cli.config import EpsilonConfig
from wqmix_cli.policy import WQMIXPolicy


def epsilon_at(cfg: EpsilonConfig, t_env: int) -> float:
    """Linear anneal from ``cfg.start`` to ``cfg.finish`` over ``cfg.anneal_time`` env steps."""
    if cfg.anneal_time == 0:
        return cfg.finish
    frac = min(t_env / cfg.anneal_time, 1.0)
    return cfg.start + frac * (cfg.finish - cfg.start)


class Actor:
    """Steps the online agent network one t at a time for E envs, carrying the GRU state.

    ``frozen=True``: act with a private copy of ``policy.agent`` that only ``sync()``
    refreshes, so a learner may update the policy meanwhile (train's background learning).
    """

    def __init__(self, policy: WQMIXPolicy, device: torch.device, seed: int = 0, frozen: bool = False) -> None:
        self.policy, self.device = policy, device
        self.agent = copy.deepcopy(policy.agent).requires_grad_(False) if frozen else policy.agent
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.hidden: torch.Tensor | None = None
        self.last_actions: torch.Tensor | None = None

    def sync(self) -> None:
        """Act with the policy's current online agent weights from now on."""
        if self.agent is not self.policy.agent:
            self.agent.load_state_dict(self.policy.agent.state_dict())

    def start(self, n_envs: int) -> None:
        """Forget the GRU state and last actions: E new episodes begin."""
        self.hidden = None
        self.last_actions = torch.full((n_envs, 1, self.policy.info.n_agents), -1, device=self.device)

    @torch.inference_mode()
    def act(self, obs: np.ndarray, avail: np.ndarray, epsilon: float) -> np.ndarray:
        """obs ``[E, N, O]``, avail ``[E, N, A]`` bool -> actions ``[E, N]`` int64.

        Each agent explores with probability ``epsilon``, uniformly over its available
        actions; otherwise it takes its greedy available action.
        """
        obs_t = torch.as_tensor(obs, device=self.device).unsqueeze(1)
        avail_t = torch.as_tensor(avail, device=self.device)
        inputs = self.policy.agent_inputs(obs_t, self.last_actions)
        q, self.hidden = self.agent(inputs, self.hidden)
        greedy = q[:, 0].masked_fill(~avail_t, -torch.inf).argmax(-1)
        if epsilon > 0:
            scores = torch.rand(avail_t.shape, generator=self.generator, device=self.device)
            random = scores.masked_fill(~avail_t, -1.0).argmax(-1)
            explore = torch.rand(greedy.shape, generator=self.generator, device=self.device) < epsilon
            greedy = torch.where(explore, random, greedy)
        self.last_actions = greedy.unsqueeze(1)
        return greedy.cpu().numpy()
