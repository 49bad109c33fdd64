"""The Weighted QMIX loss and update (Rashid et al., NeurIPS 2020).

One code path for recurrent and feed-forward agents: every network runs over whole
sequences ``[B, T+1, N, ...]`` at once.
"""
from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from wqmix_cli.buffer import EpisodeBatch
from wqmix_cli.config import AGENT_VARIANTS, Config, LearnerConfig
from wqmix_cli.cuda_graph import GraphedStep
from wqmix_cli.flat_params import TrainedParameters
from wqmix_cli.policy import WQMIXPolicy
from wqmix_cli.policy.gru import evaluate_agents
from wqmix_cli.samples import episode_batch_from_sample


@dataclass
class LossParts:
    """One loss evaluation: ``total`` carries the gradient; ``weights`` and ``targets``
    are the per-step w and y ``[B, T]``; the rest are detached scalars."""

    total: torch.Tensor
    weights: torch.Tensor
    targets: torch.Tensor
    qmix: torch.Tensor
    central: torch.Tensor
    w_mean: torch.Tensor
    q_tot_mean: torch.Tensor
    target_mean: torch.Tensor


# Starts a callable on another thread and returns its Future (see ``wqmix_loss``).
Aside = Callable[[Callable[[], torch.Tensor]], Future]

# What ``update`` returns besides ``learning_rate``, in the order ``_step`` stacks them.
STATS = ("loss", "loss_qmix", "loss_central", "w_mean", "predict_q", "target_q", "grad_norm")


def check_variant(variant: str) -> None:
    """Raise ValueError unless ``variant`` is cwqmix, owqmix or qmix."""
    if variant not in AGENT_VARIANTS:
        raise ValueError(f"variant {variant!r} is not known; allowed: {', '.join(AGENT_VARIANTS)}")


