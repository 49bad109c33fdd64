"""The two environment interfaces the runner sees: one env, and a batch of envs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class EnvInfo:
    """Sizes of one environment: N agents, O obs dim, S state dim, A actions, T steps."""

    n_agents: int
    obs_dim: int
    state_dim: int
    n_actions: int
    episode_limit: int


@dataclass
class Observation:
    """What the agents see after a reset or a step.

    obs ``[N, O]`` float32, state ``[S]`` float32, avail ``[N, A]`` bool
    (for a batch of E envs: ``[E, N, O]``, ``[E, S]``, ``[E, N, A]``).
    """

    obs: np.ndarray
    state: np.ndarray
    avail: np.ndarray


class MultiAgentEnv(Protocol):
    """A cooperative multi-agent env with one team reward.

    ``step`` returns ``(reward, terminated, truncated, info)``; a time-limit end is
    ``truncated`` (not a terminal state: the learner bootstraps through it). ``info`` may
    carry ``battle_won``. ``observe`` returns what the agents see now.
    """

    def info(self) -> EnvInfo: ...

    def reset(self, seed: int | None = None) -> Observation: ...

    def step(self, actions: np.ndarray) -> tuple[float, bool, bool, dict[str, Any]]: ...

    def observe(self) -> Observation: ...

    def render(self) -> np.ndarray: ...

    def close(self) -> None: ...


@dataclass
class BatchStep:
    """The result of stepping E envs together.

    ``observation`` holds ``[E, ...]`` arrays; ``reward`` ``[E]`` float32,
    ``terminated``/``truncated`` ``[E]`` bool; ``info`` maps a key (``battle_won``) to
    an ``[E]`` array. Envs that were not active keep their last values and report
    reward 0.
    """

    observation: Observation
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    info: dict[str, np.ndarray]


class VectorEnv(Protocol):
    """E envs stepped together, without auto-reset, so episodes stay whole.

    ``reset(seed)`` resets all E envs (env e gets ``seed + e``); ``step(actions [E, N],
    active [E] bool)`` steps only the active ones (the runner deactivates an env once its
    episode ended).
    """

    n_envs: int

    def info(self) -> EnvInfo: ...

    def reset(self, seed: int) -> Observation: ...

    def step(self, actions: np.ndarray, active: np.ndarray) -> BatchStep: ...

    def close(self) -> None: ...


class MissingDependency(RuntimeError):
    """An env's package or simulator is not installed; the message says how to get it."""


class EpisodeRestart(RuntimeError):
    """The simulator died mid-episode and was restarted: the runner redoes the episodes."""
