"""Collectors: episodes from worker processes are those of one collector in this process."""
import dataclasses

import numpy as np
import pytest
import torch

from wqmix_cli.buffer import EpisodeBatch
from wqmix_cli.collector import LocalCollector, WorkerCollector, _padded, make_collector
from wqmix_cli.config import LearnerConfig, MPEConfig, SMAXConfig
from wqmix_cli.policy import WQMIXPolicy

CPU = torch.device("cpu")
LEARNER = LearnerConfig(hidden_dim=16)


def assert_same_episodes(a, b) -> None:
    for field in dataclasses.fields(EpisodeBatch):
        assert torch.equal(getattr(a.batch, field.name), getattr(b.batch, field.name)), field.name
    assert torch.equal(a.lengths, b.lengths)
    np.testing.assert_array_equal(a.returns, b.returns)


@pytest.fixture()
def pair():
    """Three MPE envs in this process and the same split over two workers (one env and two),
    acting with the same weights."""
    cfg = MPEConfig(n_envs=3, workers=2)
    local = LocalCollector(cfg, LEARNER, seed=4, device=CPU)
    workers = WorkerCollector(cfg, LEARNER, seed=4)
    agent = WQMIXPolicy(local.info, LEARNER, central=False).agent
    local.sync(agent)
    workers.sync(agent)
    yield local, workers
    local.close()
    workers.close()


def test_workers_collect_the_episodes_of_one_collector_here(pair) -> None:
    local, workers = pair
    assert workers.info == local.info and workers.n_envs == 3 and len(workers.workers) == 2
    for seed, epsilon in ((11, 0.5), (14, 0.5), (17, 0.0)):
        ours, theirs = local.run(epsilon, seed), workers.run(epsilon, seed)
        assert_same_episodes(ours, theirs)
    assert ours.batch.obs.shape == (3, 26, 3, 18)
    assert torch.equal(workers.rng_state(), local.rng_state())


def test_sync_changes_what_the_workers_act_with(pair) -> None:
    local, workers = pair
    before = workers.run(0.0, 5)
    other = WQMIXPolicy(local.info, LEARNER, central=False).agent
    workers.sync(other)
    after = workers.run(0.0, 5)
    assert not torch.equal(before.batch.actions, after.batch.actions)
    local.sync(other)
    assert_same_episodes(local.run(0.0, 5), after)


def test_a_restored_generator_repeats_the_episodes(pair) -> None:
    _, workers = pair
    state = workers.rng_state()
    first = workers.run(1.0, 3)
    workers.set_rng_state(state)
    assert_same_episodes(workers.run(1.0, 3), first)


def test_an_error_in_a_worker_is_raised_here_and_leaves_no_process() -> None:
    cfg = MPEConfig(n_envs=2, workers=2, scenario="no_such_scenario")
    with pytest.raises(ValueError, match="unknown MPE scenario"):
        WorkerCollector(cfg, LEARNER, seed=0)
    import multiprocessing

    assert not [p for p in multiprocessing.active_children() if p.is_alive()]


def test_shorter_episodes_are_padded_with_zeros() -> None:
    out = _padded([np.ones((1, 2, 3), np.float32), np.full((2, 4, 3), 2, np.float32)])
    assert out.shape == (3, 4, 3)
    assert out[0, :2].eq(1).all() and out[0, 2:].eq(0).all() and out[1:].eq(2).all()


def test_smax_and_zero_workers_collect_in_this_process() -> None:
    collector = make_collector(MPEConfig(n_envs=1, workers=0), LEARNER, seed=0, device=CPU)
    try:
        assert isinstance(collector, LocalCollector)
    finally:
        collector.close()
    pytest.importorskip("jaxmarl")  # SMAX steps all its battles in one jax call: no workers
    smax = make_collector(SMAXConfig(n_envs=2, workers=2), LEARNER, seed=0, device=CPU)
    try:
        assert isinstance(smax, LocalCollector)
    finally:
        smax.close()


def test_workers_ignore_the_stop_signals_their_parent_handles() -> None:
    """Ctrl-C reaches the whole process group; train stops at its next boundary, which needs
    the workers' episodes, and then closes them."""
    import os
    import signal

    collector = WorkerCollector(MPEConfig(n_envs=1, workers=1), LEARNER, seed=0)
    try:
        collector.sync(WQMIXPolicy(collector.info, LEARNER, central=False).agent)
        process = collector.workers[0].process
        os.kill(process.pid, signal.SIGINT)
        os.kill(process.pid, signal.SIGTERM)
        assert collector.run(0.5, 1).steps == 25
    finally:
        collector.close()
    assert not process.is_alive()
