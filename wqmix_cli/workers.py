"""Child processes that each build one object and run its methods on request, over a pipe."""
from __future__ import annotations

import multiprocessing as mp
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import numpy as np


def _serve(conn: Connection, make: Callable[[], Any]) -> None:
    # Ctrl-C (and a job scheduler's SIGTERM) reach the whole process group; the parent stops
    # at its next boundary, which may need this worker's answer, and then closes it.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    try:
        target = make()
    except Exception as err:  # handed to the parent, which raises it there
        conn.send((False, err))
        conn.close()
        return
    conn.send((True, None))
    try:
        while True:
            method, args = conn.recv()
            if method is None:
                break
            try:
                conn.send((True, getattr(target, method)(*args)))
            except Exception as err:
                conn.send((False, err))
    except EOFError:  # the parent is gone
        pass
    finally:
        target.close()
        conn.close()


def share_bounds(n_items: int, workers: int) -> list[int]:
    """Where each worker's share of ``n_items`` starts, then ``n_items``: ``[0, ..., n_items]``,
    for ``workers`` workers (at least one, at most one per item), shares differing by one at most."""
    parts = max(1, min(workers, n_items))
    return np.linspace(0, n_items, parts + 1).astype(int).tolist()


class WorkerProcess:
    """``make()`` (picklable) runs in a spawned child; ``call(name, *args)`` runs the method
    ``name`` of what it returned there and returns its result, or raises its exception here.
    ``send`` then ``receive`` is the same call split, so that several workers work at once.
    The object's ``close()`` runs when the worker is closed."""

    def __init__(self, make: Callable[[], Any]) -> None:
        if mp.get_start_method(allow_none=True) not in (None, *mp.get_all_start_methods()):
            # joblib's worker processes set a start method of their own ("loky"), which a
            # spawned child then fails to look up; ours need only the standard one.
            mp.set_start_method("spawn", force=True)
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, make), daemon=True)
        self.process.start()
        child.close()
        try:
            self.receive()
        except BaseException:
            self.close()
            raise

    def send(self, name: str, *args: Any) -> None:
        self._conn.send((name, args))

    def receive(self) -> Any:
        ok, payload = self._conn.recv()
        if not ok:
            raise payload
        return payload

    def call(self, name: str, *args: Any) -> Any:
        self.send(name, *args)
        return self.receive()

    def close(self, timeout_s: float = 5.0) -> None:
        try:
            self._conn.send((None, ()))
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=timeout_s)
        if self.process.is_alive():
            self.process.kill()  # it ignores SIGTERM
            self.process.join()
        self._conn.close()
