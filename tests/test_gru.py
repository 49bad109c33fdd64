"""The fused GRU the learner runs on the CPU equals each agent's own nn.GRU, values and
gradients; without a C compiler the learner falls back to nn.GRU."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from wqmix_cli.policy import native
from wqmix_cli.policy.agents import MLPAgent, RNNAgent
from wqmix_cli.policy.gru import evaluate_agents

needs_compiler = pytest.mark.skipif(
    not any(shutil.which(cc) for cc in ("cc", "gcc", "clang")), reason="no C compiler to build the kernel with"
)


@pytest.fixture
def fresh_kernel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """``gru_kernel()`` built anew into an empty cache folder, and forgotten afterwards."""
    monkeypatch.setenv("WQMIX_CACHE_DIR", str(tmp_path))
    native.gru_kernel.cache_clear()
    yield tmp_path
    native.gru_kernel.cache_clear()


@needs_compiler
def test_kernel_is_built_once_into_the_cache(fresh_kernel: Path) -> None:
    assert native.gru_kernel() is not None
    (built,) = fresh_kernel.glob("gru_kernel-*.so")
    stamp = built.stat().st_mtime_ns
    native.gru_kernel.cache_clear()
    assert native.gru_kernel() is not None
    assert list(fresh_kernel.glob("gru_kernel-*.so")) == [built] and built.stat().st_mtime_ns == stamp


@pytest.mark.parametrize("setting", ["no-compiler", "switched-off"])
def test_without_the_kernel_agents_run_their_own_gru(
    setting: str, fresh_kernel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if setting == "no-compiler":
        monkeypatch.setenv("CC", str(fresh_kernel / "no-such-cc"))
        with pytest.warns(UserWarning, match="could not be built"):
            assert native.gru_kernel() is None
    else:
        monkeypatch.setenv("WQMIX_NATIVE_GRU", "0")
        assert native.gru_kernel() is None
    torch.manual_seed(0)
    agents = [RNNAgent(5, 3, 8), RNNAgent(5, 3, 8)]
    inputs = torch.randn(2, 4, 3, 5)
    for ours, agent in zip(evaluate_agents(agents, inputs), agents):
        assert torch.equal(ours, agent(inputs)[0])
    from wqmix_cli.actor import Actor
    from wqmix_cli.config import LearnerConfig
    from wqmix_cli.envs.base import EnvInfo
    from wqmix_cli.policy import WQMIXPolicy

    actor = Actor(WQMIXPolicy(EnvInfo(2, 3, 4, 3, 5), LearnerConfig(hidden_dim=8), central=False), torch.device("cpu"))
    actor.start(1)
    assert actor._kernel is None and actor.act(np.zeros((1, 2, 3), np.float32), np.ones((1, 2, 3), bool), 0.5).shape == (1, 2)
    assert not list(fresh_kernel.glob("*.so"))


def _grads(agents: list[torch.nn.Module]) -> list[torch.Tensor]:
    grads = [p.grad.clone() for agent in agents for p in agent.parameters()]
    for agent in agents:
        agent.zero_grad(set_to_none=True)
    return grads


@needs_compiler
@pytest.mark.parametrize(
    "hidden, batch", [(16, 3), (13, 3), (16, 7)], ids=["vector-width", "remainder", "row-blocks-and-rest"]
)
def test_stacked_agents_match_their_own_forward_and_gradients(hidden: int, batch: int) -> None:
    """2 agents x ``batch`` episodes = 6 rows (one register block) or 14 (two blocks, 2 rows over)."""
    assert native.gru_kernel() is not None
    torch.manual_seed(0)
    agents = [RNNAgent(7, 4, hidden_dim=hidden), RNNAgent(7, 4, hidden_dim=hidden)]
    inputs = torch.randn(batch, 9, 2, 7)
    upstream = torch.randn(2, batch, 9, 2, 4)

    stacked = evaluate_agents(agents, inputs)
    sum((q * u).sum() for q, u in zip(stacked, upstream)).backward()
    stacked_grads = _grads(agents)
    alone = [agent(inputs)[0] for agent in agents]
    sum((q * u).sum() for q, u in zip(alone, upstream)).backward()
    alone_grads = _grads(agents)

    for ours, theirs in zip(stacked, alone):
        assert ours.shape == (batch, 9, 2, 4)
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    for ours, theirs in zip(stacked_grads, alone_grads):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
    assert all(g.abs().sum() > 0 for g in stacked_grads)


@pytest.mark.parametrize("grad", [True, False], ids=["frozen-weights", "no-grad"])
def test_target_networks_get_the_same_values(grad: bool) -> None:
    """Nothing to differentiate (frozen copies, or the target pass under no_grad): the same values."""
    torch.manual_seed(1)
    agent = RNNAgent(5, 3, hidden_dim=8).requires_grad_(False)
    inputs = torch.randn(2, 6, 3, 5)
    with torch.set_grad_enabled(grad):
        (q,) = evaluate_agents([agent], inputs)
    assert not q.requires_grad
    torch.testing.assert_close(q, agent(inputs)[0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("agents, dtype", [
    ([MLPAgent(5, 3, 8), MLPAgent(5, 3, 8)], torch.float32),
    ([RNNAgent(5, 3, 8), RNNAgent(5, 3, 16)], torch.float32),
    ([RNNAgent(5, 3, 8).double(), RNNAgent(5, 3, 8).double()], torch.float64),
], ids=["feed-forward", "different-sizes", "float64"])
def test_other_agents_run_their_own_forward(agents: list[torch.nn.Module], dtype: torch.dtype) -> None:
    inputs = torch.randn(2, 4, 3, 5, dtype=dtype)
    for ours, agent in zip(evaluate_agents(agents, inputs), agents):
        torch.testing.assert_close(ours, agent(inputs)[0])


@needs_compiler
@pytest.mark.parametrize("n_envs, hidden", [(1, 16), (5, 16), (4, 64)])
def test_the_actors_c_step_takes_the_torch_steps_actions(n_envs: int, hidden: int) -> None:
    """Same weights, observations, masks and generator seed: the C step and the torch step
    choose the same actions and carry the same hidden state, greedy and exploring (odd and
    even row counts, hidden sizes below and at the kernel's 32-column blocks)."""
    from wqmix_cli.actor import Actor
    from wqmix_cli.config import LearnerConfig
    from wqmix_cli.envs.base import EnvInfo
    from wqmix_cli.policy import WQMIXPolicy

    info = EnvInfo(n_agents=3, obs_dim=7, state_dim=4, n_actions=6, episode_limit=20)
    policy = WQMIXPolicy(info, LearnerConfig(hidden_dim=hidden), central=False)
    in_c, in_torch = Actor(policy, torch.device("cpu"), seed=5), Actor(policy, torch.device("cpu"), seed=5)
    in_torch._kernel = None
    assert in_c._kernel is not None
    rng = torch.Generator().manual_seed(0)
    chosen = set()
    for episode in range(3):
        in_c.start(n_envs)
        in_torch.start(n_envs)
        for t in range(info.episode_limit):
            obs = torch.randn(n_envs, 3, 7, generator=rng).numpy()
            avail = (torch.rand(n_envs, 3, 6, generator=rng) > 0.5).numpy()
            avail[..., t % 6] = True
            epsilon = (0.0, 0.4, 1.0)[(t + episode) % 3]
            actions = in_c.act(obs, avail, epsilon)
            assert actions.dtype == np.int64 and actions.shape == (n_envs, 3)
            np.testing.assert_array_equal(actions, in_torch.act(obs, avail, epsilon))
            assert np.take_along_axis(avail, actions[..., None], -1).all()
            chosen.update(actions.flatten().tolist())
        torch.testing.assert_close(in_c.hidden, in_torch.hidden, rtol=1e-5, atol=1e-6)
    assert chosen == set(range(6))


@needs_compiler
def test_saturated_gates_stay_finite_in_the_learner_and_the_actor() -> None:
    """Pre-activations far past exp's float range: the C kernels saturate as torch does
    (they once returned NaN there, from 1 / (1 + inf) under -ffast-math)."""
    from wqmix_cli.actor import Actor
    from wqmix_cli.config import LearnerConfig
    from wqmix_cli.envs.base import EnvInfo
    from wqmix_cli.policy import WQMIXPolicy

    torch.manual_seed(0)
    info = EnvInfo(n_agents=3, obs_dim=5, state_dim=4, n_actions=3, episode_limit=6)
    policy = WQMIXPolicy(info, LearnerConfig(hidden_dim=16), central=False)
    agent = policy.agent
    with torch.no_grad():
        for p in agent.parameters():
            p.mul_(60.0)
    inputs = torch.randn(4, 6, 3, 5 + 3 + 3)  # obs, last action, agent id
    (ours,) = evaluate_agents([agent], inputs)
    ours.square().sum().backward()
    grads = _grads([agent])
    theirs = agent(inputs)[0]
    theirs.square().sum().backward()
    assert torch.isfinite(ours).all() and all(torch.isfinite(g).all() for g in grads)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)

    in_c, in_torch = Actor(policy, torch.device("cpu")), Actor(policy, torch.device("cpu"))
    in_torch._kernel = None
    in_c.start(4)
    in_torch.start(4)
    avail = np.ones((4, 3, 3), bool)
    for t in range(6):
        obs = 60.0 * inputs[:, t, :, :5].numpy()
        np.testing.assert_array_equal(in_c.act(obs, avail, 0.0), in_torch.act(obs, avail, 0.0))
    assert torch.isfinite(in_c.hidden).all()


