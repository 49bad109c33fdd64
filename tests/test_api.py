"""The learner as a Python API: dict samples, transitions, errors, schedules, save/load."""
import copy
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_INFO, random_batch, small_policy

import wqmix_cli
from wqmix_cli import Config, LearnerConfig, WQMIXLearner
from wqmix_cli.learner import wqmix_loss
from wqmix_cli.samples import episode_batch_from_sample


def as_sample(batch) -> dict:
    return {"obs": batch.obs.numpy(), "state": batch.state.numpy(), "actions": batch.actions.numpy(),
            "rewards": batch.reward.numpy(), "terminated": batch.terminated.numpy(),
            "avail_actions": batch.avail.numpy(), "filled": batch.filled.numpy()}


def transitions(n: int = 6, seed: int = 0) -> dict:
    g = np.random.default_rng(seed)
    a, o, s = SMALL_INFO.n_agents, SMALL_INFO.obs_dim, SMALL_INFO.state_dim
    return {"obs": g.normal(size=(n, a, o)).astype(np.float32), "state": g.normal(size=(n, s)).astype(np.float32),
            "actions": g.integers(SMALL_INFO.n_actions, size=(n, a)), "rewards": g.normal(size=(n, a)),
            "obs_next": g.normal(size=(n, a, o)).astype(np.float32),
            "state_next": g.normal(size=(n, s)).astype(np.float32),
            "terminals": np.array([0, 1] * (n // 2), dtype=np.float32), "agent_mask": np.ones((n, a))}


def twin_learners(variant: str = "cwqmix"):
    policy = small_policy(central=variant != "qmix")
    a = WQMIXLearner(policy, LearnerConfig(hidden_dim=16), variant, 0.1)
    b = WQMIXLearner(copy.deepcopy(policy), LearnerConfig(hidden_dim=16), variant, 0.1)
    return a, b


def test_public_names_import_from_the_package_top_level():
    for name in ("WQMIXLearner", "WQMIXPolicy", "Config", "LearnerConfig", "EnvInfo", "Actor"):
        assert getattr(wqmix_cli, name).__name__ == name
    with pytest.raises(AttributeError):
        wqmix_cli.__getattr__("NotAThing")


def test_update_returns_the_documented_keys():
    learner, _ = twin_learners()
    out = learner.update(transitions())
    assert {"learning_rate", "loss_qmix", "loss_central", "loss", "predict_q", "w_mean"} <= set(out)
    assert out["learning_rate"] == pytest.approx(5e-4)


@pytest.mark.parametrize("variant", ["cwqmix", "owqmix", "qmix"])
def test_transitions_and_the_same_data_as_one_step_episodes_give_the_same_loss(variant):
    a, b = twin_learners(variant)
    t = transitions()
    episodes = {
        "obs": np.stack([t["obs"], t["obs_next"]], 1), "state": np.stack([t["state"], t["state_next"]], 1),
        "actions": t["actions"][:, None], "rewards": t["rewards"].mean(-1)[:, None],
        "terminated": t["terminals"][:, None], "filled": np.ones((6, 1)),
        "avail_actions": np.ones((6, 2, SMALL_INFO.n_agents, SMALL_INFO.n_actions), dtype=bool),
    }
    assert a.update(t)["loss"] == pytest.approx(b.update(episodes)["loss"], rel=1e-6)


def test_episode_dict_gives_the_same_loss_as_the_runners_batch_on_the_same_weights():
    a, b = twin_learners()
    batch = random_batch(SMALL_INFO, [5, 2, 4])
    first = a.update(as_sample(batch))
    second = b.update(batch)
    assert first == second


def test_per_agent_rewards_are_averaged_into_the_team_reward():
    batch = random_batch(SMALL_INFO, [3, 3])
    sample = as_sample(batch)
    sample["rewards"] = np.repeat(sample["rewards"][..., None], SMALL_INFO.n_agents, -1)
    sample["rewards"][..., 0] += 3.0
    converted = episode_batch_from_sample(sample, SMALL_INFO)
    assert torch.allclose(converted.reward, batch.reward + 1.0)


def test_agent_mask_leaves_a_dead_agent_only_its_taken_action():
    t = transitions()
    t["agent_mask"][0, 1] = 0
    batch = episode_batch_from_sample(t, SMALL_INFO)
    assert batch.avail[0, :, 1].sum(-1).tolist() == [1, 1]
    assert batch.avail[0, 0, 1, t["actions"][0, 1]]
    assert batch.avail[1].all()


BAD = [
    ("obs", lambda s: s.pop("obs"), "sample is missing 'obs' (expected shape [batch, 3, 6])"),
    ("state_next", lambda s: s.pop("state_next"), "sample is missing 'state_next' (expected shape [6, 8])"),
    ("obs shape", lambda s: s.update(obs=s["obs"][:, :, :4]), "sample['obs'] has shape [6, 3, 4]; expected [batch, 3, 6]"),
    ("state shape", lambda s: s.update(state=s["state"][:, :5]), "sample['state'] has shape [6, 5]; expected [6, 8]"),
    ("actions shape", lambda s: s.update(actions=s["actions"][:, :2]), "sample['actions'] has shape [6, 2]"),
    ("actions range", lambda s: s["actions"].__setitem__((0, 0), 9), "outside [0, 3]"),
    ("rewards NaN", lambda s: s["rewards"].__setitem__((0, 0), np.nan), "sample['rewards'] holds NaN or inf"),
    ("obs inf", lambda s: s["obs"].__setitem__((0, 0, 0), np.inf), "sample['obs'] holds NaN or inf"),
    ("mask shape", lambda s: s.update(agent_mask=np.ones((6, 2))), "sample['agent_mask'] has shape [6, 2]"),
]


@pytest.mark.parametrize("name,spoil,message", BAD, ids=[b[0] for b in BAD])
def test_malformed_transition_samples_raise_one_value_error(name, spoil, message):
    learner, _ = twin_learners()
    sample = transitions()
    spoil(sample)
    with pytest.raises(ValueError) as raised:
        learner.update(sample)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_malformed_episode_sample_names_the_key_and_shape():
    learner, _ = twin_learners()
    sample = as_sample(random_batch(SMALL_INFO, [3, 2]))
    sample["avail_actions"] = sample["avail_actions"][:, :-1]
    with pytest.raises(ValueError, match=r"sample\['avail_actions'\] has shape \[2, 3, 3, 4\]; expected \[2, 4, 3, 4\]"):
        learner.update(sample)
    del sample["filled"]
    sample["avail_actions"] = np.ones((2, 4, 3, 4), dtype=bool)
    with pytest.raises(ValueError, match="sample is missing 'filled'"):
        learner.update(sample)


def test_variant_must_match_the_policy():
    with pytest.raises(ValueError, match="allowed: cwqmix, owqmix, qmix"):
        WQMIXLearner(small_policy(), LearnerConfig(), "wqmix")
    with pytest.raises(ValueError, match="central=False"):
        WQMIXLearner(small_policy(central=True), LearnerConfig(), "qmix")


@pytest.mark.parametrize("schedule,expected_end", [("linear", 1e-4), ("cosine", 1e-4), ("constant", 1e-3)])
def test_lr_schedules(schedule, expected_end):
    from wqmix_cli.learner import make_lr_schedule

    policy = small_policy()
    cfg = LearnerConfig(hidden_dim=16, lr=1e-3, lr_min=1e-4, lr_schedule=schedule)
    learner = WQMIXLearner(policy, cfg, "cwqmix", 0.1)
    learner.scheduler = make_lr_schedule(learner.optimizer, cfg, total_updates=4)
    batch = random_batch(SMALL_INFO, [2, 2])
    rates = [learner.update(batch)["learning_rate"] for _ in range(6)]
    assert rates[0] == pytest.approx(1e-3)
    assert rates[-1] == pytest.approx(expected_end)
    if schedule == "linear":
        assert rates[2] == pytest.approx(1e-3 - 2 * (1e-3 - 1e-4) / 4)
    if schedule == "cosine":
        assert rates[2] == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4))


def test_save_and_load_restore_networks_optimiser_and_counter(tmp_path):
    learner, _ = twin_learners()
    learner.model_dir = tmp_path
    batch = random_batch(SMALL_INFO, [3, 3])
    learner.update(batch)
    path = learner.save()
    assert path == tmp_path / "learner.pt"
    fresh, _ = twin_learners()
    fresh.load(path)
    assert fresh.updates == 1
    assert learner.update(batch) == fresh.update(batch)


def test_from_config_takes_variant_and_alpha_from_the_config():
    config = Config()
    config.agent.name, config.agent.w = "owqmix", 0.3
    learner = WQMIXLearner.from_config(config, small_policy(), gamma=0.5, sync_frequency=7)
    assert (learner.variant, learner.w, learner.gamma, learner.sync_frequency) == ("owqmix", 0.3, 0.5, 7)
    parts = wqmix_loss(learner.policy, random_batch(SMALL_INFO, [3]), "owqmix", 0.3, 0.5)
    assert torch.all(torch.isclose(parts.weights, torch.tensor(0.3)) | (parts.weights == 1.0))


@pytest.mark.slow
def test_custom_loop_example_reaches_the_matrix_games_optimum(monkeypatch, capsys):
    path = Path(__file__).resolve().parent.parent / "examples" / "custom_loop.py"
    monkeypatch.setattr(sys, "argv", [str(path)])
    module = runpy.run_path(str(path), run_name="example")
    assert module["main"](steps=3000, seed=0) == 8.0
    assert "greedy joint action (0, 0) -> return 8.0" in capsys.readouterr().out
