"""The networks of Weighted QMIX and their target copies."""
from __future__ import annotations

import copy

import torch
from torch import nn

from wqmix_cli.config import LearnerConfig
from wqmix_cli.envs.base import EnvInfo
from wqmix_cli.policy.agents import MLPAgent, RNNAgent, build_inputs
from wqmix_cli.policy.mixers import FeedForwardMixer, QMixer


class WQMIXPolicy(nn.Module):
    """Online networks and targets.

    ``agent`` + ``mixer``: Q_tot (monotonic). With ``central=True`` also the central Q*:
    ``central_agent`` (its own network, not a copy of ``agent``) + ``central_mixer``
    (feed-forward), and their targets ``target_central_agent``/``target_central_mixer``.
    Plain QMIX (``central=False``) keeps ``target_agent``/``target_mixer`` instead.
    """

    def __init__(self, info: EnvInfo, cfg: LearnerConfig, central: bool) -> None:
        super().__init__()
        self.info, self.central = info, central
        input_dim = info.obs_dim + info.n_actions + info.n_agents
        agent_cls = RNNAgent if cfg.recurrent else MLPAgent
        self.agent = agent_cls(input_dim, info.n_actions, cfg.hidden_dim)
        self.mixer = QMixer(info.n_agents, info.state_dim, cfg.mixer_embed_dim, cfg.hypernet_dim)
        if central:
            self.central_agent = agent_cls(input_dim, info.n_actions, cfg.hidden_dim)
            self.central_mixer = FeedForwardMixer(info.n_agents, info.state_dim, cfg.central_mixer_dim)
            self.target_central_agent = copy.deepcopy(self.central_agent)
            self.target_central_mixer = copy.deepcopy(self.central_mixer)
        else:
            self.target_agent = copy.deepcopy(self.agent)
            self.target_mixer = copy.deepcopy(self.mixer)
        for target in self.targets().values():
            target.requires_grad_(False)

    def online(self) -> dict[str, nn.Module]:
        """The trained networks, by name."""
        names = ["agent", "mixer"] + (["central_agent", "central_mixer"] if self.central else [])
        return {n: getattr(self, n) for n in names}

    def targets(self) -> dict[str, nn.Module]:
        """The target networks, by the name of the network each one follows."""
        names = ["central_agent", "central_mixer"] if self.central else ["agent", "mixer"]
        return {n: getattr(self, f"target_{n}") for n in names}

    def trained_parameters(self) -> list[nn.Parameter]:
        return [p for net in self.online().values() for p in net.parameters()]

    @torch.no_grad()
    def sync_targets(self, tau: float = 1.0) -> None:
        """Hard copy (tau=1) or Polyak average of the online weights into the targets."""
        for name, target in self.targets().items():
            for t, s in zip(target.parameters(), getattr(self, name).parameters()):
                if tau >= 1.0:
                    t.copy_(s)
                else:
                    t.lerp_(s, tau)

    def agent_inputs(self, obs: torch.Tensor, last_actions: torch.Tensor) -> torch.Tensor:
        """``[B, T, N, O]``, ``[B, T, N]`` -> ``[B, T, N, O + A + N]``."""
        return build_inputs(obs, last_actions, self.info.n_actions)


__all__ = ["FeedForwardMixer", "MLPAgent", "QMixer", "RNNAgent", "WQMIXPolicy", "build_inputs"]
