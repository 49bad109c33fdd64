"""The Weighted QMIX loss against hand-computed values (design section 4)."""
import math
import threading

import pytest
import torch
from conftest import SMALL_INFO, random_batch, small_policy
from torch import nn

from wqmix_cli.buffer import EpisodeBatch
from wqmix_cli.config import LearnerConfig
from wqmix_cli.learner import WQMIXLearner, _mix, wqmix_loss

ALPHA = 0.1
GAMMA = 0.5


class TableAgent(nn.Module):
    """A stand-in agent network whose utilities are a fixed table ``[B, T+1, N, A]``."""

    def __init__(self, table: list) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.tensor(table, dtype=torch.float32))

    def forward(self, inputs, hidden=None):
        return self.table[:, : inputs.shape[1]], hidden


class SumMixer(nn.Module):
    def forward(self, agent_qs, states):
        return agent_qs.sum(-1)


def table(per_step: list) -> list:
    """The same ``[T+1, N, A]`` table for both episodes of the batch."""
    return [per_step, per_step]


# Online utilities: greedy (0, 1) at t=0, (1, 0) at t=1, (0, 0) at t=2.
ONLINE = table([[[1, 0], [0, 1]], [[0, 2], [3, 0]], [[1, 0], [1, 0]]])
# Target Q*: at the online greedy actions, 5+5=10 at t=0 and 4+2=6 at t=1 (its own greedy at t=1 is 4+7=11).
TARGET_CENTRAL = table([[[5, 0], [0, 5]], [[1, 4], [2, 7]], [[0, 0], [0, 0]]])
# Online Q*: at the taken actions (0, 1): 2+3=5 at t=0 and 1+4=5 at t=1; at the greedy (1, 0) at t=1: 18.
ONLINE_CENTRAL = table([[[2, 9], [9, 3]], [[1, 9], [9, 4]], [[0, 0], [0, 0]]])


def hand_built(variant: str):
    policy = small_policy(central=variant != "qmix")
    policy.agent, policy.mixer = TableAgent(ONLINE), SumMixer()
    if variant != "qmix":
        policy.central_agent, policy.central_mixer = TableAgent(ONLINE_CENTRAL), SumMixer()
        policy.target_central_agent, policy.target_central_mixer = TableAgent(TARGET_CENTRAL), SumMixer()
    else:
        policy.target_agent, policy.target_mixer = TableAgent(TARGET_CENTRAL), SumMixer()
    batch = EpisodeBatch(
        obs=torch.zeros(2, 3, 2, SMALL_INFO.obs_dim),
        state=torch.zeros(2, 3, SMALL_INFO.state_dim),
        avail=torch.ones(2, 3, 2, 2, dtype=torch.bool),
        actions=torch.tensor([[[0, 1], [0, 1]], [[0, 1], [0, 1]]]),
        reward=torch.tensor([[-5.0, -3.0], [1.0, 10.0]]),
        terminated=torch.tensor([[False, True], [False, True]]),
        filled=torch.ones(2, 2, dtype=torch.bool),
    )
    policy.info = SMALL_INFO.__class__(2, SMALL_INFO.obs_dim, SMALL_INFO.state_dim, 2, 10)
    return policy, batch


def test_targets_use_online_greedy_actions_and_target_central_q():
    policy, batch = hand_built("cwqmix")
    parts = wqmix_loss(policy, batch, "cwqmix", ALPHA, GAMMA)
    # y_0 = r_0 + 0.5 * Q*_target(s_1, online greedy (1, 0)) = r_0 + 0.5 * 6; y_1 = r_1 (terminal).
    assert torch.allclose(parts.targets, torch.tensor([[-2.0, -3.0], [4.0, 10.0]]))


def test_cw_weights_match_hand_computation():
    policy, batch = hand_built("cwqmix")
    parts = wqmix_loss(policy, batch, "cwqmix", ALPHA, GAMMA)
    # t=0: the taken actions are greedy -> 1. t=1: not greedy; y > Q*_target(s_1, greedy) = 6 only for episode 2.
    assert torch.allclose(parts.weights, torch.tensor([[1.0, ALPHA], [1.0, 1.0]]))


