"""Benchmarks of wqmix, each against a baseline measured in the same run on the same machine.

    python scripts/benchmark.py                 # the full run (about 7.5 minutes on 2 cores)
    python scripts/benchmark.py --quick         # fewer cases and shorter timings (under 5)
    python scripts/benchmark.py --json out.json --device cuda   # also the learner and training on the GPU
    python scripts/benchmark.py --threads 2     # torch CPU threads (default: train's, half the cores)
    python scripts/benchmark.py --profile       # only: the ops one update spends its time in

1. Collection: env steps/s of train's collector (``make_collector``: runner and actor, in
   this process or, with ``env.workers``, the whole episode loop in each worker process) +
   ``EpisodeBuffer.add`` over the same vector env with the same workers stepped with random
   available actions (MPE simple_spread; SMAX 3m where jaxmarl works). Raw and collector
   episodes alternate, so a change in the machine's load hits both.
2. Learner: one ``WQMIXLearner.update`` over ``ReferenceLearner.update``, the same loss
   written the way pymarl's WQMIX learner computes it (a Python loop over t calling
   ``nn.GRUCell``s that hold our weights; inputs built per step and network; four unrolls,
   the target QMIX agent's unused; the target Q* mixer twice). Also over the same loops
   doing only our work (``pymarl=False``). All start from the same weights and must give
   the same loss on the same batch (asserted). Also the update's compute floor: its FLOPs
   (``FlopCounterMode``, counted with PyTorch's GRU on one thread) over the fp32 matmul
   rate measured here.
3. End to end: steady-state env steps/s of ``train`` with the default config (logging
   every 500 steps, 20000 env steps or a time budget), read from its ``perf/env_steps_per_s``
   scalars once the buffer holds a batch; the median of three runs, each in a fresh process
   (one with ``--quick``), MPE and SMAX 3m; with ``--device cuda`` both again with
   device=cuda (the envs stay on the CPU, the jax that steps SMAX too: ``env.jax_device``).
   Where jax sees a GPU, SMAX collection also with the battles on it and at 512 envs.
4. Memory: replay bytes per episode against a naive float32 transition layout.

The learner runs at train's thread count (``--threads``; the headline figures), again on
all cores (MPE batch 32: ``learner_speedup_all_cores``) and once with the fused GRU kernel
switched off, each agent on its own ``nn.GRU`` (``learner_speedup_without_kernel``). With
``--device cuda`` the cases again on the GPU, each update replayed as a CUDA graph
(``learner_speedup_gpu``: MPE batch 32), and MPE batch 32 once launched op by op
(``learner_speedup_gpu_without_graph``).

The JSON's top level carries the headline figures (``learner_speedup``,
``learner_speedup_same_work``, ``learner_speedup_all_cores``,
``learner_speedup_without_kernel``, ``learner_speedup_gpu``,
``learner_speedup_gpu_without_graph``, ``loss_match``,
``learner_floor_ratio``, ``collection_ratio``, ``buffer_memory_ratio``,
``e2e_env_steps_per_s``); the tables' rows follow under ``learner``, ``collection``,
``e2e`` and ``memory``.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import logging
import math
import multiprocessing
import os
import platform
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from wqmix_cli.buffer import EpisodeBatch, EpisodeBuffer
from wqmix_cli.collector import make_collector
from wqmix_cli.config import LearnerConfig, MPEConfig, SMAXConfig
from wqmix_cli.cpu import default_threads, keep_freed_memory
from wqmix_cli.cuda_graph import WARMUP_STEPS as GRAPH_WARMUP_STEPS
from wqmix_cli.envs import make_vector_env
from wqmix_cli.envs.base import EnvInfo, VectorEnv
from wqmix_cli.learner import WQMIXLearner
from wqmix_cli.policy import RNNAgent, WQMIXPolicy, native

MPE_INFO = EnvInfo(n_agents=3, obs_dim=18, state_dim=54, n_actions=5, episode_limit=25)
SMAX_3M_INFO = EnvInfo(n_agents=3, obs_dim=75, state_dim=72, n_actions=8, episode_limit=100)
LOSS_TOLERANCE = 1e-5
MEMORY_EPISODES = 5000
MATMUL_SHAPE = (800, 256, 256)
COLLECTION_EPSILON = 0.5
SETTLE_S = 0.01  # pause before each timed learner call (time_alternating)
E2E_LOG_INTERVAL = 500
KERNEL_OFF = "nn.GRU (kernel off)"
GRAPH = "nn.GRU, CUDA graph"
GRAPH_OFF = "nn.GRU (graph off)"
HEADLINE = ("learner_speedup", "learner_speedup_same_work", "learner_speedup_all_cores",
            "learner_speedup_without_kernel", "learner_speedup_gpu", "learner_speedup_gpu_without_graph", "loss_match",
            "learner_floor_ratio", "collection_ratio", "buffer_memory_ratio", "e2e_env_steps_per_s")


# --------------------------------------------------------------------------------------
# The reference update: the same loss, one Python step per time step
# --------------------------------------------------------------------------------------


class StepwiseAgent(nn.Module):
    """``fc1 -> ReLU -> GRUCell -> fc2``, one time step per call, holding a copy of an
    ``RNNAgent``'s weights (the ``nn.GRU``'s become the cell's)."""

    def __init__(self, agent: RNNAgent) -> None:
        super().__init__()
        self.fc1 = copy.deepcopy(agent.fc1)
        self.fc2 = copy.deepcopy(agent.fc2)
        gru = agent.rnn
        self.cell = nn.GRUCell(gru.input_size, gru.hidden_size).to(gru.weight_ih_l0.device)
        with torch.no_grad():
            self.cell.weight_ih.copy_(gru.weight_ih_l0)
            self.cell.weight_hh.copy_(gru.weight_hh_l0)
            self.cell.bias_ih.copy_(gru.bias_ih_l0)
            self.cell.bias_hh.copy_(gru.bias_hh_l0)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B*N, in]``, ``[B*N, H]`` -> utilities ``[B*N, A]``, next hidden."""
        hidden = self.cell(torch.relu(self.fc1(x)), hidden)
        return self.fc2(hidden), hidden


def step_inputs(batch: EpisodeBatch, actions_onehot: torch.Tensor, t: int) -> torch.Tensor:
    """pymarl's inputs at step t: observation, one-hot last action (zeros at t=0), one-hot
    agent id -> ``[B*N, O + A + N]``. pymarl builds them inside every network's loop."""
    b, _, n, _ = batch.obs.shape
    last = torch.zeros_like(actions_onehot[:, 0]) if t == 0 else actions_onehot[:, t - 1]
    ids = torch.eye(n, device=batch.obs.device).unsqueeze(0).expand(b, -1, -1)
    return torch.cat([x.reshape(b * n, -1) for x in (batch.obs[:, t], last, ids)], dim=1)


