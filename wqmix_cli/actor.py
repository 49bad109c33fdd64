"""Epsilon-greedy action selection over available actions, one coin per agent."""
from __future__ import annotations

import copy
import ctypes

import numpy as np
import torch

from wqmix_cli.config import EpsilonConfig
from wqmix_cli.policy import RNNAgent, WQMIXPolicy
from wqmix_cli.policy.native import ActorStep, gru_kernel, pointers


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

    ``share`` (first, total): this actor's E envs are ``[first, first + E)`` of a batch of
    ``total`` that other actors with the same seed step in other processes. Each draws the
    exploration noise of all ``total`` and keeps its own rows, so together they take the
    actions that one actor over the whole batch would.
    """

    def __init__(self, policy: WQMIXPolicy, device: torch.device, seed: int = 0, frozen: bool = False,
                 share: tuple[int, int] | None = None) -> None:
        self.policy, self.device = policy, device
        self.frozen, self.share = frozen, share
        self.agent = copy.deepcopy(policy.agent).requires_grad_(False) if frozen else policy.agent
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.hidden: torch.Tensor | None = None
        self.last_actions: torch.Tensor | None = None
        native = device.type == "cpu" and isinstance(self.agent, RNNAgent) and self.agent.fc1.weight.dtype == torch.float32
        # In torch a step is ~25 tiny ops, ~250 us at one env: about an MPE env step. In C, ~10 us.
        self._kernel = gru_kernel() if native else None
        self._c_envs: int | None = None  # E of the C step's buffers (_start_in_c)

    def sync(self) -> None:
        """Act with the policy's current online agent weights from now on."""
        if self.agent is not self.policy.agent:
            self.agent.load_state_dict(self.policy.agent.state_dict())
            self._c_envs = None

    def start(self, n_envs: int) -> None:
        """Forget the GRU state and last actions: E new episodes begin."""
        n = self.policy.info.n_agents
        self.hidden = None
        self._draws: torch.Tensor | None = None
        self._drawn = 0
        if self._kernel is None:
            self.last_actions = torch.full((n_envs, 1, n), -1, device=self.device)
        else:
            self._start_in_c(n_envs)

    def _start_in_c(self, n_envs: int) -> None:
        """The C step's buffers and the weights it reads (fc1's and the GRU's transposed).
        A frozen actor's weights change only in ``sync``, so it keeps them until then (a new
        copy each start cost about 4 us per step at one env)."""
        agent, rnn, info = self.agent, self.agent.rnn, self.policy.info
        n = info.n_agents
        self.hidden = torch.zeros(1, n_envs * n, rnn.hidden_size)
        if not self.frozen or self._c_envs != n_envs:
            params = [agent.fc1.weight, agent.fc1.bias, rnn.weight_ih_l0, rnn.bias_ih_l0, rnn.weight_hh_l0,
                      rnn.bias_hh_l0, agent.fc2.weight, agent.fc2.bias]
            # act() copies into these and reads the actions out.
            self._obs = np.zeros((n_envs, n, info.obs_dim), dtype=np.float32)
            self._avail = np.zeros((n_envs, n, info.n_actions), dtype=bool)
            self._actions = np.empty((n_envs, n), dtype=np.int64)
            w1, b1, w_ih, b_ih, w_hh, b_hh, w2, b2 = (p.detach() for p in params)
            self._weights = [w1.t().contiguous(), b1, w_ih.t().contiguous(), b_ih, w_hh.t().contiguous(), b_hh, w2, b2]
            self._step = ActorStep(n_envs * n, n, info.obs_dim, info.n_actions, rnn.hidden_size,
                                   *pointers(*self._weights), 0, self._obs.ctypes.data, self._avail.ctypes.data,
                                   self._actions.ctypes.data, None, 0.0)
            self._step_ptr = ctypes.pointer(self._step)
            self._c_envs = n_envs
        self._step.hidden = self.hidden.data_ptr()
        self._actions.fill(-1)

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
            first, total = self.share or (0, e)
            draws = torch.rand(limit, total, n, a + 1, generator=self.generator, device=self.device)
            self._draws = draws if total == e else draws[:, first : first + e].contiguous()
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
        ``start``. numpy copies into buffers whose addresses the C step already holds: each
        torch op, and each numpy ``.ctypes`` lookup, cost about as much as the step itself."""
        np.copyto(self._obs, obs, casting="unsafe")
        np.copyto(self._avail, avail, casting="unsafe")
        e, n, a = self._avail.shape
        draw = self._next_draw(e, n, a, epsilon)
        step = self._step
        step.draws = None if draw is None else self._draws.data_ptr() + draw * e * n * (a + 1) * 4
        step.epsilon = epsilon
        self._kernel.actor_step(self._step_ptr)
        return self._actions.copy()