def test_ow_weights_match_hand_computation():
    policy, batch = hand_built("owqmix")
    parts = wqmix_loss(policy, batch, "owqmix", ALPHA, GAMMA)
    # Q_tot(taken) = 2 at t=0 and 0 at t=1; weight 1 where Q_tot < y.
    assert torch.allclose(parts.weights, torch.tensor([[ALPHA, ALPHA], [1.0, 1.0]]))


@pytest.mark.parametrize("variant", ["cwqmix", "owqmix"])
def test_losses_match_hand_computation(variant):
    policy, batch = hand_built(variant)
    parts = wqmix_loss(policy, batch, variant, ALPHA, GAMMA)
    y = torch.tensor([[-2.0, -3.0], [4.0, 10.0]])
    q_tot = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    q_star_taken = torch.tensor([[5.0, 5.0], [5.0, 5.0]])  # Q* at the taken, not the greedy, actions
    assert parts.central.item() == pytest.approx(((q_star_taken - y) ** 2).mean().item())
    assert parts.qmix.item() == pytest.approx((parts.weights * (q_tot - y) ** 2).mean().item())
    assert parts.total.item() == pytest.approx(parts.qmix.item() + parts.central.item())


def test_qmix_target_uses_its_own_target_mixer_with_online_greedy():
    policy, batch = hand_built("qmix")
    parts = wqmix_loss(policy, batch, "qmix", ALPHA, GAMMA)
    assert torch.allclose(parts.targets, torch.tensor([[-2.0, -3.0], [4.0, 10.0]]))
    assert torch.all(parts.weights == 1.0)
    assert parts.central.item() == 0.0


def test_weights_and_targets_carry_no_gradient():
    policy, batch = hand_built("owqmix")
    parts = wqmix_loss(policy, batch, "owqmix", ALPHA, GAMMA)
    assert not parts.weights.requires_grad and not parts.targets.requires_grad
    parts.total.backward()
    assert policy.target_central_agent.table.grad is None
    assert policy.central_agent.table.grad is not None


@pytest.mark.parametrize("variant", ["cwqmix", "owqmix", "qmix"])
@pytest.mark.parametrize("recurrent", [True, False])
def test_padding_does_not_change_the_loss(variant, recurrent):
    policy = small_policy(central=variant != "qmix", recurrent=recurrent)
    lengths = [5, 3, 2]
    tight = random_batch(SMALL_INFO, lengths)
    padded = random_batch(SMALL_INFO, lengths, t=9)
    for name in ("obs", "state", "avail", "actions", "reward", "terminated", "filled"):
        src, dst = getattr(tight, name), getattr(padded, name)
        dst[:, : src.shape[1]] = src
    padded.obs[:, 6:] = torch.randn_like(padded.obs[:, 6:])  # garbage past every episode's end
    a = wqmix_loss(policy, tight, variant, ALPHA, 0.99)
    b = wqmix_loss(policy, padded, variant, ALPHA, 0.99)
    assert a.total.item() == pytest.approx(b.total.item(), rel=1e-6)
    assert a.central.item() == pytest.approx(b.central.item(), rel=1e-6)


def test_loss_of_a_batch_is_the_step_weighted_mean_of_its_episodes():
    policy = small_policy()
    lengths = [4, 2]
    batch = random_batch(SMALL_INFO, lengths, seed=3)
    whole = wqmix_loss(policy, batch, "cwqmix", ALPHA, 0.99).total.item()
    parts = []
    for i, length in enumerate(lengths):
        one = EpisodeBatch(**{k: v[i : i + 1, : length + (1 if k in ("obs", "state", "avail") else 0)]
                              for k, v in vars(batch).items()})
        parts.append(wqmix_loss(policy, one, "cwqmix", ALPHA, 0.99).total.item() * length)
    assert whole == pytest.approx(sum(parts) / sum(lengths), rel=1e-5)


