"""On a CUDA device (skipped where none is visible): the learner on the GPU (each agent's
``nn.GRU``, cuDNN) follows the CPU's (fused GRU kernel) update for update, and a run trained
with device=cuda resumes on the GPU and evaluates on the CPU."""
import copy

import pytest
import torch
from conftest import SMALL_INFO, random_batch, small_policy

from wqmix_cli.checkpoint import latest_checkpoint, load_checkpoint
from wqmix_cli.cli import main
from wqmix_cli.config import LearnerConfig
from wqmix_cli.learner import WQMIXLearner

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device is visible")

TINY = ["env.n_envs=2", "env.workers=0", "test_interval=150", "test_episodes=2", "log_interval=100",
        "save_interval=150", "learner.batch_size=4", "learner.target_update_interval=5", "epsilon.anneal_time=300"]


@pytest.fixture(autouse=True)
def _exact_float32():
    """cuDNN's RNNs may use TF32 by default; the comparison with the CPU needs float32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("variant", ["cwqmix", "owqmix", "qmix"])
@pytest.mark.parametrize("recurrent", [True, False])
def test_updates_on_cuda_follow_the_cpu(variant: str, recurrent: bool):
    cfg = LearnerConfig(recurrent=recurrent, hidden_dim=16, mixer_embed_dim=8, hypernet_dim=16,
                        central_mixer_dim=32, target_update_interval=2)
    cpu_policy = small_policy(central=variant != "qmix", recurrent=recurrent)
    gpu_policy = copy.deepcopy(cpu_policy).cuda()
    learners = [WQMIXLearner(p, cfg, variant=variant, w=0.1, device=d) for p, d in ((cpu_policy, "cpu"), (gpu_policy, "cuda"))]
    for seed in range(4):  # a target sync falls inside: updates 2 and 4
        batch = random_batch(SMALL_INFO, [10, 7, 3, 10], seed=seed)
        cpu_stats, gpu_stats = (learner.update(batch) for learner in learners)
        assert gpu_stats["loss"] == pytest.approx(cpu_stats["loss"], rel=1e-4, abs=1e-5)
    gpu_weights = gpu_policy.state_dict()
    for name, weight in cpu_policy.state_dict().items():
        assert gpu_weights[name].is_cuda
        torch.testing.assert_close(gpu_weights[name].cpu(), weight, rtol=1e-3, atol=1e-4)


def test_a_cuda_run_resumes_on_the_gpu_and_evaluates_on_the_cpu(tmp_path):
    run = tmp_path / "run"
    assert main(["train", *TINY, "device=cuda", "t_max=150", "checkpoint.save_buffer=true",
                 f"hydra.run.dir={run}"]) == 0
    assert main(["train", f"resume={run}", "t_max=300"]) == 0
    state, _ = load_checkpoint(latest_checkpoint(run))
    assert state["counters"]["t_env"] == 300 and state["learner"]["updates"] > 0
    assert all(t.device.type == "cpu" for t in state["policy"].values())
    assert main(["evaluate", f"checkpoint={run}", "device=cpu", "episodes=2"]) == 0
