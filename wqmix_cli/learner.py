"""The Weighted QMIX loss and update (Rashid et al., NeurIPS 2020).

One code path for recurrent and feed-forward agents: every network runs over whole
sequences ``[B, T+1, N, ...]`` at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from wqmix_cli.buffer import EpisodeBatch
from wqmix_cli.config import LearnerConfig
from wqmix_cli.policy import WQMIXPolicy


@dataclass
class LossParts:
    """One loss evaluation: ``total`` carries the gradient; ``weights`` and ``targets``
    are the per-step w and y ``[B, T]``; the rest are detached scalars."""

    total: torch.Tensor
    weights: torch.Tensor
    targets: torch.Tensor
    qmix: torch.Tensor
    central: torch.Tensor
    w_mean: torch.Tensor
    q_tot_mean: torch.Tensor
    target_mean: torch.Tensor


def _pick(q: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """q ``[B, T, N, A]``, actions ``[B, T, N]`` -> ``[B, T, N]``."""
    return q.gather(-1, actions.unsqueeze(-1)).squeeze(-1)


def wqmix_loss(
    policy: WQMIXPolicy, batch: EpisodeBatch, variant: str, w: float, gamma: float, central_weight: float = 1.0
) -> LossParts:
    """The loss of design section 4 on a batch of B episodes of T steps.

    variant: ``cwqmix`` | ``owqmix`` | ``qmix``; w: the weight alpha given to the
    down-weighted transitions.
    """
    mask = batch.filled.float()  # [B, T]
    n_real = mask.sum()
    not_done = 1.0 - batch.terminated.float()
    start = torch.full_like(batch.actions[:, :1], -1)
    last_actions = torch.cat([start, batch.actions], dim=1)  # [B, T+1, N]
    inputs = policy.agent_inputs(batch.obs, last_actions)  # [B, T+1, N, in]

    q, _ = policy.agent(inputs)  # [B, T+1, N, A]
    q_tot = policy.mixer(_pick(q[:, :-1], batch.actions), batch.state[:, :-1])  # [B, T]
    with torch.no_grad():
        greedy = q.detach().masked_fill(~batch.avail, -torch.inf).argmax(-1)  # [B, T+1, N]

    if policy.central:
        with torch.no_grad():
            q_c_target, _ = policy.target_central_agent(inputs)
            # One target pass over all T+1 steps serves both y (at t+1) and the CW test (at t).
            q_star_greedy = policy.target_central_mixer(_pick(q_c_target, greedy), batch.state)  # [B, T+1]
            y = batch.reward + gamma * not_done * q_star_greedy[:, 1:]
        q_c, _ = policy.central_agent(inputs[:, :-1])
        q_star = policy.central_mixer(_pick(q_c, batch.actions), batch.state[:, :-1])  # [B, T]
        central_loss = (mask * (q_star - y) ** 2).sum() / n_real
        with torch.no_grad():
            if variant == "cwqmix":
                took_greedy = (batch.actions == greedy[:, :-1]).all(-1)
                full = took_greedy | (y > q_star_greedy[:, :-1])
            else:
                full = q_tot.detach() < y
            weights = torch.where(full, 1.0, w)
    else:
        with torch.no_grad():
            q_target, _ = policy.target_agent(inputs)
            q_tot_next = policy.target_mixer(_pick(q_target, greedy), batch.state)[:, 1:]
            y = batch.reward + gamma * not_done * q_tot_next
            weights = torch.ones_like(y)
        central_loss = torch.zeros((), device=y.device)

    qmix_loss = (mask * weights * (q_tot - y) ** 2).sum() / n_real
    return LossParts(
        total=qmix_loss + central_weight * central_loss,
        weights=weights,
        targets=y,
        qmix=qmix_loss.detach(),
        central=central_loss.detach(),
        w_mean=(weights * mask).sum() / n_real,
        q_tot_mean=(q_tot.detach() * mask).sum() / n_real,
        target_mean=(y * mask).sum() / n_real,
    )


def make_optimizer(params: list[nn.Parameter], cfg: LearnerConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, eps=cfg.optim_eps)
    return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.optim_alpha, eps=cfg.optim_eps)


class WQMIXLearner:
    """Owns the optimiser and the target schedule; ``update`` takes one gradient step."""

    def __init__(self, policy: WQMIXPolicy, cfg: LearnerConfig, variant: str, w: float, device: torch.device) -> None:
        self.policy, self.cfg, self.variant, self.w, self.device = policy, cfg, variant, w, device
        self.optimizer = make_optimizer(policy.trained_parameters(), cfg)
        self.updates = 0

    def update(self, batch: EpisodeBatch) -> dict[str, float]:
        """One gradient step on B episodes; returns the logged scalars by TensorBoard tag."""
        parts = wqmix_loss(
            self.policy, batch.to(self.device), self.variant, self.w, self.cfg.gamma, self.cfg.central_loss_weight
        )
        if not torch.isfinite(parts.total):
            raise FloatingPointError(f"the loss became {parts.total.item()} at update {self.updates + 1}")
        self.optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.policy.trained_parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.updates += 1
        if self.cfg.target_update == "soft":
            self.policy.sync_targets(self.cfg.tau)
        elif self.updates % self.cfg.target_update_interval == 0:
            self.policy.sync_targets()
        return {
            "loss/total": parts.total.item(),
            "loss/qmix": parts.qmix.item(),
            "loss/central": parts.central.item(),
            "train/w_mean": parts.w_mean.item(),
            "q/q_tot_mean": parts.q_tot_mean.item(),
            "q/target_mean": parts.target_mean.item(),
            "train/grad_norm": grad_norm.item(),
            "train/lr": self.optimizer.param_groups[0]["lr"],
        }

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = state["updates"]