def test_hard_target_sync_after_interval():
    policy = small_policy()
    cfg = LearnerConfig(hidden_dim=16, mixer_embed_dim=8, hypernet_dim=16, central_mixer_dim=32,
                        target_update_interval=3, lr=1e-2)
    learner = WQMIXLearner(policy, cfg, "cwqmix", ALPHA, torch.device("cpu"))
    batch = random_batch(SMALL_INFO, [4, 3])

    def same() -> bool:
        return all(torch.equal(a, b) for a, b in zip(policy.central_agent.parameters(),
                                                      policy.target_central_agent.parameters()))

    start = [p.clone() for p in policy.target_central_agent.parameters()]
    learner.update(batch)
    learner.update(batch)
    assert not same()
    assert all(torch.equal(a, b) for a, b in zip(start, policy.target_central_agent.parameters()))
    learner.update(batch)
    assert same()


def test_soft_target_update_moves_targets_by_tau():
    policy = small_policy()
    cfg = LearnerConfig(hidden_dim=16, mixer_embed_dim=8, hypernet_dim=16, central_mixer_dim=32,
                        target_update="soft", tau=0.25, lr=1e-2)
    learner = WQMIXLearner(policy, cfg, "cwqmix", ALPHA, torch.device("cpu"))
    before = [p.clone() for p in policy.target_central_mixer.parameters()]
    learner.update(random_batch(SMALL_INFO, [4, 3]))
    for old, new, online in zip(before, policy.target_central_mixer.parameters(), policy.central_mixer.parameters()):
        assert torch.allclose(new, old + 0.25 * (online - old), atol=1e-6)


def test_update_returns_the_design_tags_and_finite_values():
    policy = small_policy()
    learner = WQMIXLearner(policy, LearnerConfig(hidden_dim=16), "owqmix", ALPHA, torch.device("cpu"))
    stats = learner.update(random_batch(SMALL_INFO, [4, 3, 5]))
    assert set(stats) == {"loss", "loss_qmix", "loss_central", "w_mean", "predict_q", "target_q", "grad_norm",
                          "learning_rate"}
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    assert ALPHA <= stats["w_mean"] <= 1.0
    assert stats["loss"] == pytest.approx(stats["loss_qmix"] + stats["loss_central"], rel=1e-6)


def test_nan_loss_stops_with_a_message():
    policy = small_policy()
    learner = WQMIXLearner(policy, LearnerConfig(hidden_dim=16), "cwqmix", ALPHA, torch.device("cpu"))
    batch = random_batch(SMALL_INFO, [3, 2])
    batch.reward[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="update 1"):
        learner.update(batch)


@pytest.fixture
def two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def _where_q_star_mixes(policy) -> list[str]:
    """The names of the threads the central mixer runs on, as the learner updates."""
    names = []
    policy.central_mixer.register_forward_hook(lambda *_: names.append(threading.current_thread().name))
    return names


@pytest.mark.parametrize("variant", ["cwqmix", "owqmix"])
def test_q_star_half_on_a_helper_thread_gives_the_same_update(variant, two_threads):
    """With 2 threads the Q* half runs beside the rest, each on one thread: the numbers are
    those of the whole update run on one thread."""
    cfg = LearnerConfig(hidden_dim=16)
    batches = [random_batch(SMALL_INFO, [4, 3, 5], seed=s) for s in range(3)]
    together, alone = small_policy(), small_policy()
    alone.load_state_dict(together.state_dict())
    helper_names = _where_q_star_mixes(together)
    results = {}
    for name, policy, threads in (("together", together, 2), ("alone", alone, 1)):
        learner = WQMIXLearner(policy, cfg, variant, ALPHA, torch.device("cpu"))
        torch.set_num_threads(threads)
        results[name] = [learner.update(b) for b in batches]
        assert torch.get_num_threads() == threads  # the update gives the caller its threads back
    assert helper_names and all(n.startswith("wqmix-q-star") for n in helper_names)
    assert results["together"] == results["alone"]
    for a, b in zip(together.parameters(), alone.parameters()):
        assert torch.equal(a, b)