def unroll(agent: StepwiseAgent, batch: EpisodeBatch, actions_onehot: torch.Tensor,
           steps: list[torch.Tensor] | None = None) -> torch.Tensor:
    """The Python loop over t: utilities ``[B, T+1, N, A]``; inputs from ``steps`` when given,
    else rebuilt at every step."""
    b, t1, n, _ = batch.obs.shape
    hidden = batch.obs.new_zeros(b * n, agent.cell.hidden_size)
    outs = []
    for t in range(t1):
        x = steps[t] if steps is not None else step_inputs(batch, actions_onehot, t)
        q, hidden = agent(x, hidden)
        outs.append(q.view(b, n, -1))
    return torch.stack(outs, dim=1)


def _pick(q: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    return torch.gather(q, dim=3, index=actions.unsqueeze(3)).squeeze(3)


class ReferenceLearner:
    """The WQMIX update written the way pymarl's learners are, on copies of ``policy``'s weights.

    ``pymarl=True`` (the baseline): every network is a GRUCell looped over the T+1 steps and
    builds its inputs at each step; the central variants also unroll the target copy of
    the QMIX agent (pymarl's WQMIX learner computes it, its loss never reads it) and run the
    target Q* mixer twice (for y, and again for CW's test). ``pymarl=False``: the same
    per-step loops doing only our work (inputs built once, three unrolls, one target mixer
    pass), to show what the Python loop alone costs. Either way: the same weighting, loss,
    backward, joint gradient-norm clip and RMSprop step as ``WQMIXLearner``, targets held
    fixed (the timed updates never reach a copy). Recurrent agents and RMSprop only.
    """

    def __init__(self, policy: WQMIXPolicy, cfg: LearnerConfig, variant: str, w: float, pymarl: bool = True) -> None:
        if not isinstance(policy.agent, RNNAgent):
            raise ValueError("the reference update is written for recurrent (GRU) agents")
        self.cfg, self.variant, self.w, self.central, self.pymarl = cfg, variant, w, policy.central, pymarl
        self.n_actions = policy.info.n_actions
        self.agent = StepwiseAgent(policy.agent)
        self.mixer = copy.deepcopy(policy.mixer)
        online: list[nn.Module] = [self.agent, self.mixer]
        targets: list[nn.Module] = []
        if self.central:
            self.central_agent = StepwiseAgent(policy.central_agent)
            self.central_mixer = copy.deepcopy(policy.central_mixer)
            self.target_central_agent = StepwiseAgent(policy.target_central_agent)
            self.target_central_mixer = copy.deepcopy(policy.target_central_mixer)
            online += [self.central_agent, self.central_mixer]
            targets += [self.target_central_agent, self.target_central_mixer]
        if not self.central or pymarl:
            self.target_agent = StepwiseAgent(policy.target_agent if not self.central else policy.agent)
            targets.append(self.target_agent)
        if not self.central:
            self.target_mixer = copy.deepcopy(policy.target_mixer)
            targets.append(self.target_mixer)
        for module in targets:
            module.requires_grad_(False)
        self.params = [p for module in online for p in module.parameters()]
        self.optimizer = torch.optim.RMSprop(self.params, lr=cfg.lr, alpha=cfg.optim_alpha, eps=cfg.optim_eps)

    def loss(self, batch: EpisodeBatch) -> torch.Tensor:
        """The total loss (QMIX part plus central part) on B episodes."""
        actions_onehot = F.one_hot(batch.actions, self.n_actions).float()  # pymarl's buffer stores this
        steps = None if self.pymarl else [step_inputs(batch, actions_onehot, t) for t in range(batch.obs.shape[1])]
        mask = batch.filled.float()
        not_done = 1.0 - batch.terminated.float()

        q = unroll(self.agent, batch, actions_onehot, steps)  # [B, T+1, N, A]
        q_tot = self.mixer(_pick(q[:, :-1], batch.actions), batch.state[:, :-1])
        masked = q.detach().clone()
        masked[~batch.avail] = -9999999.0
        greedy = masked.argmax(dim=3)  # [B, T+1, N]

        with torch.no_grad():
            if not self.central or self.pymarl:
                q_target = unroll(self.target_agent, batch, actions_onehot, steps)
                q_target[~batch.avail] = -9999999.0
                target_greedy = _pick(q_target, greedy)
            if self.central:
                q_c_target = unroll(self.target_central_agent, batch, actions_onehot, steps)
                q_c_target[~batch.avail] = -9999999.0
                picked = _pick(q_c_target, greedy)
                if self.pymarl:
                    y = batch.reward + self.cfg.gamma * not_done * self.target_central_mixer(
                        picked[:, 1:], batch.state[:, 1:])
                    q_star_greedy = self.target_central_mixer(picked[:, :-1], batch.state[:, :-1])
                else:
                    both = self.target_central_mixer(picked, batch.state)
                    y = batch.reward + self.cfg.gamma * not_done * both[:, 1:]
                    q_star_greedy = both[:, :-1]
            else:
                q_tot_next = self.target_mixer(target_greedy[:, 1:], batch.state[:, 1:])
                y = batch.reward + self.cfg.gamma * not_done * q_tot_next

        weights = torch.ones_like(y)
        central_loss = torch.zeros((), device=y.device)
        if self.central:
            q_c = unroll(self.central_agent, batch, actions_onehot, steps)
            q_star = self.central_mixer(_pick(q_c[:, :-1], batch.actions), batch.state[:, :-1])
            central_loss = (mask * (q_star - y) ** 2).sum() / mask.sum()
            if self.variant == "cwqmix":
                took_greedy = (batch.actions == greedy[:, :-1]).all(dim=2)
                full = took_greedy | (y > q_star_greedy)
            else:
                full = q_tot.detach() < y
            weights = torch.where(full, torch.ones_like(y), torch.full_like(y, self.w))
        qmix_loss = (mask * weights * (q_tot - y) ** 2).sum() / mask.sum()
        return qmix_loss + self.cfg.central_loss_weight * central_loss

    def update(self, batch: EpisodeBatch) -> float:
        """One gradient step; returns the loss before it."""
        loss = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.optimizer.step()
        return loss.item()


def random_batch(info: EnvInfo, batch_size: int, generator: torch.Generator) -> EpisodeBatch:
    """Full-length episodes of random data; actions drawn from the available ones, half
    of the episodes terminal at their last step."""
    b, t, n, a = batch_size, info.episode_limit, info.n_agents, info.n_actions
    avail = torch.rand(b, t + 1, n, a, generator=generator) > 0.3
    avail[..., -1] = True
    scores = torch.rand(b, t, n, a, generator=generator) * avail[:, :-1]
    terminated = torch.zeros(b, t, dtype=torch.bool)
    terminated[::2, -1] = True
    return EpisodeBatch(
        obs=torch.randn(b, t + 1, n, info.obs_dim, generator=generator),
        state=torch.randn(b, t + 1, info.state_dim, generator=generator),
        avail=avail,
        actions=scores.argmax(-1),
        reward=torch.randn(b, t, generator=generator),
        terminated=terminated,
        filled=torch.ones(b, t, dtype=torch.bool),
    )


def losses_match(a: float, b: float) -> bool:
    return abs(a - b) <= LOSS_TOLERANCE * max(1.0, abs(a), abs(b))


def paired_learners(
    info: EnvInfo, variant: str, device: torch.device, cfg: LearnerConfig | None = None, seed: int = 0,
    pymarl: bool = True,
) -> tuple[WQMIXLearner, ReferenceLearner]:
    """Our learner and the reference, starting from the same weights."""
    cfg = cfg or LearnerConfig()
    torch.manual_seed(seed)
    policy = WQMIXPolicy(info, cfg, central=variant != "qmix").to(device)
    reference = ReferenceLearner(policy, cfg, variant, w=0.1, pymarl=pymarl)
    return WQMIXLearner(policy, cfg, variant=variant, w=0.1, device=device), reference


def compare_losses(ours: WQMIXLearner, reference: ReferenceLearner, batch: EpisodeBatch) -> list[tuple[float, float]]:
    """(our loss, reference loss) on two consecutive updates on ``batch``: the first checks
    the forward pass, the second that backward, clipping and the step agree as well."""
    return [(ours.update(batch)["loss"], reference.update(batch)) for _ in range(2)]


def replayed_losses_match(ours: WQMIXLearner, batch: EpisodeBatch) -> bool:
    """Runs ``ours`` (two updates done) through the rest of its eager warm-up; then the loss
    of each of two updates replayed from its CUDA graph must equal the reference's on the
    weights it started from. (Compared over many updates, not on the same weights, the two
    drift apart: RMSprop's first steps are about lr * sign(g) for every weight.)"""
    for _ in range(GRAPH_WARMUP_STEPS - 2):
        ours.update(batch)
    matches = []
    for _ in range(2):
        on_these_weights = ReferenceLearner(ours.policy, ours.cfg, ours.variant, ours.w).loss(batch).item()
        matches.append(losses_match(ours.update(batch)["loss"], on_these_weights))
    return all(matches) and ours.cuda_graphs == 1


# --------------------------------------------------------------------------------------
# Timing helpers
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def without_gru_kernel():
    """The learner as on a machine without a C compiler: each agent's own ``nn.GRU``."""
    os.environ["WQMIX_NATIVE_GRU"] = "0"
    native.gru_kernel.cache_clear()
    try:
        yield
    finally:
        del os.environ["WQMIX_NATIVE_GRU"]
        native.gru_kernel.cache_clear()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_alternating(
    fns: list[Callable[[], Any]], warmup: int, repeats: int, budget_s: float, device: torch.device
) -> list[float]:
    """Median seconds per call of each function; the functions take turns in every round.

    ``repeats`` rounds, or fewer (at least 3) once ``budget_s`` is spent. Each timed call
    starts after a short pause: after an op on several threads OpenMP's team spins for a few
    ms, and on 2 cores that held off the next function's own threads (the update's Q*
    helper), so whichever ran second paid for the first.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    deadline = time.perf_counter() + budget_s
    for round_ in range(repeats):
        if round_ >= 3 and time.perf_counter() > deadline:
            break
        for fn, out in zip(fns, times):
            _sync(device)
            time.sleep(SETTLE_S)
            start = time.perf_counter()
            fn()
            _sync(device)
            out.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def matmul_flops_per_s(device: torch.device, seconds: float) -> float:
    """fp32 rate of an ``800x256 @ 256x256`` matmul, from the median of many timed calls
    (a median, not a mean: on a busy machine a few calls measure the neighbours).

    On the CPU, the faster of one thread and torch's thread setting: with two threads on
    two busy cores every call waits for the thread that lost its core, and a floor must
    be what the machine can do.
    """
    m, k, n = MATMUL_SHAPE
    a = torch.randn(m, k, device=device)
    b = torch.randn(k, n, device=device)
    out = torch.empty(m, n, device=device)
    threads = torch.get_num_threads()
    best = 0.0
    for setting in sorted({1, threads}) if device.type == "cpu" else [threads]:
        torch.set_num_threads(setting)
        for _ in range(20):
            torch.mm(a, b, out=out)
        times = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(times) < 20:
            _sync(device)
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            _sync(device)
            times.append(time.perf_counter() - start)
        best = max(best, 2 * m * k * n / statistics.median(times))
    torch.set_num_threads(threads)
    return best


# --------------------------------------------------------------------------------------
# 2. Learner
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LearnerCase:
    env: str
    info: EnvInfo
    batch_size: int
    variant: str = "cwqmix"


def update_flops(case: LearnerCase) -> int:
    """FLOPs of one update (forward and backward; the optimiser step has no matmuls),
    counted on the CPU with PyTorch's own GRU and one thread: ``FlopCounterMode`` sees
    neither the matmuls inside the C kernel nor the ops of the Q* helper thread, and the
    count is a property of the maths."""
    policy = WQMIXPolicy(case.info, LearnerConfig(), central=case.variant != "qmix")
    learner = WQMIXLearner(policy, LearnerConfig(), variant=case.variant, w=0.1)
    batch = random_batch(case.info, case.batch_size, torch.Generator().manual_seed(1))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with without_gru_kernel(), FlopCounterMode(display=False) as counter:
            learner.update(batch)
    finally:
        torch.set_num_threads(threads)
    return counter.get_total_flops()


def bench_learner(
    case: LearnerCase, device: torch.device, plan: Plan, flops: int, matmul_rate: float, cuda_graph: bool = True
) -> dict:
    """Ours, the pymarl-style reference and the same-work per-step loop, from the same
    weights on the same batch, timed in turns. With a CUDA graph, replayed updates are
    compared too (``replayed_losses_match``)."""
    learner, reference = paired_learners(case.info, case.variant, device, LearnerConfig(cuda_graph=cuda_graph))
    same_work = ReferenceLearner(learner.policy, learner.cfg, case.variant, w=0.1, pymarl=False)
    batch = random_batch(case.info, case.batch_size, torch.Generator().manual_seed(1)).to(device)
    pairs = compare_losses(learner, reference, batch)
    match = all(losses_match(a, b) for a, b in pairs) and losses_match(pairs[0][1], same_work.update(batch))
    if learner.uses_cuda_graph:
        match = match and replayed_losses_match(learner, batch)
    # As in training, each update is told the next batch (here the same one): on 2+ threads it
    # runs that batch's target pass while its own Q* half finishes, and the time includes it.
    ours_s, ref_s, same_s = time_alternating(
        [lambda: learner.update(batch, upcoming=batch), lambda: reference.update(batch),
         lambda: same_work.update(batch)],
        plan.warmup, plan.repeats, plan.learner_budget_s, device)
    floor_s = flops / matmul_rate
    return {
        "device": device.type, "env": case.env, "variant": case.variant, "batch": case.batch_size,
        "steps": case.info.episode_limit, "ours_ms": ours_s * 1e3, "reference_ms": ref_s * 1e3,
        "same_work_ms": same_s * 1e3, "speedup": ref_s / ours_s, "speedup_same_work": same_s / ours_s,
        "loss_ours": pairs[0][0], "loss_reference": pairs[0][1],
        "loss_match": match, "gflop": flops / 1e9, "floor_ms": floor_s * 1e3, "floor_ratio": floor_s / ours_s,
    }


# --------------------------------------------------------------------------------------
# 1. Collection
# --------------------------------------------------------------------------------------


def random_episode(env: VectorEnv, seed: int, rng: np.random.Generator) -> int:
    """One lockstep batch of episodes with uniformly random available actions; env steps taken."""
    avail = env.reset(seed).avail
    active = np.ones(env.n_envs, dtype=bool)
    steps = 0
    while active.any():
        actions = (rng.random(avail.shape) * avail).argmax(-1)
        out = env.step(actions, active)
        steps += int(active.sum())
        active &= ~(out.terminated | out.truncated)
        avail = out.observation.avail
    return steps


def bench_collection(name: str, cfg: MPEConfig | SMAXConfig, seconds: float) -> dict:
    """Raw random-action steps/s of the vector env and steps/s of train's collector (episodes
    into the buffer) on the same envs and workers, episodes alternating."""
    env = make_vector_env(cfg)
    collector = None
    try:
        collector = make_collector(cfg, LearnerConfig(), seed=0, device=torch.device("cpu"))
        collector.sync(WQMIXPolicy(collector.info, LearnerConfig(), central=False).agent)
        buffer = EpisodeBuffer(collector.info, capacity=1000)
        rng = np.random.default_rng(0)

        def collect(seed: int) -> int:
            episodes = collector.run(COLLECTION_EPSILON, seed)
            buffer.add(episodes.batch, episodes.lengths)
            return episodes.steps

        def raw(seed: int) -> int:
            return random_episode(env, seed, rng)

        raw(0)  # the first episodes start worker processes or compile the jitted step
        collect(0)
        steps, spent = {raw: 0, collect: 0}, {raw: 0.0, collect: 0.0}
        seed = 1
        while sum(spent.values()) < 2 * seconds:
            for fn in (raw, collect):
                start = time.perf_counter()
                steps[fn] += fn(seed)
                spent[fn] += time.perf_counter() - start
            seed += env.n_envs
    finally:
        env.close()
        if collector is not None:
            collector.close()
    raw_rate, ours_rate = steps[raw] / spent[raw], steps[collect] / spent[collect]
    return {"env": name, "n_envs": cfg.n_envs, "workers": cfg.workers, "jax": getattr(cfg, "jax_device", None),
            "raw_steps_per_s": raw_rate, "runner_steps_per_s": ours_rate, "ratio": ours_rate / raw_rate}


# --------------------------------------------------------------------------------------
# 3. End to end
# --------------------------------------------------------------------------------------


def in_fresh_process(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a new Python process, as ``wqmix train`` starts: the thread pools that
    the learner and SMAX tables left in this one (OpenMP teams of other threads, JAX's)
    made end-to-end training up to 40% slower here."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def bench_train(name: str, overrides: list[str], budget_s: float, steps: int) -> dict:
    """Steady-state env steps/s of ``train`` with the default config plus ``overrides``.

    ``log_interval`` is set to 500 env steps for finer ``perf/env_steps_per_s`` scalars,
    ``t_max`` to ``steps`` and ``test_interval`` past it, so no evaluation follows the
    first (at t_env 0, before the steady state). A run
    still going after ``budget_s`` is stopped as ``train`` is stopped from outside
    (SIGTERM: it ends the iteration and saves a checkpoint). The rate is the total over
    the logged intervals that start at or after the first log carrying ``loss/total``
    (the buffer held a batch by then); ``steps_per_s`` is None if there were none.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from wqmix_cli.cli import compose
    from wqmix_cli.config import validate
    from wqmix_cli.train import train

    cfg = validate(compose(overrides))
    cfg = dataclasses.replace(cfg, t_max=steps, test_interval=steps + E2E_LOG_INTERVAL, log_interval=E2E_LOG_INTERVAL)
    fired = threading.Event()

    def stop() -> None:
        fired.set()
        os.kill(os.getpid(), signal.SIGTERM)

    timer = threading.Timer(budget_s, stop)
    # train() swaps in its own SIGTERM handler; this one catches a signal sent just as train returns.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    wqmix_log = logging.getLogger("wqmix")
    level = wqmix_log.level
    wqmix_log.setLevel(logging.ERROR)  # no "stopped by signal" warning
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        timer.start()
        try:
            code = train(cfg, Path(run_dir))
        finally:
            timer.cancel()
            timer.join()
            signal.signal(signal.SIGTERM, previous)
            wqmix_log.setLevel(level)
        wall = time.perf_counter() - start
        if code != 0 and not fired.is_set():
            raise RuntimeError(f"train exited with code {code}")
        events = EventAccumulator(str(Path(run_dir) / "tb"))
        events.Reload()
        rates = events.Scalars("perf/env_steps_per_s")
        learning = events.Scalars("loss/total") if "loss/total" in events.Tags()["scalars"] else []
    first_update_log = learning[0].step if learning else math.inf
    steps, seconds, previous_step = 0, 0.0, 0
    for s in rates:
        if previous_step >= first_update_log:
            steps += s.step - previous_step
            seconds += (s.step - previous_step) / s.value
        previous_step = s.step
    return {"env": name, "steps_per_s": steps / seconds if steps else None, "steady_steps": steps,
            "t_env": previous_step, "wall_s": wall}


