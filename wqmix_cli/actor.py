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
        n = self.policy.info.n_agents
        self.hidden = None
        self._draws: torch.Tensor | None = None
        self._drawn = 0
        if self._kernel is None:
            self.last_actions = torch.full((n_envs, 1, n), -1, device=self.device)
        else:
            agent, rnn = self.agent, self.agent.rnn
            self.hidden = torch.zeros(1, n_envs * n, rnn.hidden_size)
            self._last = np.full((n_envs, n), -1, dtype=np.int64)
            self._weights = [agent.fc1.weight.detach().t().contiguous(), agent.fc1.bias.detach(),
                             rnn.weight_ih_l0.detach().t().contiguous(), rnn.bias_ih_l0.detach(),
                             rnn.weight_hh_l0.detach().t().contiguous(), rnn.bias_hh_l0.detach(),
                             agent.fc2.weight.detach(), agent.fc2.bias.detach()]
            self._c_state = (rnn.hidden_size, pointers(*self._weights), self.hidden.data_ptr())

    def act(self, obs: np.ndarray, avail: np.ndarray, epsilon: float) -> np.ndarray:
        """obs ``[E, N, O]``, avail ``[E, N, A]`` bool -> actions ``[E, N]`` int64.

        Each agent explores with probability ``epsilon``, uniformly over its available
        actions; otherwise it takes its greedy available action. Both paths read the same
        uniform draws (``_next_draw``), so they take the same actions.
        """
        if self._kernel is not None:
            return self._act_in_c(obs, avail, epsilon)
        return self._act_in_torch(obs, avail, epsilon)

    def _next_draw(self, e: int, n: int, a: int, epsilon: float) -> int | None:
        """The index into ``self._draws`` of this step's uniform draws ``[E, N, A + 1]`` (the
        scores that pick an exploratory action, then the coin), or None when epsilon is 0.
        They are drawn an episode's worth at a time: one generator call, not one a step."""
        if epsilon <= 0:
            return None
        if self._draws is None or self._drawn == len(self._draws) or self._draws.shape[1:] != (e, n, a + 1):
            limit = self.policy.info.episode_limit
            self._draws = torch.rand(limit, e, n, a + 1, generator=self.generator, device=self.device)
            self._drawn = 0
        self._drawn += 1
        return self._drawn - 1

    @torch.inference_mode()
    def _act_in_torch(self, obs: np.ndarray, avail: np.ndarray, epsilon: float) -> np.ndarray:
        obs_t = torch.as_tensor(obs, device=self.device).unsqueeze(1)
        avail_t = torch.as_tensor(avail, device=self.device)
        inputs = self.policy.agent_inputs(obs_t, self.last_actions)
        q, self.hidden = self.agent(inputs, self.hidden)
        greedy = q[:, 0].masked_fill(~avail_t, -torch.inf).argmax(-1)
        step = self._next_draw(*avail_t.shape, epsilon)
        if step is not None:
            draws = self._draws[step]
            random = draws[..., :-1].masked_fill(~avail_t, -1.0).argmax(-1)
            greedy = torch.where(draws[..., -1] < epsilon, random, greedy)
        self.last_actions = greedy.unsqueeze(1)
        return greedy.cpu().numpy()

    def _act_in_c(self, obs: np.ndarray, avail: np.ndarray, epsilon: float) -> np.ndarray:
        """One call of ``actor_step`` (``gru_kernel.c``) with the weights as they were at
        ``start``. numpy arrays and raw pointers only: each torch op here cost 10-20 us
        between env steps, as much as the C step itself."""
        e, n, o = obs.shape
        a = avail.shape[-1]
        obs = np.ascontiguousarray(obs, dtype=np.float32)
        avail = np.ascontiguousarray(avail, dtype=bool)
        actions = np.empty((e, n), dtype=np.int64)
        step = self._next_draw(e, n, a, epsilon)
        draws = None if step is None else self._draws.data_ptr() + step * e * n * (a + 1) * 4
        hidden_size, weights, hidden = self._c_state
        self._kernel.actor_step(e * n, n, o, a, hidden_size, obs.ctypes.data, self._last.ctypes.data,
                                avail.ctypes.data, *weights, draws, epsilon, hidden, actions.ctypes.data)
        self._last = actions
        return actions
