"""E single envs stepped together, in this process or in worker processes."""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from wqmix_cli.envs.base import BatchStep, EnvInfo, MultiAgentEnv, Observation
from wqmix_cli.workers import WorkerProcess, share_bounds

EnvFactory = Callable[[], MultiAgentEnv]


def _stack(observations: list[Observation]) -> Observation:
    return Observation(
        np.stack([o.obs for o in observations]),
        np.stack([o.state for o in observations]),
        np.stack([o.avail for o in observations]),
    )


class SyncVectorEnv:
    """E envs stepped one after another in this process."""

    def __init__(self, factories: list[EnvFactory]) -> None:
        self.envs = [make() for make in factories]
        self.n_envs = len(self.envs)
        self._last: list[Observation] = []

    def info(self) -> EnvInfo:
        return self.envs[0].info()

    def reset(self, seed: int) -> Observation:
        self._last = [env.reset(seed + i) for i, env in enumerate(self.envs)]
        return _stack(self._last)

    def step(self, actions: np.ndarray, active: np.ndarray) -> BatchStep:
        """actions ``[E, N]`` int, active ``[E]`` bool."""
        e = self.n_envs
        reward = np.zeros(e, dtype=np.float32)
        terminated = np.zeros(e, dtype=bool)
        truncated = np.zeros(e, dtype=bool)
        info: dict[str, np.ndarray] = {}
        for i, env in enumerate(self.envs):
            if not active[i]:
                continue
            r, term, trunc, extra = env.step(actions[i])
            reward[i], terminated[i], truncated[i] = r, term, trunc
            for key, value in extra.items():
                info.setdefault(key, np.zeros(e, dtype=np.float32))[i] = float(value)
            self._last[i] = env.observe()
        return BatchStep(_stack(self._last), reward, terminated, truncated, info)

    def close(self) -> None:
        for env in self.envs:
            env.close()


class SubprocVectorEnv:
    """E envs split over W worker processes; each worker steps its share in turn.

    On 2 cores, one worker beside the learner's process lets env stepping and learning
    overlap; more workers help only with more cores. (Training runs the whole episode loop
    in workers instead: ``wqmix_cli.collector``.)
    """

    def __init__(self, factories: list[EnvFactory], workers: int) -> None:
        self.n_envs = len(factories)
        self._bounds = share_bounds(self.n_envs, workers)
        self.workers: list[WorkerProcess] = []
        try:
            for w in range(len(self._bounds) - 1):
                share = factories[self._bounds[w] : self._bounds[w + 1]]
                self.workers.append(WorkerProcess(partial(SyncVectorEnv, share)))
            self._info: EnvInfo = self.workers[0].call("info")
        except BaseException:
            self.close()
            raise

    def info(self) -> EnvInfo:
        return self._info

    def reset(self, seed: int) -> Observation:
        for w, worker in enumerate(self.workers):
            worker.send("reset", seed + self._bounds[w])
        return _stack_batches([worker.receive() for worker in self.workers])

    def step(self, actions: np.ndarray, active: np.ndarray) -> BatchStep:
        """actions ``[E, N]`` int, active ``[E]`` bool."""
        for w, worker in enumerate(self.workers):
            lo, hi = self._bounds[w], self._bounds[w + 1]
            worker.send("step", actions[lo:hi], active[lo:hi])
        parts: list[BatchStep] = [worker.receive() for worker in self.workers]
        keys = {k for p in parts for k in p.info}
        info = {
            k: np.concatenate([p.info.get(k, np.zeros(len(p.reward), np.float32)) for p in parts])
            for k in keys
        }
        return BatchStep(
            _stack_batches([p.observation for p in parts]),
            np.concatenate([p.reward for p in parts]),
            np.concatenate([p.terminated for p in parts]),
            np.concatenate([p.truncated for p in parts]),
            info,
        )

    def close(self) -> None:
        for worker in self.workers:
            worker.close()


def _stack_batches(parts: list[Observation]) -> Observation:
    return Observation(
        np.concatenate([p.obs for p in parts]),
        np.concatenate([p.state for p in parts]),
        np.concatenate([p.avail for p in parts]),
    )


def make_vector(factories: list[EnvFactory], workers: int) -> Any:
    """A SyncVectorEnv for ``workers == 0``, else a SubprocVectorEnv."""
    return SyncVectorEnv(factories) if workers == 0 else SubprocVectorEnv(factories, workers)
