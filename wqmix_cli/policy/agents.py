"""Per-agent utility networks, shared across agents, run over whole sequences."""
from __future__ import annotations

import torch
from torch import nn


def build_inputs(obs: torch.Tensor, last_actions: torch.Tensor, n_actions: int) -> torch.Tensor:
    """Agent inputs: observation, one-hot last action, one-hot agent id.

    obs ``[B, T, N, O]`` float, last_actions ``[B, T, N]`` long (-1 = none, at t=0)
    -> ``[B, T, N, O + A + N]``.
    """
    b, t, n, _ = obs.shape
    last = torch.zeros(b, t, n, n_actions + 1, device=obs.device, dtype=obs.dtype)
    last.scatter_(-1, (last_actions + 1).clamp(min=0).unsqueeze(-1), 1.0)
    ids = torch.eye(n, device=obs.device, dtype=obs.dtype).expand(b, t, n, n)
    return torch.cat([obs, last[..., 1:], ids], dim=-1)


class RNNAgent(nn.Module):
    """Linear -> ReLU -> GRU -> Linear: ``[B, T, N, in] -> [B, T, N, A]``.

    One ``nn.GRU`` call covers all T steps (the hidden state starts at zero for a whole
    episode, or continues from ``hidden [1, B*N, H]`` when the actor steps one t at a time).
    """

    def __init__(self, input_dim: int, n_actions: int, hidden_dim: int = 64) -> None:
        super().__init__()
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.rnn = nn.GRU(hidden_dim, hidden_dim, batch_first=True)
        self.fc2 = nn.Linear(hidden_dim, n_actions)

    def forward(
        self, inputs: torch.Tensor, hidden: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, n, d = inputs.shape
        if t == 1:  # the actor's step: the cell op costs a third less than nn.GRU's sequence call
            x = torch.relu(self.fc1(inputs)).reshape(b * n, -1)
            h = hidden[0] if hidden is not None else x.new_zeros(b * n, self.rnn.hidden_size)
            rnn = self.rnn
            h = torch.gru_cell(x, h, rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
            return self.fc2(h).view(b, 1, n, -1), h.unsqueeze(0)
        x = torch.relu(self.fc1(inputs)).transpose(1, 2).reshape(b * n, t, -1)
        out, hidden = self.rnn(x, hidden)
        q = self.fc2(out).reshape(b, n, t, -1).transpose(1, 2)
        return q, hidden


class MLPAgent(nn.Module):
    """Feed-forward agent: ``[B, T, N, in] -> [B, T, N, A]``; ``hidden`` passes through."""

    def __init__(self, input_dim: int, n_actions: int, hidden_dim: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(input_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, n_actions),
        )

    def forward(
        self, inputs: torch.Tensor, hidden: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.net(inputs), hidden
