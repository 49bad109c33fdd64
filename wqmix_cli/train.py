"""The training loop: collect -> store -> update -> evaluate -> checkpoint -> log."""
from __future__ import annotations

import dataclasses
import logging
import os
import random
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wqmix_cli.actor import epsilon_at
from wqmix_cli.buffer import EpisodeBuffer
from wqmix_cli.checkpoint import (
    CheckpointError,
    env_size_mismatch,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from wqmix_cli.collector import Collector, make_collector
from wqmix_cli.config import Config, ConfigError
from wqmix_cli.cpu import available_cores, default_threads, keep_freed_memory, physical_memory
from wqmix_cli.envs.base import EnvInfo
from wqmix_cli.evaluate import run_greedy, summarise
from wqmix_cli.learner import WQMIXLearner, make_lr_schedule
from wqmix_cli.logger import RunLogger
from wqmix_cli.policy import WQMIXPolicy

log = logging.getLogger("wqmix")
LOG_TAGS = {
    "loss": "loss/total", "loss_qmix": "loss/qmix", "loss_central": "loss/central", "w_mean": "train/w_mean",
    "predict_q": "q/q_tot_mean", "target_q": "q/target_mean", "grad_norm": "train/grad_norm",
    "learning_rate": "train/lr",
}
TEST_SEED_OFFSET = 1 << 30
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


@dataclass
class Counters:
    t_env: int = 0
    episodes: int = 0
    last_test: int | None = None
    last_log: int = 0
    last_save: int = 0
    update_credit: float = 0.0
    pending_returns: list[float] = dataclasses.field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is visible; allowed here: cpu, auto")
    return torch.device(name)


def check_buffer_fits(cfg: Config, info: EnvInfo) -> None:
    """Raise ConfigError (one line) when ``learner.buffer_size`` episodes of this env take
    more than this machine's memory: the buffer is allocated whole at the start."""
    need, have = EpisodeBuffer.bytes_for(info, cfg.learner.buffer_size), physical_memory()
    if have is not None and need > have:
        raise ConfigError(
            f"learner.buffer_size={cfg.learner.buffer_size}: that many {cfg.env.name} episodes take "
            f"{need / 2**30:.1f} GiB, more than this machine's {have / 2**30:.1f} GiB of memory"
        )


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS repeats itself only with a fixed workspace, read when its handle is made;
        # without it every matmul on a GPU raises under use_deterministic_algorithms.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    # Set either way: a sweep's jobs share one process (Hydra's basic launcher).
    torch.use_deterministic_algorithms(deterministic)


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


class StopSignal:
    """Turns SIGINT/SIGTERM into a flag the loop checks between iterations."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous = {}

    def __enter__(self) -> "StopSignal":
        for sig in EXIT_SIGNAL:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: object) -> None:
        self.received = signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def train(cfg: Config, run_dir: Path) -> int:
    """Train one run in ``run_dir``; returns the process exit code."""
    device = resolve_device(cfg.device)
    torch.set_num_threads(cfg.threads or default_threads())
    keep_freed_memory()
    seed_everything(cfg.seed, cfg.deterministic)
    collector = make_collector(cfg.env, cfg.learner, cfg.seed, device)
    try:  # bad input found while setting up (a resume's ConfigError) must not leave env workers behind
        info = collector.info
        check_buffer_fits(cfg, info)
        policy = WQMIXPolicy(info, cfg.learner, central=cfg.agent.name != "qmix").to(device)
        learner = WQMIXLearner.from_config(cfg, policy, device=device)
        expected_updates = cfg.t_max / info.episode_limit * cfg.learner.updates_per_episode
        learner.scheduler = make_lr_schedule(learner.optimizer, cfg.learner,
                                             cfg.learner.lr_schedule_updates or int(expected_updates))
        buffer = EpisodeBuffer(info, cfg.learner.buffer_size, seed=cfg.seed)
        counters = Counters()

        if cfg.resume:
            counters = resume(Path(cfg.resume), cfg, policy, learner, buffer, collector)
            log.info("resumed from t_env=%d", counters.t_env)
            if not cfg.checkpoint.save_buffer:
                log.warning("resuming with an empty replay buffer (checkpoint.save_buffer=false)")
        collector.sync(policy.agent)
        logger = RunLogger(run_dir, cfg.t_max, counters.t_env, trackers=cfg.logger, run_config=dataclasses.asdict(cfg))
    except BaseException:
        collector.close()
        raise
    log.info("env %s: %s; agent %s on %s", cfg.env.name, info, cfg.agent.name, device)

    def checkpoint() -> None:
        state = {
            "policy": policy.state_dict(),
            "learner": learner.state_dict(),
            "counters": dataclasses.asdict(counters),
            "rng": rng_state(),
            "actor_rng": collector.rng_state(),
            "env_info": dataclasses.asdict(info),
            "config": dataclasses.asdict(cfg),
        }
        buf = buffer.state_dict() if cfg.checkpoint.save_buffer else None
        save_checkpoint(run_dir / "checkpoints", counters.t_env, state, buf, cfg.checkpoint.keep)
        counters.last_save = counters.t_env

    # An update that starts while no episode is being collected may use every core (torch's
    # thread count is per thread); one thread count throughout where runs must repeat bit for bit.
    threads = torch.get_num_threads()
    idle_threads = threads if cfg.deterministic else cfg.learner_threads or available_cores()
    collecting = threading.Event()

    def learn(n_updates: int) -> dict[str, float]:
        """``n_updates`` gradient steps on batches from the buffer; the last one's scalars."""
        scalars = {}
        try:
            # Sampling on the collecting count: an op on more threads leaves OpenMP's team
            # spinning for a few ms, and the update's Q* helper thread could not start meanwhile.
            torch.set_num_threads(threads)
            upcoming = buffer.sample(cfg.learner.batch_size) if n_updates else None
            for i in range(n_updates):
                # One batch ahead (the same draws in the same order): an update may prepare the next.
                batch, upcoming = upcoming, buffer.sample(cfg.learner.batch_size) if i + 1 < n_updates else None
                torch.set_num_threads(threads if collecting.is_set() else idle_threads)
                update = learner.update(batch, upcoming)
                torch.set_num_threads(threads)
                scalars = {LOG_TAGS[k]: v for k, v in update.items()}
        finally:
            torch.set_num_threads(threads)
        return scalars

    returns = counters.pending_returns
    stats: dict[str, float] = {}
    code = 0
    try:
        with StopSignal() as stop, ThreadPoolExecutor(max_workers=1, thread_name_prefix="learner") as background:
            while counters.t_env < cfg.t_max and stop.received is None:
                # The updates owed for the episodes stored so far; with overlap they run while the
                # next episodes are collected. The collector acts with the weights of the last
                # boundary either way, so overlap changes the speed, not the results (bit for
                # bit with deterministic=true, where every update keeps one thread count).
                owed = int(counters.update_credit) if buffer.can_sample(cfg.learner.batch_size) else 0
                collecting.set()
                learning = background.submit(learn, owed) if cfg.overlap else None
                epsilon = epsilon_at(cfg.epsilon, counters.t_env)
                episodes = collector.run(epsilon, seed=cfg.seed * 1_000_003 + counters.episodes)
                collecting.clear()
                stats = (learning.result() if learning is not None else learn(owed)) or stats
                counters.update_credit -= owed
                collector.sync(policy.agent)

                buffer.add(episodes.batch, episodes.lengths)
                counters.t_env += episodes.steps
                counters.episodes += collector.n_envs
                returns.extend(episodes.returns.tolist())
                if buffer.can_sample(cfg.learner.batch_size):
                    counters.update_credit += collector.n_envs * cfg.learner.updates_per_episode

                if counters.last_test is None or counters.t_env - counters.last_test >= cfg.test_interval:
                    counters.last_test = counters.t_env
                    if cfg.test_episodes:
                        results = run_greedy(collector, cfg.test_episodes, TEST_SEED_OFFSET + counters.t_env)
                        logger.scalars(summarise(results, "test"), counters.t_env)
                        log.info("t_env=%d test return %.3f", counters.t_env, results["returns"].mean())
                if counters.t_env - counters.last_log >= cfg.log_interval:
                    counters.last_log = counters.t_env
                    logger.scalars(
                        {"train/return_mean": float(np.mean(returns)), "train/epsilon": epsilon,
                         "perf/env_steps_per_s": logger.steps_per_second(counters.t_env), **stats},
                        counters.t_env,
                    )
                    returns.clear()
                logger.progress(counters.t_env, ret=float(np.mean(episodes.returns)), eps=epsilon)
                if counters.t_env - counters.last_save >= cfg.save_interval:
                    checkpoint()
            checkpoint()
            if stop.received is not None:
                log.warning("stopped by signal %d at t_env=%d; checkpoint saved", stop.received, counters.t_env)
                code = EXIT_SIGNAL[stop.received]
    except FloatingPointError as err:
        last = latest_checkpoint(run_dir / "checkpoints")
        message = f"{err} (t_env={counters.t_env}); the last good checkpoint is {last}"
        log.error("%s", message)
        raise FloatingPointError(message) from None
    except CheckpointError as err:
        log.error("%s", err)
        raise
    finally:
        logger.close()
        collector.close()
    return code


def resume(
    path: Path, cfg: Config, policy: WQMIXPolicy, learner: WQMIXLearner, buffer: EpisodeBuffer, collector: Collector
) -> Counters:
    """Load the newest complete checkpoint of run ``path`` into the live objects."""
    folder = latest_checkpoint(path)
    if folder is None:
        raise ConfigError(f"resume={path}: no complete checkpoint found there (expected RUN_DIR/checkpoints/<t_env>)")
    state, buf = load_checkpoint(folder, with_buffer=cfg.checkpoint.save_buffer)
    problem = env_size_mismatch(EnvInfo(**state["env_info"]), policy.info)
    if problem:
        raise ConfigError(f"resume={path}: {problem}")
    try:
        policy.load_state_dict(state["policy"])
    except RuntimeError as err:
        raise ConfigError(f"resume={path}: the networks do not match this config ({str(err).splitlines()[0]})") from None
    learner.load_state_dict(state["learner"])
    set_rng_state(state["rng"])
    collector.set_rng_state(state["actor_rng"])
    if buf is not None:
        buffer.load_state_dict(buf)
    return Counters(**state["counters"])
