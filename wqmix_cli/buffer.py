"""Episode replay: preallocated arrays of whole episodes, padded, sampled uniformly.

Observations are stored once per step (``T + 1`` of them per episode: the step after the
last action is the next observation of step ``T - 1``), actions as small integers,
masks as bools.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from wqmix_cli.envs.base import EnvInfo

PER_OBSERVATION = frozenset({"obs", "state", "avail"})


@dataclass
class EpisodeBatch:
    """B episodes padded to T steps.

    obs ``[B, T+1, N, O]``, state ``[B, T+1, S]``, avail ``[B, T+1, N, A]`` bool,
    actions ``[B, T, N]`` long, reward ``[B, T]``, terminated ``[B, T]`` bool,
    filled ``[B, T]`` bool (1 on real steps, 0 on padding).
    """

    obs: torch.Tensor
    state: torch.Tensor
    avail: torch.Tensor
    actions: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    filled: torch.Tensor

    def to(self, device: torch.device | str) -> "EpisodeBatch":
        return EpisodeBatch(**{f.name: getattr(self, f.name).to(device, non_blocking=True) for f in fields(self)})

    @property
    def batch_size(self) -> int:
        return self.actions.shape[0]

    @property
    def max_steps(self) -> int:
        return self.actions.shape[1]


class EpisodeBuffer:
    """A ring of ``capacity`` episodes of at most ``info.episode_limit`` steps."""

    @staticmethod
    def bytes_for(info: EnvInfo, capacity: int) -> int:
        """What a buffer of ``capacity`` episodes of this env takes, without making it."""
        return EpisodeBuffer(info, 1).nbytes() * capacity

    def __init__(self, info: EnvInfo, capacity: int, seed: int = 0) -> None:
        t, n = info.episode_limit, info.n_agents
        self.capacity, self.info = capacity, info
        action_dtype = torch.uint8 if info.n_actions <= 256 else torch.int16
        self.storage = EpisodeBatch(
            obs=torch.zeros(capacity, t + 1, n, info.obs_dim),
            state=torch.zeros(capacity, t + 1, info.state_dim),
            avail=torch.zeros(capacity, t + 1, n, info.n_actions, dtype=torch.bool),
            actions=torch.zeros(capacity, t, n, dtype=action_dtype),
            reward=torch.zeros(capacity, t),
            terminated=torch.zeros(capacity, t, dtype=torch.bool),
            filled=torch.zeros(capacity, t, dtype=torch.bool),
        )
        self.lengths = torch.zeros(capacity, dtype=torch.long)
        self.position = 0
        self.size = 0
        self.generator = torch.Generator().manual_seed(seed)

    def add(self, episodes: EpisodeBatch, lengths: torch.Tensor) -> None:
        """Store E episodes (each padded to ``episodes.max_steps``) with real ``lengths [E]``."""
        e, t = episodes.batch_size, episodes.max_steps
        slots = (self.position + torch.arange(e)) % self.capacity
        for f in fields(EpisodeBatch):
            dest = getattr(self.storage, f.name)
            span = t + 1 if f.name in PER_OBSERVATION else t
            dest[slots] = 0
            dest[slots, :span] = getattr(episodes, f.name)[:, :span].to(dest.dtype)
        self.lengths[slots] = lengths
        self.position = int((self.position + e) % self.capacity)
        self.size = min(self.size + e, self.capacity)

    def can_sample(self, batch_size: int) -> bool:
        return self.size >= batch_size

    def sample(self, batch_size: int) -> EpisodeBatch:
        """B episodes drawn uniformly, cut to the longest of them (no work on padding)."""
        idx = torch.randint(self.size, (batch_size,), generator=self.generator)
        t = int(self.lengths[idx].max())
        out = {}
        for f in fields(EpisodeBatch):
            src = getattr(self.storage, f.name)
            span = t + 1 if f.name in PER_OBSERVATION else t
            out[f.name] = src[idx, :span]
        out["actions"] = out["actions"].long()
        return EpisodeBatch(**out)

    def nbytes(self) -> int:
        """Bytes held by the stored arrays."""
        return sum(getattr(self.storage, f.name).nbytes for f in fields(EpisodeBatch)) + self.lengths.nbytes

    def state_dict(self) -> dict:
        n = self.size
        data = {f.name: getattr(self.storage, f.name)[:n].clone() for f in fields(EpisodeBatch)}
        return {
            "data": data,
            "lengths": self.lengths[:n].clone(),
            "position": self.position,
            "size": self.size,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        n = state["size"]
        for name, value in state["data"].items():
            getattr(self.storage, name)[:n] = value
        self.lengths[:n] = state["lengths"]
        self.position, self.size = state["position"], n
        self.generator.set_state(state["generator"])
