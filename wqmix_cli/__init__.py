"""wqmix: Weighted QMIX (CW-QMIX, OW-QMIX) and QMIX.

The public API for researchers with their own loop (names load on first use, so the
``wqmix`` command starts without importing torch)::

    from wqmix_cli import Config, LearnerConfig, WQMIXPolicy, WQMIXLearner, EnvInfo
    policy = WQMIXPolicy(EnvInfo(n_agents, obs_dim, state_dim, n_actions, episode_limit),
                         LearnerConfig(), central=True)
    learner = WQMIXLearner.from_config(Config(), policy)
    info = learner.update({"state": ..., "obs": ..., ...})   # episodes or transitions

See ``wqmix_cli.samples`` for the sample layouts and ``examples/custom_loop.py``.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Config": "wqmix_cli.config",
    "EnvConfig": "wqmix_cli.config",
    "MPEConfig": "wqmix_cli.config",
    "SMAXConfig": "wqmix_cli.config",
    "SMACConfig": "wqmix_cli.config",
    "MatrixConfig": "wqmix_cli.config",
    "PredatorPreyConfig": "wqmix_cli.config",
    "AgentConfig": "wqmix_cli.config",
    "LearnerConfig": "wqmix_cli.config",
    "EpsilonConfig": "wqmix_cli.config",
    "ConfigError": "wqmix_cli.config",
    "validate": "wqmix_cli.config",
    "EnvInfo": "wqmix_cli.envs.base",
    "make_env": "wqmix_cli.envs",
    "make_vector_env": "wqmix_cli.envs",
    "WQMIXPolicy": "wqmix_cli.policy",
    "WQMIXLearner": "wqmix_cli.learner",
    "wqmix_loss": "wqmix_cli.learner",
    "EpisodeBatch": "wqmix_cli.buffer",
    "EpisodeBuffer": "wqmix_cli.buffer",
    "Actor": "wqmix_cli.actor",
    "epsilon_at": "wqmix_cli.actor",
    "episode_batch_from_sample": "wqmix_cli.samples",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'wqmix_cli' has no attribute {name!r}")
