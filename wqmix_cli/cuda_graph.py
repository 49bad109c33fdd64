"""One learner step (loss, backward, clipping, optimiser step) replayed as a CUDA graph.

On a GPU an update at batch 32 is a few hundred small kernels, and launching them is its
cost: about 14 ms on an H200 for well under 1 ms of arithmetic. Captured once, the whole
step replays in one launch. Batches are padded to the episode limit first, so a run whose
episodes differ in length still uses one graph: the padded steps are masked out of the loss
exactly as the buffer's own padding is, and on a GPU they cost little next to the launches.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import fields

import torch

from wqmix_cli.buffer import PER_OBSERVATION, EpisodeBatch

log = logging.getLogger(__name__)

# Eager steps of each batch shape before its capture, on a side stream as torch.cuda.graph
# asks: they create the optimiser's state and let cuDNN and cuBLAS pick their kernels.
WARMUP_STEPS = 3
# Each graph keeps its own memory; shapes beyond these run eagerly.
MAX_GRAPHS = 4


class _Captured:
    """A graph with the padded input tensors it reads and the statistics tensor it writes."""

    def __init__(self, inputs: EpisodeBatch) -> None:
        self.inputs = inputs
        self.graph: torch.cuda.CUDAGraph | None = None
        self.stats: torch.Tensor | None = None
        self.steps = 0


class GraphedStep:
    """Runs ``step`` (gradients and optimiser step on a batch -> statistics ``[S]``) on
    padded copies of each batch: eagerly for the first ``WARMUP_STEPS`` of each shape, then
    as a replay of the graph captured from it.

    ``step(batch, check)`` must call ``check(stats)`` between the gradients and the optimiser
    step (the eager steps stop there on a bad loss); a replay cannot stop inside the graph,
    so ``run`` checks the statistics after it.
    """

    def __init__(self, step: Callable[[EpisodeBatch, Callable[[torch.Tensor], None]], torch.Tensor],
                 check: Callable[[torch.Tensor], None], episode_limit: int) -> None:
        self._step, self._check = step, check
        self._episode_limit = episode_limit
        self._captured: dict[tuple, _Captured] = {}
        self._failed = False
        self._side = torch.cuda.Stream()

    @property
    def captured(self) -> int:
        """How many graphs are captured."""
        return sum(slot.graph is not None for slot in self._captured.values())

    def reset(self) -> None:
        """Drop every graph (after the optimiser's state was replaced, say)."""
        self._captured.clear()

    def run(self, batch: EpisodeBatch, device: torch.device) -> torch.Tensor:
        """One step on ``batch``; returns the statistics (on ``device``)."""
        steps = max(batch.max_steps, self._episode_limit)
        key = (batch.batch_size, steps, *(getattr(batch, f.name).shape[2:] for f in fields(EpisodeBatch)))
        slot = self._captured.get(key)
        if slot is None:
            if len(self._captured) >= MAX_GRAPHS:
                return self._step(batch.to(device), self._check)
            slot = self._captured[key] = _Captured(_padded_like(batch, steps, device))
        _fill(slot.inputs, batch)
        if slot.graph is None and not self._failed and slot.steps >= WARMUP_STEPS:
            self._capture(slot)
        if slot.graph is None:  # still warming up, or the capture failed
            slot.steps += 1
            return self._on_side_stream(lambda: self._step(slot.inputs, self._check))
        slot.graph.replay()
        self._check(slot.stats)
        return slot.stats

    def _on_side_stream(self, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        self._side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self._side):
            out = fn()
        torch.cuda.current_stream().wait_stream(self._side)
        return out

    def _capture(self, slot: _Captured) -> None:
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: the actor may run on the GPU in another thread meanwhile.
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                stats = self._step(slot.inputs, lambda _: None)
        except RuntimeError as err:
            self._failed = True
            log.warning("CUDA graph capture failed, updates run eagerly: %s", str(err).splitlines()[0])
            return
        slot.graph, slot.stats = graph, stats


def _padded_like(batch: EpisodeBatch, steps: int, device: torch.device) -> EpisodeBatch:
    """Zeroed tensors of ``batch``'s dtypes and shapes with ``steps`` steps, on ``device``."""
    out = {}
    for f in fields(EpisodeBatch):
        src = getattr(batch, f.name)
        span = steps + 1 if f.name in PER_OBSERVATION else steps
        out[f.name] = torch.zeros((src.shape[0], span, *src.shape[2:]), dtype=src.dtype, device=device)
    return EpisodeBatch(**out)


def _fill(dest: EpisodeBatch, batch: EpisodeBatch) -> None:
    """``batch`` into the front of ``dest``'s steps, zeros (False) after them."""
    for f in fields(EpisodeBatch):
        to, src = getattr(dest, f.name), getattr(batch, f.name)
        span = src.shape[1]
        to[:, :span].copy_(src, non_blocking=True)
        to[:, span:].zero_()
