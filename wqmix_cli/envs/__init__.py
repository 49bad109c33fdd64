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
from wqmix_cli.envs.base import BatchStep, EnvInfo, MissingDependency, MultiAgentEnv, Observation, VectorEnv


def _smax_module():
    try:
        from wqmix_cli.envs import smax
    except ImportError as err:
        raise MissingDependency(
            f"env=smax needs jaxmarl ({err.name or err} is missing): pip install -e '.[smax]'"
        ) from None
    return smax


def check_env(cfg: EnvConfig) -> None:
    """Checks that need the env's package (a SMAX map name, jax's devices); raises ConfigError or
    MissingDependency with one line."""
    if isinstance(cfg, SMAXConfig):
        from wqmix_cli.config import ConfigError

        smax = _smax_module()
        maps = smax.known_maps()
        if cfg.map_name not in maps:
            raise ConfigError(f"env.map_name={cfg.map_name!r} is not a SMAX map; allowed: {', '.join(maps)}")
        platforms = smax.jax_platforms()
        if cfg.jax_device not in platforms:
            raise ConfigError(
                f"env.jax_device={cfg.jax_device!r}, but this jax has no such device; allowed here: {', '.join(platforms)}"
            )


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
    if isinstance(cfg, SMAXConfig):
        return _smax_module().SMAXEnv(cfg, render_mode=render_mode)
    raise ValueError(f"env {cfg.name!r} has no single-env form")


def make_vector_env(cfg: EnvConfig, n_envs: int | None = None) -> VectorEnv:
    """``n_envs`` (default ``cfg.n_envs``) envs stepped together."""
    n = n_envs or cfg.n_envs
    if isinstance(cfg, SMAXConfig):
        from dataclasses import replace

        return _smax_module().SMAXVectorEnv(replace(cfg, n_envs=n))
    from wqmix_cli.envs.vector import make_vector

    return make_vector([partial(make_env, cfg) for _ in range(n)], cfg.workers)


__all__ = [
    "BatchStep",
    "EnvInfo",
    "MultiAgentEnv",
    "Observation",
    "VectorEnv",
    "check_env",
    "make_env",
    "make_vector_env",
]
