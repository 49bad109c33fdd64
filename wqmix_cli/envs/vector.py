"""E single envs stepped together, in this process or in worker processes."""
from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from wqmix_cli.envs.base import BatchStep, EnvInfo, MultiAgentEnv, Observation

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


def _worker(conn: Connection, factories: list[EnvFactory]) -> None:
    envs = SyncVectorEnv(factories)
    handlers = {"reset": lambda seed: envs.reset(seed), "step": lambda args: envs.step(*args),
                "info": lambda _: envs.info()}
    try:
        while True:
            command, payload = conn.recv()
            if command not in handlers:
                break
            try:
                conn.send((True, handlers[command](payload)))
            except Exception as err:  # handed to the parent, which raises it there
                conn.send((False, err))
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        envs.close()
        conn.close()


class SubprocVectorEnv:
    """E envs split over W worker processes; each worker steps its share in turn.

    On 2 cores, one worker beside the learner's process lets env stepping and learning
    overlap; more workers help only with more cores.
    """

    def __init__(self, factories: list[EnvFactory], workers: int) -> None:
        self.n_envs = len(factories)
        workers = max(1, min(workers, self.n_envs))
        self._bounds = np.linspace(0, self.n_envs, workers + 1).astype(int)
        if mp.get_start_method(allow_none=True) not in (None, *mp.get_all_start_methods()):
            # joblib's worker processes set a start method of their own ("loky"), which a
            # spawned child then fails to look up; ours need only the standard one.
            mp.set_start_method("spawn", force=True)
        ctx = mp.get_context("spawn")
        self._conns: list[Connection] = []
        self._procs = []
        for w in range(workers):
            parent, child = ctx.Pipe()
            share = factories[self._bounds[w] : self._bounds[w + 1]]
            proc = ctx.Process(target=_worker, args=(child, share), daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self._conns[0].send(("info", None))
        self._info: EnvInfo = self._receive(self._conns[0])

    @staticmethod
    def _receive(conn: Connection) -> Any:
        ok, payload = conn.recv()
        if not ok:
            raise payload
        return payload

    def info(self) -> EnvInfo:
        return self._info

    def reset(self, seed: int) -> Observation:
        for w, conn in enumerate(self._conns):
            conn.send(("reset", seed + int(self._bounds[w])))
        return _stack_batches([self._receive(conn) for conn in self._conns])

    def step(self, actions: np.ndarray, active: np.ndarray) -> BatchStep:
        """actions ``[E, N]`` int, active ``[E]`` bool."""
        for w, conn in enumerate(self._conns):
            lo, hi = self._bounds[w], self._bounds[w + 1]
            conn.send(("step", (actions[lo:hi], active[lo:hi])))
        parts: list[BatchStep] = [self._receive(conn) for conn in self._conns]
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
        for conn in self._conns:
            try:
                conn.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()


def _stack_batches(parts: list[Observation]) -> Observation:
    return Observation(
        np.concatenate([p.obs for p in parts]),
        np.concatenate([p.state for p in parts]),
        np.concatenate([p.avail for p in parts]),
    )


def make_vector(factories: list[EnvFactory], workers: int) -> Any:
    """A SyncVectorEnv for ``workers == 0``, else a SubprocVectorEnv."""
    return SyncVectorEnv(factories) if workers == 0 else SubprocVectorEnv(factories, workers)
