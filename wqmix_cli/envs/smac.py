"""SMAC / SMACv2 (StarCraft II) behind the ``MultiAgentEnv`` interface, with crash restarts.

StarCraft II runs as a separate process that sometimes dies or stops answering mid-run.
``SMACEnv`` then closes the env, builds a fresh one and raises ``EpisodeRestart`` so the
runner redoes the episode; after ``cfg.max_restarts`` restarts in a row the error
propagates.
"""
from __future__ import annotations

import copy
import importlib
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from wqmix_cli.config import SMACConfig
from wqmix_cli.envs.base import EnvInfo, EpisodeRestart, MissingDependency, Observation

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "install it with `pip install git+https://github.com/oxwhirl/smacv2` plus StarCraft II "
    "and the SMAC maps (https://github.com/Blizzard/s2client-proto#downloads), with SC2PATH "
    "set to the game's folder"
)

_T = TypeVar("_T")


def _default_sc2_path() -> str:
    """Where pysc2 looks for StarCraft II when SC2PATH is unset."""
    if sys.platform == "darwin":
        return "/Applications/StarCraft II"
    if sys.platform.startswith("win"):
        return "C:/Program Files (x86)/StarCraft II"
    return "~/StarCraftII"


def _check_starcraft() -> None:
    """Raise MissingDependency unless the StarCraft II folder exists."""
    path = os.environ.get("SC2PATH")
    if path:
        if not os.path.isdir(os.path.expanduser(path)):
            raise MissingDependency(
                f"StarCraft II not found: SC2PATH={path} is not a folder; {INSTALL_HINT}"
            )
        return
    default = _default_sc2_path()
    if not os.path.isdir(os.path.expanduser(default)):
        raise MissingDependency(
            f"StarCraft II not found: SC2PATH is unset and {default} does not exist; {INSTALL_HINT}"
        )


def _load_env_class(package: str, capability: bool) -> Callable[..., Any]:
    """``StarCraft2Env`` from smacv2 or smac (``package`` auto tries smacv2 first).

    With ``capability`` (a non-empty capability_config) it is smacv2's
    ``StarCraftCapabilityEnvWrapper``, its documented way to run the procedurally
    generated maps (``10gen_protoss`` ...): the wrapper draws a new team each reset.
    """
    names = ["smacv2", "smac"] if package == "auto" else [package]
    errors = []
    for name in names:
        try:
            module = importlib.import_module(f"{name}.env")
        except ImportError as err:
            errors.append(" ".join(str(err).split()))  # the message stays one line
            continue
        if not capability:
            return module.StarCraft2Env
        try:  # early smacv2 releases install as `smac` and keep the wrapper in a submodule
            return importlib.import_module(f"{name}.env.starcraft2.wrapper").StarCraftCapabilityEnvWrapper
        except (ImportError, AttributeError):
            raise MissingDependency(
                f"env.capability_config needs smacv2's StarCraftCapabilityEnvWrapper, which the "
                f"installed {name} package lacks; {INSTALL_HINT}"
            ) from None
    raise MissingDependency(
        f"env=smac needs smacv2 (or smac), which cannot be imported ({'; '.join(errors)}); {INSTALL_HINT}"
    )