@needs_compiler
def test_a_frozen_actor_in_c_acts_with_its_last_sync_across_episodes() -> None:
    """The frozen actor keeps its C step's weights from one start() to the next; a change to
    the policy reaches its actions only after sync(), and then fully (checked against the
    torch step on the policy's own weights)."""
    from wqmix_cli.actor import Actor
    from wqmix_cli.config import LearnerConfig
    from wqmix_cli.envs.base import EnvInfo
    from wqmix_cli.policy import WQMIXPolicy

    info = EnvInfo(n_agents=3, obs_dim=7, state_dim=4, n_actions=6, episode_limit=10)
    torch.manual_seed(0)
    policy = WQMIXPolicy(info, LearnerConfig(hidden_dim=16), central=False)
    frozen = Actor(policy, torch.device("cpu"), frozen=True)
    live = Actor(policy, torch.device("cpu"))
    live._kernel = None
    rng = torch.Generator().manual_seed(1)
    obs = torch.randn(info.episode_limit, 2, 3, 7, generator=rng).numpy()
    avail = np.ones((2, 3, 6), bool)

    def episode(actor: Actor) -> np.ndarray:
        actor.start(2)
        return np.stack([actor.act(o, avail, 0.0) for o in obs])

    first = episode(frozen)
    np.testing.assert_array_equal(first, episode(live))
    with torch.no_grad():
        for p in policy.agent.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=rng))
    changed = episode(live)
    assert (changed != first).any()
    np.testing.assert_array_equal(episode(frozen), first)
    frozen.sync()
    np.testing.assert_array_equal(episode(frozen), changed)


@needs_compiler
def test_threads_split_the_rows_without_changing_a_bit() -> None:
    """Sequences are independent: 45 rows split among 1, 2 or 3 threads give the same values
    (bit for bit; the gradients also pass through torch's matmuls, whose sums may be split)."""
    torch.manual_seed(0)
    agents = [RNNAgent(7, 4, hidden_dim=16), RNNAgent(7, 4, hidden_dim=16)]
    inputs = torch.randn(15, 6, 3, 7)
    previous = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            q = evaluate_agents(agents, inputs)
            sum(x.square().sum() for x in q).backward()
            results.append((q, _grads(agents)))
    finally:
        torch.set_num_threads(previous)
    (q1, g1), *others = results
    for q, g in others:
        assert all(torch.equal(a, b) for a, b in zip(q, q1))
        for a, b in zip(g, g1):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
