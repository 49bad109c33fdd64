"""Epsilon-greedy action selection over available actions, one coin per agent."""
from __future__ import annotations

import copy

import numpy as np
import torch

from wqmix_cli.config import EpsilonConfig
from wqmix_cli.policy import RNNAgent, WQMIXPolicy
from wqmix_cli.policy.native import gru_kernel, pointers


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
    On the CPU a GRU agent steps in C (``gru_kernel.c``: ``actor_step``) with the weights
    read at ``start()``; elsewhere, or without the kernel, through torch.
    """

    def __init__(self, policy: WQMIXPolicy, device: torch.device, seed: int = 0, frozen: bool = False) -> None:
        self.policy, self.device = policy, device
        self.agent = copy.deepcopy(policy.agent).requires_grad_(False) if frozen else policy.agent
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.hidden: torch.Tensor | None = None
        self.last_actions: torch.Tensor | None = None
        native = device.type == "cpu" and isinstance(self.agent, RNNAgent) and self.agent.fc1.weight.dtype == torch.float32
        # In torch a step is ~25 tiny ops, ~250 us at one env: about an MPE env step. In C, ~30 us.
        self._kernel = gru_kernel() if native else None

    def sync(self) -> None:
        """Act with the policy's current online agent weights from now on."""
        if self.agent is not self.policy.agent:
            self.agent.load_state_dict(self.policy.agent.state_dict())

    def start(self, n_envs: int) -> None:
        """Forget the GRU state and last actions: E new episodes begin."""
        self.hidden = None
        self.last_actions = torch.full((n_envs, 1, self.policy.info.n_agents), -1, device=self.device)
        if self._kernel is not None:
            agent, rnn = self.agent, self.agent.rnn
            self._hidden_size = rnn.hidden_size
            self.hidden = torch.zeros(1, n_envs * self.policy.info.n_agents, rnn.hidden_size)
            self._weights = [agent.fc1.weight.detach().t().contiguous(), agent.fc1.bias.detach(),
                             rnn.weight_ih_l0.detach().t().contiguous(), rnn.bias_ih_l0.detach(),
                             rnn.weight_hh_l0.detach().t().contiguous(), rnn.bias_hh_l0.detach(),
                             agent.fc2.weight.detach(), agent.fc2.bias.detach()]
            self._weight_pointers = pointers(*self._weights)

    def act(self, obs: np.ndarray, avail: np.ndarray, epsilon: float) -> np.ndarray:
        """obs ``[E, N, O]``, avail ``[E, N, A]`` bool -> actions ``[E, N]`` int64.

        Each agent explores with probability ``epsilon``, uniformly over its available
        actions; otherwise it takes its greedy available action. Both paths draw the same
        numbers from the generator (``[E, N, A + 1]``: the scores that pick the exploratory
        action, then the coin), so they take the same actions.
        """
        if self._kernel is not None:
            return self._act_in_c(obs, avail, epsilon)
        return self._act_in_torch(obs, avail, epsilon)

    def _draws(self, avail_shape: torch.Size, epsilon: float) -> torch.Tensor | None:
        if epsilon <= 0:
            return None
        e, n, a = avail_shape
        return torch.rand(e, n, a + 1, generator=self.generator, device=self.device)

    @torch.inference_mode()
    def _act_in_torch(self, obs: np.ndarray, avail: np.ndarray, epsilon: float) -> np.ndarray:
        obs_t = torch.as_tensor(obs, device=self.device).unsqueeze(1)
        avail_t = torch.as_tensor(avail, device=self.device)
        inputs = self.policy.agent_inputs(obs_t, self.last_actions)
        q, self.hidden = self.agent(inputs, self.hidden)
        greedy = q[:, 0].masked_fill(~avail_t, -torch.inf).argmax(-1)
        draws = self._draws(avail_t.shape, epsilon)
        if draws is not None:
            random = draws[..., :-1].masked_fill(~avail_t, -1.0).argmax(-1)
            greedy = torch.where(draws[..., -1] < epsilon, random, greedy)
        self.last_actions = greedy.unsqueeze(1)
        return greedy.cpu().numpy()

    def _act_in_c(self, obs: np.ndarray, avail: np.ndarray, epsilon: float) -> np.ndarray:
        """One call of ``actor_step`` (``gru_kernel.c``) with the weights as they were at ``start``."""
        e, n, o = obs.shape
        obs_t = torch.from_numpy(np.ascontiguousarray(obs, dtype=np.float32))
        avail_t = torch.from_numpy(np.ascontiguousarray(avail, dtype=bool))
        actions = torch.empty(e, 1, n, dtype=torch.long)
        draws = self._draws(avail_t.shape, epsilon)
        # Every array is contiguous: made so here, or allocated by start() and this method.
        self._kernel.actor_step(e * n, n, o, avail_t.shape[-1], self._hidden_size, obs_t.data_ptr(),
                                self.last_actions.data_ptr(), avail_t.data_ptr(), *self._weight_pointers,
                                None if draws is None else draws.data_ptr(), epsilon, self.hidden.data_ptr(),
                                actions.data_ptr())
        self.last_actions = actions
        return actions[:, 0].numpy()