# --------------------------------------------------------------------------------------
# 4. Memory
# --------------------------------------------------------------------------------------


def naive_bytes_per_episode(info: EnvInfo) -> int:
    """float32 obs and next obs, state and next state, one-hot actions, avail, reward,
    terminated and mask, for every one of the T steps."""
    t, n = info.episode_limit, info.n_agents
    per_step = 2 * n * info.obs_dim + 2 * info.state_dim + 2 * n * info.n_actions + 3
    return 4 * t * per_step


def bench_memory(name: str, info: EnvInfo) -> dict:
    ours = EpisodeBuffer.bytes_for(info, 1)  # the layout is per episode
    naive = naive_bytes_per_episode(info)
    return {
        "env": name, "ours_bytes_per_episode": ours, "naive_bytes_per_episode": naive,
        "ours_mib_5000": ours * MEMORY_EPISODES / 2**20, "naive_mib_5000": naive * MEMORY_EPISODES / 2**20,
        "ratio": ours / naive,
    }


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one run measures, and for how long."""

    learner_cases: tuple[LearnerCase, ...]
    warmup: int
    repeats: int
    learner_budget_s: float  # per case, after the warm-up
    collection_s: float  # per side (raw, runner) and env setting
    mpe_envs: dict[int, tuple[int, ...]]  # workers -> env counts
    smax_envs: tuple[int, ...]
    mpe_train_s: float
    smax_train_s: float
    train_steps: int  # t_max of each end-to-end run
    train_runs: int  # fresh processes per end-to-end row; the row is the median run


GPU_SMAX_ENVS = 512  # SMAX collection on both jax devices where jax sees a GPU; also at this count
MPE32 = LearnerCase("mpe", MPE_INFO, 32)
SMAX32 = LearnerCase("smax_3m", SMAX_3M_INFO, 32)
MPE256 = LearnerCase("mpe", MPE_INFO, 256)
FULL = Plan(
    learner_cases=(MPE32, LearnerCase("mpe", MPE_INFO, 32, "qmix"), SMAX32, MPE256),
    warmup=2, repeats=9, learner_budget_s=20.0,
    collection_s=2.0, mpe_envs={0: (1, 8, 16), 1: (1, 8, 16), 2: (8, 16)}, smax_envs=(1, 16, 64),
    mpe_train_s=60.0, smax_train_s=150.0, train_steps=20_000, train_runs=3,
)
QUICK = Plan(
    learner_cases=(MPE32, SMAX32, MPE256),
    warmup=1, repeats=5, learner_budget_s=8.0,
    collection_s=0.8, mpe_envs={0: (1, 8, 16), 1: (8,), 2: (8,)}, smax_envs=(16,),
    mpe_train_s=30.0, smax_train_s=45.0, train_steps=9_500, train_runs=1,
)


def print_table(title: str, rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """``columns``: (key, header, format spec); a None value prints as ``-``."""
    print(f"\n{title}")
    cells = [[h for _, h, _ in columns]]
    cells += [["-" if r[k] is None else format(r[k], f) for k, _, f in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for i, row in enumerate(cells):
        print("  " + "  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))


def run(plan: Plan, devices: list[torch.device]) -> dict:
    """Measure everything in ``plan``, print the tables; returns the JSON document."""
    started = time.perf_counter()
    result: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_avg_start": os.getloadavg(),
            "cuda": torch.cuda.get_device_name() if any(d.type == "cuda" for d in devices) else None,
        },
        "notes": [],
    }
    machine = result["machine"]
    print(f"wqmix benchmark: Python {machine['python']}, torch {machine['torch']} with {machine['torch_threads']} "
          f"threads, {machine['cpus']} CPUs, load average {machine['load_avg_start'][0]:.1f}")

    # The learner at train's thread count, again on all cores (MPE batch 32 only), then the GPU.
    threads = torch.get_num_threads()
    cores = os.cpu_count() or threads
    settings = [("cpu", threads)] + ([("cpu", cores)] if cores != threads else [])
    settings += [(d.type, threads) for d in devices if d.type == "cuda"]
    flops = {case: update_flops(case) for case in plan.learner_cases}
    rates: dict[str, float] = {}
    learner_rows = []
    for device_type, setting in settings:
        torch.set_num_threads(setting)
        device = torch.device(device_type)
        rate = rates[f"{device_type} {setting} threads"] = matmul_flops_per_s(device, 1.0)
        cases = plan.learner_cases if setting == threads else (MPE32,)
        gru = GRAPH if device_type == "cuda" else "fused" if native.gru_kernel() is not None else "nn.GRU"
        learner_rows += [{**bench_learner(case, device, plan, flops[case], rate), "threads": setting, "gru": gru}
                         for case in cases]
    if "cuda" in (d for d, _ in settings):  # what the graph adds: MPE batch 32, each update launched op by op
        rate = rates[f"cuda {threads} threads"]
        learner_rows.append({**bench_learner(MPE32, torch.device("cuda"), plan, flops[MPE32], rate, cuda_graph=False),
                             "threads": threads, "gru": GRAPH_OFF})
    torch.set_num_threads(threads)
    if native.gru_kernel() is not None:  # what the fused GRU step adds: MPE batch 32 on each agent's nn.GRU
        with without_gru_kernel():
            rate = rates[f"cpu {threads} threads"]
            learner_rows.append({**bench_learner(MPE32, torch.device("cpu"), plan, flops[MPE32], rate),
                                 "threads": threads, "gru": KERNEL_OFF})
    result["matmul_gflop_per_s"] = {k: v / 1e9 for k, v in rates.items()}
    result["learner"] = learner_rows
    print_table(
        "Learner: one update, ours (whole sequences, GRU recurrence in C, Q* half on its own thread when there are 2+) vs the pymarl-style reference "
        "(GRUCell per step, 4 unrolls) and the same-work per-step loop (3 unrolls); "
        f"fp32 {'x'.join(map(str, MATMUL_SHAPE))} matmul: "
        + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in rates.items()),
        learner_rows,
        [("device", "device", "s"), ("threads", "threads", "d"), ("gru", "GRU", "s"), ("env", "env", "s"),
         ("variant", "variant", "s"),
         ("batch", "B", "d"), ("steps", "T", "d"), ("reference_ms", "reference ms", ".1f"),
         ("same_work_ms", "same-work ms", ".1f"), ("ours_ms", "ours ms", ".1f"), ("speedup", "speedup", ".2f"),
         ("speedup_same_work", "vs same-work", ".2f"), ("gflop", "GFLOP", ".2f"), ("floor_ms", "floor ms", ".1f"),
         ("floor_ratio", "floor/ours", ".2f"), ("loss_match", "loss match", "")],
    )
    mismatched = [r for r in learner_rows if not r["loss_match"]]
    assert not mismatched, f"the reference and our update disagree on the loss: {mismatched}"

    collection_rows = [bench_collection("mpe", MPEConfig(n_envs=n, workers=w), plan.collection_s)
                       for w, counts in plan.mpe_envs.items() for n in counts]
    smax_problem = None
    try:
        from wqmix_cli.envs.smax import jax_platforms

        # Where jax sees a GPU: the battles there too (env.jax_device=gpu), and at many envs.
        smax_runs = [("cpu", n) for n in plan.smax_envs]
        if "gpu" in jax_platforms():
            smax_runs += [("cpu", GPU_SMAX_ENVS)] + [("gpu", n) for n in (*plan.smax_envs, GPU_SMAX_ENVS)]
        for jax_device, n in smax_runs:
            collection_rows.append(bench_collection("smax_3m", SMAXConfig(n_envs=n, jax_device=jax_device),
                                                    plan.collection_s))
    except Exception as err:  # jaxmarl missing or the SMAX module broken: skip SMAX, say why
        smax_problem = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        note = f"SMAX skipped (collection, end to end): {smax_problem}"
        print(f"\n{note}")
        result["notes"].append(note)
    result["collection"] = collection_rows
    print_table(
        f"Collection: train's collector (epsilon {COLLECTION_EPSILON}) + buffer vs the same envs and workers with random actions",
        collection_rows,
        [("env", "env", "s"), ("n_envs", "envs", "d"), ("workers", "workers", "d"), ("jax", "jax on", "s"),
         ("raw_steps_per_s", "raw steps/s", ".0f"), ("runner_steps_per_s", "runner steps/s", ".0f"),
         ("ratio", "runner/raw", ".2f")],
    )

    def median_run(name: str, overrides: list[str], budget_s: float) -> dict:
        """The median of ``plan.train_runs`` runs, each in a fresh process; all their rates in ``runs``."""
        rows = [in_fresh_process(bench_train, name, overrides, budget_s, plan.train_steps)
                for _ in range(plan.train_runs)]
        rates = [row["steps_per_s"] for row in rows]
        summary = {"runs": rates, "all_runs": ", ".join("-" if r is None else f"{r:.0f}" for r in rates)}
        if None in rates:  # reported as not measured (a note below)
            return {**next(row for row in rows if row["steps_per_s"] is None), **summary}
        return {**sorted(rows, key=lambda row: row["steps_per_s"])[len(rows) // 2], **summary}

    smax = ["env=smax", "env.map_name=3m"]
    e2e_rows = [median_run("mpe", [], plan.mpe_train_s)]
    if smax_problem is None:
        e2e_rows.append(median_run("smax_3m", smax, plan.smax_train_s))
    if any(d.type == "cuda" for d in devices):
        e2e_rows.append(median_run("mpe device=cuda", ["device=cuda"], plan.mpe_train_s))
        if smax_problem is None:
            e2e_rows.append(median_run("smax_3m device=cuda", [*smax, "device=cuda"], plan.smax_train_s))
    for row in e2e_rows:
        if row["steps_per_s"] is None:
            result["notes"].append(f"{row['env']} end to end: no logged interval after the warm-up; "
                                   "give it a longer budget")
    result["e2e"] = e2e_rows
    print_table(
        f"End to end: train() with the default config (log_interval {E2E_LOG_INTERVAL}), "
        "steady state once the buffer holds a batch",
        e2e_rows,
        [("env", "env", "s"), ("t_env", "env steps", "d"), ("steady_steps", "steady steps", "d"),
         ("steps_per_s", "env steps/s (median)", ".0f"), ("all_runs", "each run", "s"), ("wall_s", "wall s", ".1f")],
    )

    memory_rows = [bench_memory("mpe", MPE_INFO), bench_memory("smax_3m", SMAX_3M_INFO)]
    result["memory"] = memory_rows
    print_table(
        f"Replay memory: bytes per episode, and MiB for {MEMORY_EPISODES} episodes (naive: float32 transitions)",
        memory_rows,
        [("env", "env", "s"), ("ours_bytes_per_episode", "ours B/episode", ".0f"),
         ("naive_bytes_per_episode", "naive B/episode", ".0f"), ("ours_mib_5000", "ours MiB", ".1f"),
         ("naive_mib_5000", "naive MiB", ".1f"), ("ratio", "ours/naive", ".3f")],
    )

    mpe32 = [r for r in learner_rows if r["device"] == "cpu" and r["env"] == "mpe" and r["batch"] == 32
             and r["variant"] == "cwqmix"]
    main_rows = [r for r in mpe32 if r["gru"] != KERNEL_OFF]
    headline, all_cores = main_rows[0], main_rows[-1]
    nn_gru = next((r for r in mpe32 if r["gru"] == KERNEL_OFF), None)
    gpu32 = {r["gru"]: r["speedup"] for r in learner_rows
             if r["device"] == "cuda" and r["env"] == "mpe" and r["batch"] == 32}
    collection8 = next(r for r in collection_rows if r["env"] == "mpe" and r["n_envs"] == 8 and r["workers"] == 0)
    result.update(
        learner_speedup=headline["speedup"],
        learner_speedup_same_work=headline["speedup_same_work"],
        learner_speedup_all_cores=all_cores["speedup"],
        learner_speedup_without_kernel=nn_gru["speedup"] if nn_gru else None,
        learner_speedup_gpu=gpu32.get(GRAPH),
        learner_speedup_gpu_without_graph=gpu32.get(GRAPH_OFF),
        loss_match=all(r["loss_match"] for r in learner_rows),
        learner_floor_ratio=headline["floor_ratio"],
        collection_ratio=collection8["ratio"],
        buffer_memory_ratio=memory_rows[0]["ratio"],
        e2e_env_steps_per_s=e2e_rows[0]["steps_per_s"],
    )
    result["machine"]["load_avg_end"] = os.getloadavg()
    result["wall_s"] = time.perf_counter() - started
    print("\nSummary: " + ", ".join(f"{k} {result[k]:.3g}" if isinstance(result[k], float) else f"{k} {result[k]}"
                                    for k in HEADLINE) + f"; {result['wall_s']:.0f} s")
    for note in result["notes"]:
        print(f"Note: {note}")
    return result


def profile_update(rows: int) -> None:
    """Print the ops where one CW-QMIX update (MPE, batch 32, CPU) spends its time."""
    from torch.profiler import ProfilerActivity, profile

    learner, _ = paired_learners(MPE_INFO, "cwqmix", torch.device("cpu"))
    batch = random_batch(MPE_INFO, 32, torch.Generator().manual_seed(1))
    for _ in range(3):
        learner.update(batch)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            learner.update(batch)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))
    if native.gru_kernel() is not None:
        print("The fused GRU kernel's C loops count as the self time of _FusedGRU and _FusedGRUBackward.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer cases, shorter timings (under 5 minutes)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: the learner table and MPE training on the GPU as well as on the CPU")
    parser.add_argument("--threads", type=int, default=default_threads(),
                        help="torch CPU threads (default: what `wqmix train` uses, half the cores)")
    parser.add_argument("--profile", action="store_true",
                        help="only print where one update spends its time (torch.profiler)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("benchmark: --device cuda, but no CUDA device is visible; use --device cpu", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    if args.profile:
        profile_update(rows=25)
        return 0
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if args.device == "cuda" else [])
    result = run(QUICK if args.quick else FULL, devices)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
