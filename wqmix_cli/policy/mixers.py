"""Mixers: agent values ``[B, T, N]`` and states ``[B, T, S]`` -> team value ``[B, T]``."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class QMixer(nn.Module):
    """QMIX's monotonic mixer: hypernetworks of the state give abs() weights.

    dQ_tot/dQ_a >= 0 for every agent a, so the per-agent argmax is the joint argmax.
    """

    def __init__(self, n_agents: int, state_dim: int, embed_dim: int = 32, hypernet_dim: int = 64) -> None:
        super().__init__()
        self.n_agents, self.embed_dim = n_agents, embed_dim
        self.hyper_w1 = nn.Sequential(
            nn.Linear(state_dim, hypernet_dim), nn.ReLU(), nn.Linear(hypernet_dim, n_agents * embed_dim)
        )
        self.hyper_w2 = nn.Sequential(
            nn.Linear(state_dim, hypernet_dim), nn.ReLU(), nn.Linear(hypernet_dim, embed_dim)
        )
        self.hyper_b1 = nn.Linear(state_dim, embed_dim)
        self.value = nn.Sequential(nn.Linear(state_dim, embed_dim), nn.ReLU(), nn.Linear(embed_dim, 1))

    def forward(self, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        b, t, n = agent_qs.shape
        w1 = self.hyper_w1(states).abs().view(b, t, n, self.embed_dim)
        # A broadcast multiply-sum: einsum here becomes B*T tiny matmuls, several times slower on the CPU.
        hidden = F.elu((agent_qs.unsqueeze(-1) * w1).sum(-2) + self.hyper_b1(states))
        w2 = self.hyper_w2(states).abs()
        return (hidden * w2).sum(-1) + self.value(states).squeeze(-1)


class FeedForwardMixer(nn.Module):
    """The central Q*'s unrestricted mixer: ``[state, N values] -> 256 -> 256 -> 256 -> 1``
    plus a state value ``V(s)``; no monotonicity constraint."""

    def __init__(self, n_agents: int, state_dim: int, hidden_dim: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(state_dim + n_agents, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, 1),
        )
        self.value = nn.Sequential(nn.Linear(state_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1))

    def forward(self, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        q = self.net(torch.cat([states, agent_qs], dim=-1)) + self.value(states)
        return q.squeeze(-1)
