"""On a CUDA device (skipped where none is visible): the learner on the GPU (each agent's
``nn.GRU``, cuDNN, each update replayed as a CUDA graph) follows the CPU's (fused GRU
kernel) update for update, and a run trained with device=cuda resumes on the GPU and
evaluates on the CPU."""
import copy
import dataclasses

import pytest
import torch
from conftest import SMALL_INFO, random_batch, small_policy

from wqmix_cli.checkpoint import latest_checkpoint, load_checkpoint
from wqmix_cli.cli import main
from wqmix_cli.config import LearnerConfig
from wqmix_cli.cuda_graph import WARMUP_STEPS
from wqmix_cli.learner import WQMIXLearner

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device is visible")

TINY = ["env.n_envs=2", "env.workers=0", "test_interval=150", "test_episodes=2", "log_interval=100",
        "save_interval=150", "learner.batch_size=4", "learner.target_update_interval=5", "epsilon.anneal_time=300"]
UPDATES = WARMUP_STEPS + 5  # eager steps, the capture, then replays
LENGTHS = ([10, 7, 3, 10], [6, 4, 2, 5])  # the second pads to the episode limit, 10


@pytest.fixture(autouse=True)
def _exact_float32():
    """cuDNN's RNNs may use TF32 by default; the comparison with the CPU needs float32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _learner_pair(variant: str, recurrent: bool, optimizer: str = "rmsprop", graph: bool = True):
    cfg = LearnerConfig(recurrent=recurrent, hidden_dim=16, mixer_embed_dim=8, hypernet_dim=16,
                        central_mixer_dim=32, target_update_interval=2, optimizer=optimizer)
    cpu_policy = small_policy(central=variant != "qmix", recurrent=recurrent)
    gpu_policy = copy.deepcopy(cpu_policy).cuda()
    cpu = WQMIXLearner(cpu_policy, cfg, variant=variant, w=0.1)
    gpu = WQMIXLearner(gpu_policy, dataclasses.replace(cfg, cuda_graph=graph), variant=variant, w=0.1, device="cuda")
    return cpu, gpu


@pytest.mark.parametrize("variant, recurrent, optimizer", [
    ("cwqmix", True, "rmsprop"), ("owqmix", True, "adam"), ("qmix", True, "rmsprop"), ("cwqmix", False, "rmsprop"),
])
def test_graphed_updates_on_cuda_follow_the_cpu(variant: str, recurrent: bool, optimizer: str):
    cpu, gpu = _learner_pair(variant, recurrent, optimizer)
    for update in range(UPDATES):  # target syncs every second update
        batch = random_batch(SMALL_INFO, LENGTHS[update % 2], seed=update)
        cpu_stats, gpu_stats = cpu.update(batch), gpu.update(batch)
        for key, value in cpu_stats.items():
            assert gpu_stats[key] == pytest.approx(value, rel=1e-4, abs=1e-5), (update, key)
    assert gpu.cuda_graphs == 1
    gpu_weights = gpu.policy.state_dict()
    for name, weight in cpu.policy.state_dict().items():
        assert gpu_weights[name].is_cuda
        torch.testing.assert_close(gpu_weights[name].cpu(), weight, rtol=1e-3, atol=1e-4)


def test_eager_updates_on_cuda_follow_the_cpu():
    cpu, gpu = _learner_pair("cwqmix", True, graph=False)
    for update in range(4):
        batch = random_batch(SMALL_INFO, LENGTHS[update % 2], seed=update)
        assert gpu.update(batch)["loss"] == pytest.approx(cpu.update(batch)["loss"], rel=1e-4, abs=1e-5)
    assert not gpu.uses_cuda_graph and gpu.cuda_graphs == 0


def test_a_nan_loss_in_a_replayed_update_stops_with_a_message():
    _, gpu = _learner_pair("cwqmix", True)
    for update in range(UPDATES):
        gpu.update(random_batch(SMALL_INFO, LENGTHS[0], seed=update))
    assert gpu.cuda_graphs == 1
    batch = random_batch(SMALL_INFO, LENGTHS[0])
    batch.reward[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=f"update {UPDATES + 1}"):
        gpu.update(batch)


@pytest.mark.parametrize("extra", [[], ["learner.lr_schedule=linear", "learner.optimizer=adam"]])
def test_a_cuda_run_resumes_on_the_gpu_and_evaluates_on_the_cpu(tmp_path, extra):
    run = tmp_path / "run"
    assert main(["train", *TINY, *extra, "device=cuda", "t_max=150", "checkpoint.save_buffer=true",
                 f"hydra.run.dir={run}"]) == 0
    assert main(["train", f"resume={run}", "t_max=300"]) == 0
    state, _ = load_checkpoint(latest_checkpoint(run))
    assert state["counters"]["t_env"] == 300 and state["learner"]["updates"] > WARMUP_STEPS
    assert all(t.device.type == "cpu" and t.isfinite().all() for t in state["policy"].values())
    assert main(["evaluate", f"checkpoint={run}", "device=cpu", "episodes=2"]) == 0


def test_deterministic_cuda_runs_repeat_bit_for_bit(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    losses = []
    for name in ("first", "second"):
        run = tmp_path / name
        assert main(["train", *TINY, "device=cuda", "deterministic=true", "t_max=300", f"hydra.run.dir={run}"]) == 0
        events = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
        events.Reload()
        losses.append([(e.step, e.value) for e in events.Scalars("loss/total")])
    assert losses[0] == losses[1] and len(losses[0]) >= 2
