"""Environment families behind one interface; ``make_vector_env`` builds a batch of E envs."""
from __future__ import annotations

from functools import partial

from wqmix_cli.config import (
    EnvConfig,
    MatrixConfig,
    MPEConfig,
    PredatorPreyConfig,
    SMACConfig,
    SMAXConfig,
)
from wqmix_cli.envs.base import BatchStep, EnvInfo, MultiAgentEnv, Observation, VectorEnv


def make_env(cfg: EnvConfig, render_mode: str | None = None) -> MultiAgentEnv:
    """One env of the family named by ``cfg.name`` (imported only when used)."""
    if isinstance(cfg, MPEConfig):
        from wqmix_cli.envs.mpe import MPEEnv

        return MPEEnv(cfg, render_mode=render_mode)
    if isinstance(cfg, MatrixConfig):
        from wqmix_cli.envs.matrix import MatrixGame

        return MatrixGame(cfg)
    if isinstance(cfg, PredatorPreyConfig):
        from wqmix_cli.envs.predator_prey import PredatorPrey

        return PredatorPrey(cfg)
    if isinstance(cfg, SMACConfig):
        from wqmix_cli.envs.smac import SMACEnv

        return SMACEnv(cfg)
    raise ValueError(f"env {cfg.name!r} has no single-env form")


def make_vector_env(cfg: EnvConfig, n_envs: int | None = None) -> VectorEnv:
    """``n_envs`` (default ``cfg.n_envs``) envs stepped together."""
    n = n_envs or cfg.n_envs
    if isinstance(cfg, SMAXConfig):
        from dataclasses import replace

        from wqmix_cli.envs.smax import SMAXVectorEnv

        return SMAXVectorEnv(replace(cfg, n_envs=n))
    from wqmix_cli.envs.vector import make_vector

    return make_vector([partial(make_env, cfg) for _ in range(n)], cfg.workers)


__all__ = [
    "BatchStep",
    "EnvInfo",
    "MultiAgentEnv",
    "Observation",
    "VectorEnv",
    "make_env",
    "make_vector_env",
]
