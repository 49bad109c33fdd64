"""Where train's episodes are collected: the runner and its actor in this process, or the whole
episode loop in worker processes.

A collector acts with its own copy of the online agent, which only ``sync`` changes, so a
learner may train the policy meanwhile. With ``env.workers`` > 0 each worker process runs
the episode loop (its share of the envs and an actor) and answers once per batch of
episodes: stepping the envs in workers while this process acted cost two messages per step,
on a 2-core VM about 0.9 ms of CPU a step on the two sides, a fifth of MPE's collection.
"""
from __future__ import annotations

import dataclasses
from functools import partial

import numpy as np
import torch
from torch import nn

from wqmix_cli.actor import Actor
from wqmix_cli.buffer import EpisodeBatch
from wqmix_cli.config import EnvConfig, LearnerConfig, SMAXConfig
from wqmix_cli.envs import make_vector_env
from wqmix_cli.envs.base import EnvInfo
from wqmix_cli.policy import WQMIXPolicy
from wqmix_cli.runner import EpisodeRunner, Episodes
from wqmix_cli.workers import WorkerProcess, share_bounds


class LocalCollector:
    """``env_cfg.n_envs`` envs in this process and an actor on ``device``.

    ``share`` (first, total): these envs are ``[first, first + n_envs)`` of a batch of
    ``total`` collected by several collectors that act as one (``Actor``'s ``share``).
    """

    def __init__(self, env_cfg: EnvConfig, learner_cfg: LearnerConfig, seed: int, device: torch.device,
                 share: tuple[int, int] | None = None) -> None:
        self.env = make_vector_env(dataclasses.replace(env_cfg, workers=0))
        try:
            self.info: EnvInfo = self.env.info()
            with torch.random.fork_rng(devices=[]):  # its weights come from sync, not the run's seeded draws
                self.policy = WQMIXPolicy(self.info, learner_cfg, central=False).to(device).requires_grad_(False)
            # frozen: the C step keeps its copy of the weights from one episode to the next
            self.runner = EpisodeRunner(self.env, Actor(self.policy, device, seed=seed, frozen=True, share=share))
        except BaseException:
            self.env.close()
            raise
        self.n_envs = self.env.n_envs

    def run(self, epsilon: float, seed: int) -> Episodes:
        """``n_envs`` episodes, env i reset with ``seed + i``."""
        return self.runner.run(epsilon, seed)

    def sync(self, agent: nn.Module | dict[str, torch.Tensor]) -> None:
        """Act with these weights (a module or its ``state_dict``) from now on."""
        self.policy.agent.load_state_dict(agent if isinstance(agent, dict) else agent.state_dict())
        self.runner.actor.sync()

    def rng_state(self) -> torch.Tensor:
        return self.runner.actor.generator.get_state()

    def set_rng_state(self, state: torch.Tensor) -> None:
        self.runner.actor.generator.set_state(state)

    def close(self) -> None:
        self.env.close()


class _InWorker(LocalCollector):
    """A worker process's collector, on one CPU thread (the learner's process has the others).
    Its episodes leave as numpy arrays: torch tensors would be pickled into shared-memory files."""

    def __init__(self, env_cfg: EnvConfig, learner_cfg: LearnerConfig, seed: int, share: tuple[int, int]) -> None:
        torch.set_num_threads(1)
        super().__init__(env_cfg, learner_cfg, seed, torch.device("cpu"), share)

    def env_info(self) -> EnvInfo:
        return self.info

    def run_arrays(self, epsilon: float, seed: int) -> dict:
        episodes = self.run(epsilon, seed)
        batch = {f.name: getattr(episodes.batch, f.name).numpy() for f in dataclasses.fields(EpisodeBatch)}
        return {"batch": batch, "lengths": episodes.lengths.numpy(), "returns": episodes.returns,
                "battle_won": episodes.battle_won}


def _padded(arrays: list[np.ndarray]) -> torch.Tensor:
    """Arrays ``[E_w, T_w, ...]`` -> ``[sum E_w, max T_w, ...]``, zeros after each one's T_w."""
    steps = max(a.shape[1] for a in arrays)
    out = np.zeros((sum(len(a) for a in arrays), steps, *arrays[0].shape[2:]), dtype=arrays[0].dtype)
    row = 0
    for a in arrays:
        out[row : row + len(a), : a.shape[1]] = a
        row += len(a)
    return torch.from_numpy(out)


class WorkerCollector:
    """``env_cfg.n_envs`` envs split over ``env_cfg.workers`` worker processes, each with a
    ``LocalCollector`` of its share on the CPU. The shares' actors draw their exploration
    noise as one actor over all envs would, so the episodes are those of one
    ``LocalCollector`` with the same seed and weights, whatever the number of workers."""

    def __init__(self, env_cfg: EnvConfig, learner_cfg: LearnerConfig, seed: int) -> None:
        n = env_cfg.n_envs
        bounds = share_bounds(n, env_cfg.workers)
        self.firsts = bounds[:-1]
        self.workers: list[WorkerProcess] = []
        try:
            for first, end in zip(bounds, bounds[1:]):
                share_cfg = dataclasses.replace(env_cfg, n_envs=end - first)
                self.workers.append(WorkerProcess(partial(_InWorker, share_cfg, learner_cfg, seed, (first, n))))
            self.info: EnvInfo = self.workers[0].call("env_info")
        except BaseException:
            self.close()
            raise
        self.n_envs = n

    def _all(self, name: str, *args_of_worker: tuple) -> list:
        for worker, args in zip(self.workers, args_of_worker):
            worker.send(name, *args)
        return [worker.receive() for worker in self.workers]

    def run(self, epsilon: float, seed: int) -> Episodes:
        """``n_envs`` episodes, env i reset with ``seed + i``."""
        parts = self._all("run_arrays", *[(epsilon, seed + first) for first in self.firsts])
        fields = {f.name: _padded([p["batch"][f.name] for p in parts]) for f in dataclasses.fields(EpisodeBatch)}
        won = [p["battle_won"] for p in parts]
        return Episodes(
            EpisodeBatch(**fields),
            torch.from_numpy(np.concatenate([p["lengths"] for p in parts])),
            np.concatenate([p["returns"] for p in parts]),
            None if any(w is None for w in won) else np.concatenate(won),
        )

    def sync(self, agent: nn.Module) -> None:
        """Act with ``agent``'s weights from now on."""
        state = {k: v.detach().cpu() for k, v in agent.state_dict().items()}
        self._all("sync", *[(state,)] * len(self.workers))

    def rng_state(self) -> torch.Tensor:
        """The actors' generator state (the first worker's: all draw alike)."""
        return self.workers[0].call("rng_state")

    def set_rng_state(self, state: torch.Tensor) -> None:
        self._all("set_rng_state", *[(state,)] * len(self.workers))

    def close(self) -> None:
        for worker in self.workers:
            worker.close()


Collector = LocalCollector | WorkerCollector


def make_collector(
    env_cfg: EnvConfig, learner_cfg: LearnerConfig, seed: int, device: torch.device
) -> Collector:
    """Worker processes where ``env.workers`` > 0 (SMAX steps its battles in one jax call and
    has none), else this process."""
    if env_cfg.workers > 0 and not isinstance(env_cfg, SMAXConfig):
        return WorkerCollector(env_cfg, learner_cfg, seed)
    return LocalCollector(env_cfg, learner_cfg, seed, device)
