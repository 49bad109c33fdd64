"""Batches handed in by a user's own loop, checked and turned into an ``EpisodeBatch``.

Episode batches (B episodes, T steps)::

    state [B, T+1, S]   obs [B, T+1, N, O]   avail_actions [B, T+1, N, A]
    actions [B, T, N]   rewards [B, T] or [B, T, N]   terminated [B, T]   filled [B, T]

Transition batches (B single steps, learned as one-step episodes)::

    state [B, S]   obs [B, N, O]   actions [B, N]   rewards [B] or [B, N]
    state_next [B, S]   obs_next [B, N, O]   terminals [B] or [B, N]
    agent_mask [B, N] (optional)   avail_actions, avail_actions_next [B, N, A] (optional)

Per-agent rewards ``[..., N]`` become the team reward by their mean over agents, as in the
runner. Per-agent ``terminals`` end the step when any agent's is set. ``agent_mask`` 0
marks an agent that does not act (a dead unit): its available actions are reduced to the
one it took, so it cannot change the greedy joint action.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from wqmix_cli.buffer import EpisodeBatch
from wqmix_cli.envs.base import EnvInfo

TRANSITION_KEYS = ("state", "obs", "actions", "rewards", "state_next", "obs_next", "terminals")
EPISODE_KEYS = ("state", "obs", "actions", "rewards", "terminated", "avail_actions", "filled")


def _tensor(sample: Mapping, key: str, expected: str, dtype: torch.dtype) -> torch.Tensor:
    if key not in sample:
        raise ValueError(f"sample is missing {key!r} (expected shape {expected})")
    value = sample[key]
    try:
        out = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"sample[{key!r}] is not an array ({err}); expected shape {expected}") from None
    if out.is_floating_point() and not torch.isfinite(out).all():
        raise ValueError(f"sample[{key!r}] holds NaN or inf")
    return out.to(dtype)


def _check(key: str, value: torch.Tensor, shape: tuple[int | None, ...], expected: str) -> None:
    ok = value.dim() == len(shape) and all(want is None or got == want for got, want in zip(value.shape, shape))
    if not ok:
        raise ValueError(f"sample[{key!r}] has shape {list(value.shape)}; expected {expected}")


def _team(rewards: torch.Tensor, lead: tuple[int, ...], n: int, key: str, names: str) -> torch.Tensor:
    if rewards.shape == (*lead, n):
        return rewards.float().mean(-1)
    _check(key, rewards, lead, f"[{names}] or [{names}, {n}]")
    return rewards.float()


def episode_batch_from_sample(sample: Mapping, info: EnvInfo) -> EpisodeBatch:
    """Check a user's batch against the policy's sizes and convert it.

    Raises ValueError naming the key and the expected shape on a missing key, a wrong
    shape, or NaN/inf.
    """
    if "state_next" in sample or "terminals" in sample:
        return _from_transitions(sample, info)
    return _from_episodes(sample, info)


def _from_episodes(sample: Mapping, info: EnvInfo) -> EpisodeBatch:
    n, o, s, a = info.n_agents, info.obs_dim, info.state_dim, info.n_actions
    obs = _tensor(sample, "obs", f"[batch, time+1, {n}, {o}]", torch.float32)
    if obs.dim() != 4:
        raise ValueError(f"sample['obs'] has shape {list(obs.shape)}; expected [batch, time+1, {n}, {o}]")
    b, t1 = obs.shape[0], obs.shape[1]
    t = t1 - 1
    _check("obs", obs, (b, t1, n, o), f"[batch, time+1, {n}, {o}]")
    state = _tensor(sample, "state", f"[{b}, {t1}, {s}]", torch.float32)
    _check("state", state, (b, t1, s), f"[{b}, {t1}, {s}]")
    avail = _tensor(sample, "avail_actions", f"[{b}, {t1}, {n}, {a}]", torch.bool)
    _check("avail_actions", avail, (b, t1, n, a), f"[{b}, {t1}, {n}, {a}]")
    actions = _tensor(sample, "actions", f"[{b}, {t}, {n}]", torch.long)
    if actions.dim() == 4 and actions.shape[-1] == 1:
        actions = actions.squeeze(-1)
    _check("actions", actions, (b, t, n), f"[{b}, {t}, {n}]")
    if actions.min() < 0 or actions.max() >= a:
        raise ValueError(f"sample['actions'] holds values outside [0, {a - 1}]")
    rewards = _team(_tensor(sample, "rewards", f"[{b}, {t}]", torch.float32), (b, t), n, "rewards", f"{b}, {t}")
    terminated = _tensor(sample, "terminated", f"[{b}, {t}]", torch.float32)
    terminated = terminated.amax(-1) if terminated.shape == (b, t, n) else terminated
    _check("terminated", terminated, (b, t), f"[{b}, {t}]")
    filled = _tensor(sample, "filled", f"[{b}, {t}]", torch.float32)
    filled = filled.squeeze(-1) if filled.shape == (b, t, 1) else filled
    _check("filled", filled, (b, t), f"[{b}, {t}]")
    return EpisodeBatch(obs, state, avail, actions, rewards, terminated.bool(), filled.bool())


def _from_transitions(sample: Mapping, info: EnvInfo) -> EpisodeBatch:
    n, o, s, a = info.n_agents, info.obs_dim, info.state_dim, info.n_actions
    obs = _tensor(sample, "obs", f"[batch, {n}, {o}]", torch.float32)
    if obs.dim() != 3:
        raise ValueError(f"sample['obs'] has shape {list(obs.shape)}; expected [batch, {n}, {o}]")
    b = obs.shape[0]
    _check("obs", obs, (b, n, o), f"[batch, {n}, {o}]")
    obs_next = _tensor(sample, "obs_next", f"[{b}, {n}, {o}]", torch.float32)
    _check("obs_next", obs_next, (b, n, o), f"[{b}, {n}, {o}]")
    state = _tensor(sample, "state", f"[{b}, {s}]", torch.float32)
    _check("state", state, (b, s), f"[{b}, {s}]")
    state_next = _tensor(sample, "state_next", f"[{b}, {s}]", torch.float32)
    _check("state_next", state_next, (b, s), f"[{b}, {s}]")
    actions = _tensor(sample, "actions", f"[{b}, {n}]", torch.long)
    _check("actions", actions, (b, n), f"[{b}, {n}]")
    if actions.min() < 0 or actions.max() >= a:
        raise ValueError(f"sample['actions'] holds values outside [0, {a - 1}]")
    rewards = _team(_tensor(sample, "rewards", f"[{b}]", torch.float32), (b,), n, "rewards", f"{b}")
    terminals = _tensor(sample, "terminals", f"[{b}]", torch.float32)
    terminals = terminals.amax(-1) if terminals.shape == (b, n) else terminals
    _check("terminals", terminals, (b,), f"[{b}] or [{b}, {n}]")
    avail = torch.ones(b, 2, n, a, dtype=torch.bool)
    for step, key in enumerate(("avail_actions", "avail_actions_next")):
        if key in sample:
            given = _tensor(sample, key, f"[{b}, {n}, {a}]", torch.bool)
            _check(key, given, (b, n, a), f"[{b}, {n}, {a}]")
            avail[:, step] = given
    if "agent_mask" in sample:
        mask = _tensor(sample, "agent_mask", f"[{b}, {n}]", torch.bool)
        _check("agent_mask", mask, (b, n), f"[{b}, {n}]")
        only_taken = torch.zeros(b, n, a, dtype=torch.bool).scatter_(-1, actions.unsqueeze(-1), True)
        avail = torch.where(mask[:, None, :, None], avail, only_taken[:, None])
    return EpisodeBatch(
        obs=torch.stack([obs, obs_next], dim=1),
        state=torch.stack([state, state_next], dim=1),
        avail=avail,
        actions=actions.unsqueeze(1),
        reward=rewards.unsqueeze(1),
        terminated=terminals.bool().unsqueeze(1),
        filled=torch.ones(b, 1, dtype=torch.bool),
    )