class SMACEnv:
    """One SMAC battle: N agents, obs ``[N, O]``, state ``[S]``, avail ``[N, A]`` bool.

    ``env_factory(**kwargs)`` builds the underlying env (default: StarCraft2Env, or the
    capability wrapper for SMACv2 maps) with ``map_name``, ``seed``,
    ``continuing_episode=True`` (only that makes SMAC flag a timeout with
    ``info["episode_limit"]``) and, when given, ``capability_config``. Tests pass a stand-in.

    Seeds: StarCraft2Env takes its seed at construction and hands it to the game when
    StarCraft II launches (on the first reset). The first ``reset(seed)`` rebuilds the env
    with that seed; later seeds are ignored, since relaunching the game for every episode
    would cost tens of seconds each: the game's own random stream carries on instead.

    Failures: any exception from the game during ``reset``/``step`` (or SMAC's own silent
    relaunch, a terminal step without ``battle_won`` in its info) closes the env, builds a
    new one, counts it in ``self.restarts`` and raises ``EpisodeRestart``. Up to
    ``cfg.max_restarts`` restarts in a row are allowed; the next failure re-raises the
    game's error. The count in a row starts over when an episode ends normally.
    """

    def __init__(self, cfg: SMACConfig, env_factory: Callable[..., Any] | None = None) -> None:
        if env_factory is None:
            env_factory = _load_env_class(cfg.package, bool(cfg.capability_config))
            _check_starcraft()
        self.cfg = cfg
        self.restarts = 0
        self._failures_in_row = 0
        self._factory = env_factory
        self._seed: int | None = None
        self._env = self._build()
        raw = self._env.get_env_info()
        self._info = EnvInfo(
            n_agents=int(raw["n_agents"]),
            obs_dim=int(raw["obs_shape"]),
            state_dim=int(raw["state_shape"]),
            n_actions=int(raw["n_actions"]),
            episode_limit=int(raw["episode_limit"]),
        )

    def _build(self) -> Any:
        kwargs: dict[str, Any] = {"map_name": self.cfg.map_name, "seed": self._seed, "continuing_episode": True}
        if self.cfg.capability_config:
            # The wrapper writes into the config it is given: hand each build its own copy.
            kwargs["capability_config"] = copy.deepcopy(self.cfg.capability_config)
        return self._factory(**kwargs)

    def _replace_env(self) -> None:
        try:
            self._env.close()
        except Exception as err:  # a dead game may fail to close; the new one matters
            log.debug("closing the failed StarCraft II env raised %r", err)
        self._env = self._build()

    def _guarded(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` against the game; on a failure restart the game (see the class doc)."""
        try:
            return fn()
        except (EpisodeRestart, MissingDependency):
            raise
        except Exception as err:
            self._failures_in_row += 1
            if self._failures_in_row > self.cfg.max_restarts:
                log.error(
                    "StarCraft II failed %d times in a row (env.max_restarts=%d); giving up: %r",
                    self._failures_in_row, self.cfg.max_restarts, err,
                )
                raise
            self.restarts += 1
            log.warning(
                "StarCraft II failed (%r); restarting it and redoing the episode "
                "(restart %d in all, %d of %d in a row)",
                err, self.restarts, self._failures_in_row, self.cfg.max_restarts,
            )
            self._replace_env()
            raise EpisodeRestart(f"StarCraft II failed ({type(err).__name__}: {err}); redo the episode") from err

    def info(self) -> EnvInfo:
        return self._info

    def observe(self) -> Observation:
        """obs ``[N, O]`` float32, state ``[S]`` float32, avail ``[N, A]`` bool (dead agents: no-op, index 0)."""
        info = self._info
        return Observation(
            obs=np.asarray(self._env.get_obs(), dtype=np.float32).reshape(info.n_agents, info.obs_dim),
            state=np.asarray(self._env.get_state(), dtype=np.float32).reshape(info.state_dim),
            avail=np.asarray(self._env.get_avail_actions()).astype(bool).reshape(info.n_agents, info.n_actions),
        )

    def reset(self, seed: int | None = None) -> Observation:
        """Start a battle; the first ``seed`` rebuilds the env with it (see the class doc)."""
        if seed is not None and self._seed is None:
            self._seed = int(seed)
            self._replace_env()

        def _reset() -> Observation:
            self._env.reset()
            return self.observe()

        return self._guarded(_reset)

    def step(self, actions: np.ndarray) -> tuple[float, bool, bool, dict[str, Any]]:
        """Apply ``actions [N]`` (ints); returns (reward, terminated, truncated, info).

        SMAC ends a timed-out episode with ``terminated`` and ``info["episode_limit"]``:
        that is reported as ``truncated=True, terminated=False``. ``info["battle_won"]`` is
        a float (1.0 on a win).
        """

        def _step() -> tuple[float, bool, dict[str, Any]]:
            reward, terminated, info = self._env.step([int(a) for a in np.asarray(actions).reshape(-1)])
            if terminated and "battle_won" not in info:
                # SMAC caught a lost connection itself, relaunched the game and ended the episode.
                raise ConnectionError("StarCraft II connection lost; SMAC relaunched the game mid-episode")
            return reward, terminated, info

        reward, terminated, info = self._guarded(_step)
        truncated = bool(info.get("episode_limit", False))
        terminated = bool(terminated) and not truncated
        if terminated or truncated:
            self._failures_in_row = 0
        return float(reward), terminated, truncated, {**info, "battle_won": float(bool(info.get("battle_won", False)))}

    def render(self) -> np.ndarray:
        raise NotImplementedError("SMAC has no frame renderer here; save a StarCraft II replay instead")

    def close(self) -> None:
        self._env.close()