def _pick(q: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """q ``[B, T, N, A]``, actions ``[B, T, N]`` -> ``[B, T, N]``."""
    return q.gather(-1, actions.unsqueeze(-1)).squeeze(-1)


def _mix(mixer: nn.Module, agent_qs: torch.Tensor, states: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """``mixer`` on agent values ``[B, T, N]`` and states ``[B, T, S]`` -> ``[B, T]``; with
    ``rows`` (bool ``[B, T]``) only on those steps, the rest 0. Mixers treat each step on its
    own, so a batch's padding need not pass through them."""
    if rows is None:
        return mixer(agent_qs, states)
    values = mixer(agent_qs[rows].unsqueeze(0), states[rows].unsqueeze(0)).squeeze(0)  # [R]
    return agent_qs.new_zeros(rows.shape).masked_scatter(rows, values)


def agent_inputs(policy: WQMIXPolicy, batch: EpisodeBatch) -> torch.Tensor:
    """Every step's agent inputs (observation, last action, agent id): ``[B, T+1, N, in]``."""
    start = torch.full_like(batch.actions[:, :1], -1)
    return policy.agent_inputs(batch.obs, torch.cat([start, batch.actions], dim=1))


def target_utilities(policy: WQMIXPolicy, inputs: torch.Tensor) -> torch.Tensor:
    """The target agent's utilities on ``agent_inputs`` ``[B, T+1, N, in]`` -> ``[B, T+1, N, A]``,
    no gradient."""
    target_agent = next(iter(policy.targets().values()))
    with torch.no_grad():
        return evaluate_agents([target_agent], inputs)[0]


def wqmix_loss(
    policy: WQMIXPolicy,
    batch: EpisodeBatch,
    variant: str,
    w: float,
    gamma: float,
    central_weight: float = 1.0,
    backward: bool = False,
    aside: Aside | None = None,
    target_q: torch.Tensor | None = None,
    meanwhile: Callable[[], None] | None = None,
) -> LossParts:
    """The loss of design section 4 on a batch of B episodes of T steps.

    variant: ``cwqmix`` | ``owqmix`` | ``qmix``; w: the weight alpha given to the
    down-weighted transitions. With ``backward`` each half of the loss puts its gradients
    on its own networks as soon as it is computed, and ``total`` comes back detached.
    Q* (central agent, central mixer, its loss) and Q_tot (the rest) share no trained
    network, so ``aside`` may run the Q* half on another thread: it starts a callable
    there and returns its Future. That thread first runs the target agent (no gradient),
    which the Q_tot half needs for y: y is then ready before the Q* half's loss asks
    for it, where the other order left the helper waiting for the whole target pass.
    ``target_q`` is that pass's result ``[B, T+1, N, A]`` where it is known already
    (``target_utilities``); ``meanwhile`` runs on this thread once the Q_tot half is done,
    while the Q* half may still be running. The values are the same either way. On the
    CPU the mixers skip the steps after an episode's end when the batch has any (with
    SMAX's short battles about 40% of a batch); on a GPU every shape stays fixed for the
    CUDA graph.
    """
    check_variant(variant)
    mask = batch.filled.float()  # [B, T]
    padded = mask.device.type == "cpu" and not bool(batch.filled.all())
    # The target pass reads each episode's steps 0..L: y at t + 1 and the CW test at t.
    observed = torch.cat([torch.ones_like(batch.filled[:, :1]), batch.filled], dim=1) if padded else None
    filled = batch.filled if padded else None
    n_real = mask.sum()
    not_done = 1.0 - batch.terminated.float()
    inputs = agent_inputs(policy, batch)  # [B, T+1, N, in]
    _, target_mixer = policy.targets().values()
    q_target: Future[torch.Tensor] = Future()  # [B, T+1, N, A]
    targets: Future[torch.Tensor] = Future()
    if target_q is not None:
        q_target.set_result(target_q)

    def target_pass() -> None:
        if target_q is not None:
            return
        try:
            q_target.set_result(target_utilities(policy, inputs))
        except BaseException as error:
            q_target.set_exception(error)  # the Q_tot half waits for it: it stops too
            raise

    def central_half() -> torch.Tensor:
        # Causal, so the last step, whose Q* nothing reads, is left out.
        (central_q,) = evaluate_agents([policy.central_agent], inputs[:, :-1])  # [B, T, N, A]
        q_star = _mix(policy.central_mixer, _pick(central_q, batch.actions), batch.state[:, :-1], filled)  # [B, T]
        loss = (mask * (q_star - targets.result()) ** 2).sum() / n_real
        if backward:
            (central_weight * loss).backward()
        return loss

    def helper_work() -> torch.Tensor:
        target_pass()
        return central_half()

    central = aside(helper_work) if policy.central and aside is not None else None
    try:
        (q,) = evaluate_agents([policy.agent], inputs)  # [B, T+1, N, A]
        if central is None:
            target_pass()
        with torch.no_grad():
            greedy = q.detach().masked_fill(~batch.avail, -torch.inf).argmax(-1)  # [B, T+1, N]
            # One target pass over all T+1 steps serves both y (at t+1) and the CW test (at t).
            q_target_greedy = _mix(target_mixer, _pick(q_target.result(), greedy), batch.state, observed)  # [B, T+1]
            y = batch.reward + gamma * not_done * q_target_greedy[:, 1:]
        targets.set_result(y)
        q_tot = _mix(policy.mixer, _pick(q[:, :-1], batch.actions), batch.state[:, :-1], filled)  # [B, T]
        with torch.no_grad():
            if variant == "cwqmix":
                took_greedy = (batch.actions == greedy[:, :-1]).all(-1)
                full = took_greedy | (y > q_target_greedy[:, :-1])
            elif variant == "owqmix":
                full = q_tot.detach() < y
            else:
                full = torch.ones_like(y, dtype=torch.bool)
            weights = torch.where(full, 1.0, w)
        qmix_loss = (mask * weights * (q_tot - y) ** 2).sum() / n_real
        if backward:
            qmix_loss.backward()
        if meanwhile is not None:
            meanwhile()
    except BaseException as error:
        if not targets.done():
            targets.set_exception(error)  # the Q* half waits for y: it stops too
        if central is not None:
            wait([central])  # no backward left running on the networks
        raise
    if not policy.central:
        central_loss = torch.zeros((), device=y.device)
    else:
        central_loss = central.result() if central is not None else central_half()
    total = qmix_loss + central_weight * central_loss
    return LossParts(
        total=total.detach() if backward else total,
        weights=weights,
        targets=y,
        qmix=qmix_loss.detach(),
        central=central_loss.detach(),
        w_mean=(weights * mask).sum() / n_real,
        q_tot_mean=(q_tot.detach() * mask).sum() / n_real,
        target_mean=(y * mask).sum() / n_real,
    )


def make_optimizer(params: list[nn.Parameter], cfg: LearnerConfig) -> torch.optim.Optimizer:
    """Adam's fused kernel or RMSprop's multi-tensor step; on the CPU the learner hands it
    one flat tensor (``wqmix_cli.flat_params``)."""
    capturable = params[0].is_cuda  # the step can be part of a CUDA graph (wqmix_cli.cuda_graph)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, eps=cfg.optim_eps, fused=True, capturable=capturable)
    return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.optim_alpha, eps=cfg.optim_eps, foreach=True,
                               capturable=capturable)


def make_lr_schedule(
    optimizer: torch.optim.Optimizer, cfg: LearnerConfig, total_updates: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """``learner.lr_schedule``: constant (None), or linear/cosine from ``lr`` to ``lr_min``
    over ``total_updates`` updates, then flat."""
    if cfg.lr_schedule == "constant":
        return None
    floor = cfg.lr_min / cfg.lr

    def factor(step: int) -> float:
        progress = min(step / max(total_updates, 1), 1.0)
        shape = 1.0 - progress if cfg.lr_schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return floor + (1.0 - floor) * shape

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@functools.cache
def _helper_thread() -> ThreadPoolExecutor:
    """The thread that runs the Q* half of the loss beside the learner's own (``_aside``)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="wqmix-q-star")


class WQMIXLearner:
    """Weighted QMIX (or QMIX) updates on a policy: the optimiser, LR schedule and targets.

    ``update(sample)`` takes an ``EpisodeBatch`` or a dict of arrays/tensors (episode or
    transition batches: see ``wqmix_cli.samples``) and returns ``learning_rate``,
    ``loss_qmix``, ``loss_central``, ``loss``, ``predict_q`` (mean Q_tot), ``target_q``,
    ``w_mean`` and ``grad_norm``. ``variant`` is ``cwqmix`` | ``owqmix`` | ``qmix``;
    ``w`` the weight alpha. ``gamma`` and ``sync_frequency`` (updates between hard target
    copies) default to ``cfg.gamma`` and ``cfg.target_update_interval``; an optimiser and
    scheduler may be supplied, else they are built from ``cfg``.
    """

    def __init__(
        self,
        policy: WQMIXPolicy,
        cfg: LearnerConfig,
        variant: str = "cwqmix",
        w: float = 0.1,
        device: torch.device | str = "cpu",
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        model_dir: str | Path | None = None,
        gamma: float | None = None,
        sync_frequency: int | None = None,
    ) -> None:
        check_variant(variant)
        if policy.central != (variant != "qmix"):
            raise ValueError(f"variant {variant!r} needs a policy built with central={variant != 'qmix'}")
        self.policy, self.cfg, self.variant, self.w = policy, cfg, variant, w
        self.device = torch.device(device)
        self.gamma = cfg.gamma if gamma is None else gamma
        self.sync_frequency = cfg.target_update_interval if sync_frequency is None else sync_frequency
        self.params = TrainedParameters(policy.trained_parameters(), flat=self.device.type == "cpu")
        self.optimizer = optimizer or make_optimizer(self.params.tensors, cfg)
        self.scheduler = scheduler
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.updates = 0
        self._prefetched: tuple[object, torch.Tensor] | None = None  # (a sample, its target_utilities)
        graphed = self.device.type == "cuda" and cfg.cuda_graph
        self._graphed = GraphedStep(self._step, self._check, policy.info.episode_limit) if graphed else None

    @classmethod
    def from_config(
        cls,
        config: Config,
        policy: WQMIXPolicy,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        device: torch.device | str = "cpu",
        model_dir: str | Path | None = None,
        gamma: float | None = None,
        sync_frequency: int | None = None,
    ) -> "WQMIXLearner":
        """The learner for a whole run ``Config`` (variant and alpha from ``config.agent``)."""
        return cls(policy, config.learner, config.agent.name, config.agent.w, device, optimizer, scheduler,
                   model_dir, gamma, sync_frequency)

    @property
    def uses_cuda_graph(self) -> bool:
        """Whether updates are replayed as CUDA graphs (device cuda, ``cuda_graph``, no lr schedule)."""
        return self._graphed is not None and self.scheduler is None

    @property
    def cuda_graphs(self) -> int:
        """How many CUDA graphs are captured (one per padded batch shape)."""
        return self._graphed.captured if self._graphed is not None else 0

    def update(self, sample: EpisodeBatch | Mapping, upcoming: EpisodeBatch | Mapping | None = None) -> dict[str, float]:
        """One gradient step on a batch of episodes (or transitions, as one-step episodes).

        ``upcoming``: the sample the next update will get (the same object, unchanged), where
        the caller knows it. On two or more CPU threads the Q_tot half of this update ends
        before the Q* half; the thread then runs the target agent on ``upcoming``, and the
        next update starts without that pass (same values, about a tenth less time).
        """
        batch = self._as_batch(sample)
        learning_rate = self.optimizer.param_groups[0]["lr"]
        if self.uses_cuda_graph:
            stats = self._graphed.run(batch, self.device)
        else:
            prefetched, self._prefetched = self._prefetched, None
            target_q = prefetched[1] if prefetched is not None and prefetched[0] is sample else None
            stats = self._step(batch.to(self.device), self._check, target_q, upcoming)
        if self.scheduler is not None:
            self.scheduler.step()
        self.updates += 1
        if self.cfg.target_update == "soft":
            self.policy.sync_targets(self.cfg.tau)
        elif self.updates % self.sync_frequency == 0:
            self.policy.sync_targets()
        return {**dict(zip(STATS, stats.tolist())), "learning_rate": learning_rate}

    def _as_batch(self, sample: EpisodeBatch | Mapping) -> EpisodeBatch:
        return sample if isinstance(sample, EpisodeBatch) else episode_batch_from_sample(sample, self.policy.info)

    def _step(
        self,
        batch: EpisodeBatch,
        check: Callable[[torch.Tensor], None],
        target_q: torch.Tensor | None = None,
        upcoming: EpisodeBatch | Mapping | None = None,
    ) -> torch.Tensor:
        """Loss and gradients, clipping, ``check(stats)``, optimiser step; -> ``[len(STATS)]``.
        ``target_q``: the target agent's utilities on ``batch`` if known; ``upcoming``: the
        next update's sample, whose target pass may run while the Q* half finishes."""
        threads = torch.get_num_threads()
        try:
            # First, so that nothing before the loss runs on more threads: OpenMP's team spins
            # for a few ms after such an op, and the helper thread could not start meanwhile.
            aside = self._aside(threads)
            meanwhile = None
            if aside is not None and upcoming is not None and self._targets_stay():
                def meanwhile() -> None:
                    inputs = agent_inputs(self.policy, self._as_batch(upcoming).to(self.device))
                    utilities = target_utilities(self.policy, inputs)
                    self._prefetched = (upcoming, utilities)

            self.params.zero_grad()
            parts = wqmix_loss(self.policy, batch, self.variant, self.w, self.gamma, self.cfg.central_loss_weight,
                               backward=True, aside=aside, target_q=target_q, meanwhile=meanwhile)
            grad_norm = nn.utils.clip_grad_norm_(self.params.tensors, self.cfg.grad_clip)
            stats = torch.stack([parts.total, parts.qmix, parts.central, parts.w_mean, parts.q_tot_mean,
                                 parts.target_mean, grad_norm])
            check(stats)
            self.optimizer.step()
        finally:
            torch.set_num_threads(threads)
        return stats

    def _targets_stay(self) -> bool:
        """Whether the target networks are the same after this update as before it."""
        return self.cfg.target_update == "hard" and (self.updates + 1) % self.sync_frequency != 0

    def _aside(self, threads: int) -> Aside | None:
        """With two or more CPU threads the loss's Q* half runs on a helper thread, and the two
        halves share the threads (the rest of the step keeps the first half's): on 2 cores an
        update took about 25 ms against about 37 with both threads inside each op, most of
        its ops being too small to split."""
        if self.device.type != "cpu" or threads < 2 or not self.policy.central:
            return None
        torch.set_num_threads(threads - threads // 2)

        def submit(half: Callable[[], torch.Tensor]) -> Future:
            def run() -> torch.Tensor:
                torch.set_num_threads(threads // 2)
                return half()

            return _helper_thread().submit(run)

        return submit

    def _check(self, stats: torch.Tensor) -> None:
        loss = stats[0].item()
        if not math.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss} at update {self.updates + 1}")

    update_recurrent = update

    def state_dict(self) -> dict:
        return {
            "optimizer": self.params.optimizer_state(self.optimizer),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict) -> None:
        self._prefetched = None
        self.params.load_optimizer_state(self.optimizer, state["optimizer"])
        if self._graphed is not None:  # the graphs read the optimiser state tensors just replaced
            self._graphed.reset()
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.updates = state["updates"]

    def _path(self, path: str | Path | None) -> Path:
        if path is not None:
            return Path(path)
        if self.model_dir is None:
            raise ValueError("no path given and the learner has no model_dir")
        return self.model_dir / "learner.pt"

    def save(self, path: str | Path | None = None) -> Path:
        """Write the networks, targets, optimiser, schedule and counter to ``path``
        (default ``model_dir/learner.pt``); written to a temporary file, then renamed."""
        target = self._path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        torch.save({"policy": self.policy.state_dict(), "learner": self.state_dict()}, tmp)
        os.replace(tmp, target)
        return target

    def load(self, path: str | Path | None = None) -> None:
        """Restore what ``save`` wrote."""
        state = torch.load(self._path(path), map_location=self.device, weights_only=False)
        self.policy.load_state_dict(state["policy"])
        self.load_state_dict(state["learner"])
