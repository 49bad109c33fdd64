"""Networks: shapes, monotonicity of the QMIX mixer, independence of Q*, target copies."""
import torch
from conftest import SMALL_INFO, small_policy

from wqmix_cli.policy import FeedForwardMixer, QMixer, build_inputs


def test_mixer_is_monotonic_in_every_agent_value():
    mixer = QMixer(n_agents=4, state_dim=7, embed_dim=8, hypernet_dim=16)
    qs = torch.randn(16, 5, 4, requires_grad=True)
    q_tot = mixer(qs, torch.randn(16, 5, 7) * 3)
    (grad,) = torch.autograd.grad(q_tot.sum(), qs)
    assert q_tot.shape == (16, 5)
    assert torch.all(grad >= 0)


def test_feed_forward_mixer_is_not_constrained():
    torch.manual_seed(1)
    mixer = FeedForwardMixer(n_agents=4, state_dim=7, hidden_dim=32)
    qs = torch.randn(64, 5, 4, requires_grad=True)
    (grad,) = torch.autograd.grad(mixer(qs, torch.randn(64, 5, 7)).sum(), qs)
    assert (grad < 0).any() and (grad > 0).any()


def test_build_inputs_one_hot_last_action_and_agent_id():
    obs = torch.zeros(1, 2, 3, 2)
    last = torch.tensor([[[-1, -1, -1], [2, 0, 1]]])
    x = build_inputs(obs, last, n_actions=4)
    assert x.shape == (1, 2, 3, 2 + 4 + 3)
    assert torch.all(x[0, 0, :, 2:6] == 0)  # no last action at t=0
    assert torch.equal(x[0, 1, :, 2:6].argmax(-1), torch.tensor([2, 0, 1]))
    assert torch.equal(x[0, 1, :, 6:], torch.eye(3))


def test_agent_shapes_and_stepwise_equals_sequence():
    policy = small_policy()
    inputs = torch.randn(2, 6, SMALL_INFO.n_agents, SMALL_INFO.obs_dim + SMALL_INFO.n_actions + SMALL_INFO.n_agents)
    whole, _ = policy.agent(inputs)
    assert whole.shape == (2, 6, SMALL_INFO.n_agents, SMALL_INFO.n_actions)
    hidden, steps = None, []
    for t in range(6):
        q, hidden = policy.agent(inputs[:, t : t + 1], hidden)
        steps.append(q)
    assert torch.allclose(torch.cat(steps, dim=1), whole, atol=1e-6)


def test_central_agent_is_a_separate_network_not_a_copy():
    policy = small_policy()
    agent_params = {id(p) for p in policy.agent.parameters()}
    assert not agent_params & {id(p) for p in policy.central_agent.parameters()}
    assert not torch.equal(policy.agent.fc1.weight, policy.central_agent.fc1.weight)
    assert not agent_params & {id(p) for p in policy.trained_parameters()[len(agent_params):]}


def test_targets_start_equal_and_are_frozen():
    policy = small_policy()
    for name, target in policy.targets().items():
        online = getattr(policy, name)
        assert all(torch.equal(a, b) for a, b in zip(online.parameters(), target.parameters()))
        assert all(not p.requires_grad for p in target.parameters())
        assert not {id(p) for p in online.parameters()} & {id(p) for p in target.parameters()}
    assert set(policy.targets()) == {"central_agent", "central_mixer"}
    assert set(small_policy(central=False).targets()) == {"agent", "mixer"}