def test_a_failing_half_stops_the_update_and_the_next_one_runs(two_threads, monkeypatch):
    policy = small_policy()
    learner = WQMIXLearner(policy, LearnerConfig(hidden_dim=16), "cwqmix", ALPHA, torch.device("cpu"))
    batch = random_batch(SMALL_INFO, [3, 2])
    monkeypatch.setattr(policy.target_central_mixer, "forward", lambda *_: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        learner.update(batch)  # the Q* half, waiting for y, gets the error too instead of hanging
    monkeypatch.undo()
    assert math.isfinite(learner.update(batch)["loss"])


def _target_passes(policy, monkeypatch) -> list[tuple[str, int]]:
    """(thread name, batch size) of each target-agent pass the learner runs."""
    import wqmix_cli.learner as learner_module

    calls, evaluate = [], learner_module.evaluate_agents

    def recording(agents, inputs):
        if agents[0] is policy.target_central_agent:
            calls.append((threading.current_thread().name, inputs.shape[0]))
        return evaluate(agents, inputs)

    monkeypatch.setattr(learner_module, "evaluate_agents", recording)
    return calls


def test_the_next_batch_s_target_pass_runs_early_with_the_same_update(two_threads, monkeypatch):
    """Given the upcoming batch, an update on 2 threads runs its target pass on the caller's
    thread while the Q* half finishes; the next update skips that pass. Across a target sync
    (every 2 updates here) the early pass is not made, and the numbers are those of plain
    updates on one thread."""
    cfg = LearnerConfig(hidden_dim=16, target_update_interval=2)
    batches = [random_batch(SMALL_INFO, [4, 3, 5], seed=s) for s in range(5)]
    early, plain = small_policy(), small_policy()
    plain.load_state_dict(early.state_dict())
    calls = _target_passes(early, monkeypatch)
    learner = WQMIXLearner(early, cfg, "cwqmix", ALPHA, torch.device("cpu"))
    results = [learner.update(b, upcoming) for b, upcoming in zip(batches, [*batches[1:], None])]
    torch.set_num_threads(1)
    reference = WQMIXLearner(plain, cfg, "cwqmix", ALPHA, torch.device("cpu"))
    assert results == [reference.update(b) for b in batches]
    # Updates 2 and 4 sync the targets: updates 1 and 3 prepare the next batch, 2 and 4 cannot.
    where = [name.split("_")[0] for name, _ in calls]
    assert where == ["wqmix-q-star", "MainThread", "wqmix-q-star", "MainThread", "wqmix-q-star"]


def test_an_early_target_pass_is_only_used_for_the_batch_it_was_made_for(two_threads, monkeypatch):
    policy = small_policy()
    calls = _target_passes(policy, monkeypatch)
    learner = WQMIXLearner(policy, LearnerConfig(hidden_dim=16), "cwqmix", ALPHA, torch.device("cpu"))
    announced, other = random_batch(SMALL_INFO, [3, 2], seed=1), random_batch(SMALL_INFO, [3, 2], seed=2)
    learner.update(random_batch(SMALL_INFO, [4]), upcoming=announced)
    learner.update(other)  # not the batch announced: its own target pass
    assert [size for _, size in calls] == [1, 2, 2]
    assert calls[-1][0].startswith("wqmix-q-star")


def test_a_failing_target_pass_on_the_helper_stops_the_update(two_threads, monkeypatch):
    import wqmix_cli.learner as learner_module

    policy = small_policy()
    learner = WQMIXLearner(policy, LearnerConfig(hidden_dim=16), "cwqmix", ALPHA, torch.device("cpu"))
    evaluate = learner_module.evaluate_agents

    def failing(agents, inputs):
        if agents[0] is policy.target_central_agent:
            raise RuntimeError("target boom")
        return evaluate(agents, inputs)

    monkeypatch.setattr(learner_module, "evaluate_agents", failing)
    batch = random_batch(SMALL_INFO, [3, 2])
    with pytest.raises(RuntimeError, match="target boom"):
        learner.update(batch)  # the Q_tot half, waiting for the target utilities, stops instead of hanging
    monkeypatch.undo()
    assert math.isfinite(learner.update(batch)["loss"])


def test_the_optimiser_steps_one_flat_tensor_and_the_networks_see_it():
    policy = small_policy()
    learner = WQMIXLearner(policy, LearnerConfig(hidden_dim=16), "cwqmix", ALPHA, torch.device("cpu"))
    (flat,) = learner.optimizer.param_groups[0]["params"]
    assert flat.numel() == sum(p.numel() for p in policy.trained_parameters())
    before = [p.detach().clone() for p in policy.trained_parameters()]
    learner.optimizer.zero_grad(set_to_none=True)  # as a hand-written loop might: the views come back
    learner.update(random_batch(SMALL_INFO, [3, 2]))
    after = policy.trained_parameters()
    assert all(not torch.equal(a, b) for a, b in zip(before, after))
    assert torch.equal(flat.detach(), torch.cat([p.detach().reshape(-1) for p in after]))


@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
def test_the_optimiser_state_is_saved_per_parameter_and_resumes_on_the_flat_tensor(optimizer):
    """Checkpoints hold one optimiser entry per parameter (as earlier releases and GPU runs
    save them): a learner over separate tensors and the flat one carry on alike."""
    from wqmix_cli.learner import make_optimizer

    cfg = LearnerConfig(hidden_dim=16, optimizer=optimizer)
    batches = [random_batch(SMALL_INFO, [4, 3], seed=s) for s in range(3)]
    old_policy, new_policy = small_policy(), small_policy()
    old = WQMIXLearner(old_policy, cfg, "cwqmix", ALPHA, torch.device("cpu"),
                       optimizer=make_optimizer(old_policy.trained_parameters(), cfg))
    for batch in batches[:2]:
        old.update(batch)
    saved = old.state_dict()
    assert len(saved["optimizer"]["state"]) == len(old_policy.trained_parameters())
    new_policy.load_state_dict(old_policy.state_dict())
    new = WQMIXLearner(new_policy, cfg, "cwqmix", ALPHA, torch.device("cpu"))
    new.load_state_dict(saved)
    assert new.updates == 2
    assert old.update(batches[2])["loss"] == pytest.approx(new.update(batches[2])["loss"], rel=1e-6)
    for a, b in zip(old_policy.trained_parameters(), new_policy.trained_parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    old_state, new_state = old.state_dict()["optimizer"], new.state_dict()["optimizer"]
    assert new_state["param_groups"][0]["params"] == old_state["param_groups"][0]["params"]
    for index, entry in old_state["state"].items():
        assert entry.keys() == new_state["state"][index].keys()
        for key, value in entry.items():
            torch.testing.assert_close(new_state["state"][index][key], value, atol=1e-6, rtol=1e-5)


def test_a_policy_converted_after_its_learner_was_built_is_an_error_not_a_silent_stall():
    policy = small_policy()
    learner = WQMIXLearner(policy, LearnerConfig(hidden_dim=16), "cwqmix", ALPHA, torch.device("cpu"))
    policy.central_mixer.double().float()  # new tensors for some parameters: the buffer no longer reaches them
    with pytest.raises(RuntimeError, match="build the learner after moving the policy"):
        learner.update(random_batch(SMALL_INFO, [3, 2]))


def test_mixers_leave_out_the_padding_with_the_same_values_and_gradients():
    """Each step is mixed on its own: mixing only the real steps of a padded batch gives their
    values and the same gradients as mixing every step and masking, and 0 on the padding."""
    policy = small_policy()
    torch.manual_seed(0)
    lengths = torch.tensor([10, 4, 7, 1])
    rows = torch.arange(10) < lengths[:, None]  # [B, T]
    qs = torch.randn(4, 10, SMALL_INFO.n_agents, requires_grad=True)
    states = torch.randn(4, 10, SMALL_INFO.state_dim)
    for mixer in (policy.mixer, policy.central_mixer):
        results = []
        for packed in (False, True):
            mixer.zero_grad()
            qs.grad = None
            out = _mix(mixer, qs, states, rows if packed else None)
            (out * rows).square().sum().backward()
            results.append((out.detach(), qs.grad.clone(), [p.grad.clone() for p in mixer.parameters()]))
        (full, dq_full, dw_full), (part, dq_part, dw_part) = results
        torch.testing.assert_close(part[rows], full[rows])
        assert (part[~rows] == 0).all()
        torch.testing.assert_close(dq_part, dq_full)
        for a, b in zip(dw_part, dw_full):
            torch.testing.assert_close(a, b)
