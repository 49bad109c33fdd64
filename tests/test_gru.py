"""The stacked GRU the learner runs on the CPU equals each agent's own nn.GRU, values and gradients."""
import pytest
import torch

from wqmix_cli.policy.agents import MLPAgent, RNNAgent
from wqmix_cli.policy.gru import _StackedGRU, evaluate_agents


def test_hand_written_backward_passes_gradcheck() -> None:
    g = torch.Generator().manual_seed(0)
    gates_x = torch.randn(2, 5, 3, 12, generator=g, dtype=torch.double, requires_grad=True)
    w_hh = torch.randn(2, 12, 4, generator=g, dtype=torch.double, requires_grad=True)
    b_hh = torch.randn(2, 12, generator=g, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(_StackedGRU.apply, (gates_x, w_hh, b_hh))


def _grads(agents: list[torch.nn.Module]) -> list[torch.Tensor]:
    grads = [p.grad.clone() for agent in agents for p in agent.parameters()]
    for agent in agents:
        agent.zero_grad(set_to_none=True)
    return grads


def test_stacked_agents_match_their_own_forward_and_gradients() -> None:
    torch.manual_seed(0)
    agents = [RNNAgent(7, 4, hidden_dim=16), RNNAgent(7, 4, hidden_dim=16)]
    inputs = torch.randn(3, 9, 2, 7)
    upstream = torch.randn(2, 3, 9, 2, 4)

    stacked = evaluate_agents(agents, inputs)
    sum((q * u).sum() for q, u in zip(stacked, upstream)).backward()
    stacked_grads = _grads(agents)
    alone = [agent(inputs)[0] for agent in agents]
    sum((q * u).sum() for q, u in zip(alone, upstream)).backward()
    alone_grads = _grads(agents)

    for ours, theirs in zip(stacked, alone):
        assert ours.shape == (3, 9, 2, 4)
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    for ours, theirs in zip(stacked_grads, alone_grads):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
    assert all(g.abs().sum() > 0 for g in stacked_grads)


def test_frozen_weights_skip_what_only_the_backward_needs() -> None:
    """Autograd on but nothing to differentiate (frozen copies): the same values."""
    torch.manual_seed(1)
    agent = RNNAgent(5, 3, hidden_dim=8).requires_grad_(False)
    inputs = torch.randn(2, 6, 3, 5)
    (q,) = evaluate_agents([agent], inputs)
    assert not q.requires_grad
    torch.testing.assert_close(q, agent(inputs)[0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("agents", [
    [MLPAgent(5, 3, 8), MLPAgent(5, 3, 8)],
    [RNNAgent(5, 3, 8), RNNAgent(5, 3, 16)],
], ids=["feed-forward", "different-sizes"])
def test_other_agents_run_their_own_forward(agents: list[torch.nn.Module]) -> None:
    inputs = torch.randn(2, 4, 3, 5)
    for ours, agent in zip(evaluate_agents(agents, inputs), agents):
        torch.testing.assert_close(ours, agent(inputs)[0])
