import pytest
import torch

from wqmix_cli.buffer import EpisodeBatch
from wqmix_cli.config import LearnerConfig
from wqmix_cli.envs.base import EnvInfo
from wqmix_cli.policy import WQMIXPolicy

# As `wqmix train` does on this 2-core machine: two threads for tiny ops are slower.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def random_batch(info: EnvInfo, lengths: list[int], t: int | None = None, seed: int = 0) -> EpisodeBatch:
    """Episodes of the given lengths padded to ``t`` steps; padding holds zeros."""
    g = torch.Generator().manual_seed(seed)
    b, n, a = len(lengths), info.n_agents, info.n_actions
    t = t or max(lengths)
    avail = torch.rand(b, t + 1, n, a, generator=g) > 0.3
    avail[..., 0] = True
    actions = torch.zeros(b, t, n, dtype=torch.long)
    for i in range(b):
        for j in range(t):
            for k in range(n):
                choices = avail[i, j, k].nonzero().flatten()
                actions[i, j, k] = choices[torch.randint(len(choices), (1,), generator=g)]
    filled = torch.zeros(b, t, dtype=torch.bool)
    terminated = torch.zeros(b, t, dtype=torch.bool)
    for i, length in enumerate(lengths):
        filled[i, :length] = True
        terminated[i, length - 1] = i % 2 == 0
    batch = EpisodeBatch(
        obs=torch.randn(b, t + 1, n, info.obs_dim, generator=g),
        state=torch.randn(b, t + 1, info.state_dim, generator=g),
        avail=avail,
        actions=actions,
        reward=torch.randn(b, t, generator=g),
        terminated=terminated,
        filled=filled,
    )
    for i, length in enumerate(lengths):
        batch.obs[i, length + 1 :] = 0
        batch.state[i, length + 1 :] = 0
        batch.avail[i, length + 1 :] = False
        batch.actions[i, length:] = 0
        batch.reward[i, length:] = 0
    return batch


SMALL_INFO = EnvInfo(n_agents=3, obs_dim=6, state_dim=8, n_actions=4, episode_limit=10)


def small_policy(central: bool = True, recurrent: bool = True) -> WQMIXPolicy:
    cfg = LearnerConfig(recurrent=recurrent, hidden_dim=16, mixer_embed_dim=8, hypernet_dim=16, central_mixer_dim=32)
    return WQMIXPolicy(SMALL_INFO, cfg, central=central)
