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


@pytest.mark.parametrize("variant", ["cwqmix", "owqmix", "qmix"])
def test_reference_update_gives_our_loss(bench, variant: str) -> None:
    cfg = LearnerConfig(hidden_dim=16, mixer_embed_dim=8, hypernet_dim=16, central_mixer_dim=32)
    ours, reference = bench.paired_learners(SMALL_INFO, variant, torch.device("cpu"), cfg)
    batch = random_batch(SMALL_INFO, lengths=[10, 7, 3, 10], seed=3)
    # Two updates: the second loss also depends on the gradients, the clip and the RMSprop step.
    pairs = bench.compare_losses(ours, reference, batch)
    for our_loss, reference_loss in pairs:
        assert bench.losses_match(our_loss, reference_loss), pairs
    assert pairs[0][0] != pairs[1][0]


def test_reference_agent_holds_the_gru_weights(bench) -> None:
    from wqmix_cli.policy import RNNAgent

    agent = RNNAgent(input_dim=5, n_actions=3, hidden_dim=8)
    inputs = torch.randn(2, 6, 4, 5)
    expected, _ = agent(inputs)
    stepwise = bench.StepwiseAgent(agent)
    steps = [inputs[:, t].reshape(8, 5) for t in range(6)]
    torch.testing.assert_close(stepwise.unroll(steps, batch_size=2, n_agents=4), expected)


def test_a_mismatch_is_caught(bench) -> None:
    assert bench.losses_match(1.0, 1.0 + 5e-6)
    assert not bench.losses_match(1.0, 1.0 + 5e-5)
