"""The benchmark's per-timestep reference update computes the same loss as ours."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from conftest import SMALL_INFO, random_batch

from wqmix_cli.config import LearnerConfig

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "benchmark.py"


@pytest.fixture(scope="module")
def bench():
    """The script as a module; one torch thread (tiny ops gain nothing from two, and on a
    busy machine they wait for each other)."""
    spec = importlib.util.spec_from_file_location("wqmix_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield module
    torch.set_num_threads(threads)
    del sys.modules[spec.name]


@pytest.mark.parametrize("pymarl", [True, False])
@pytest.mark.parametrize("variant", ["cwqmix", "owqmix", "qmix"])
def test_reference_update_gives_our_loss(bench, variant: str, pymarl: bool) -> None:
    cfg = LearnerConfig(hidden_dim=16, mixer_embed_dim=8, hypernet_dim=16, central_mixer_dim=32)
    ours, reference = bench.paired_learners(SMALL_INFO, variant, torch.device("cpu"), cfg, pymarl=pymarl)
    batch = random_batch(SMALL_INFO, lengths=[10, 7, 3, 10], seed=3)
    # Two updates: the second loss also depends on the gradients, the clip and the RMSprop step.
    pairs = bench.compare_losses(ours, reference, batch)
    for our_loss, reference_loss in pairs:
        assert bench.losses_match(our_loss, reference_loss), pairs
    assert pairs[0][0] != pairs[1][0]


def test_pymarl_reference_unrolls_four_networks_for_the_central_variants(bench) -> None:
    """pymarl's WQMIX learner also unrolls the target QMIX agent, which its loss never reads."""
    policy = bench.WQMIXPolicy(SMALL_INFO, LearnerConfig(hidden_dim=8), central=True)
    pymarl = bench.ReferenceLearner(policy, LearnerConfig(), "cwqmix", w=0.1, pymarl=True)
    same_work = bench.ReferenceLearner(policy, LearnerConfig(), "cwqmix", w=0.1, pymarl=False)
    count = lambda ref: sum(isinstance(m, bench.StepwiseAgent) for m in vars(ref).values())  # noqa: E731
    assert (count(pymarl), count(same_work)) == (4, 3)


def test_reference_agent_steps_through_our_agents_inputs_and_weights(bench) -> None:
    """The per-step loop (inputs built at each t) gives the agent's whole-sequence output."""
    from wqmix_cli.policy import RNNAgent

    agent = RNNAgent(SMALL_INFO.obs_dim + SMALL_INFO.n_actions + SMALL_INFO.n_agents, SMALL_INFO.n_actions, 8)
    batch = random_batch(SMALL_INFO, lengths=[10, 7], seed=1)
    last_actions = torch.cat([torch.full_like(batch.actions[:, :1], -1), batch.actions], dim=1)
    policy = bench.WQMIXPolicy(SMALL_INFO, LearnerConfig(hidden_dim=8), central=False)
    expected, _ = agent(policy.agent_inputs(batch.obs, last_actions))
    onehot = torch.nn.functional.one_hot(batch.actions, SMALL_INFO.n_actions).float()
    torch.testing.assert_close(bench.unroll(bench.StepwiseAgent(agent), batch, onehot), expected)


def test_a_mismatch_is_caught(bench) -> None:
    assert bench.losses_match(1.0, 1.0 + 5e-6)
    assert not bench.losses_match(1.0, 1.0 + 5e-5)


def test_profile_prints_the_update_ops(bench, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--profile", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "aten::bmm" in out and "Self CPU time total" in out
    kernel = bench.native.gru_kernel() is not None
    assert ("_FusedGRUBackward" in out) == kernel
    assert ("count as the self time of _FusedGRU" in out) == kernel


def test_end_to_end_runs_to_its_steps_and_times_only_the_steady_state(bench) -> None:
    """train() runs to ``steps``; the rate counts only the logged intervals from the first
    one that carries a loss (t_env 500 here) on."""
    overrides = ["env.n_envs=2", "env.workers=0", "learner.batch_size=4", "learner.hidden_dim=16",
                 "learner.central_mixer_dim=32", "test_episodes=2"]
    row = bench.bench_train("mpe", overrides, budget_s=120.0, steps=1500)
    assert row["t_env"] == 1500
    assert row["steady_steps"] == 1000 and row["steps_per_s"] > 0
