"""End to end: `wqmix train` writes the run layout, the design's scalars, and loadable checkpoints."""
import dataclasses

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from wqmix_cli.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from wqmix_cli.cli import main
from wqmix_cli.config import validate
from wqmix_cli.policy import WQMIXPolicy

TINY = ["env.n_envs=1", "env.workers=0", "t_max=600", "test_interval=200", "test_episodes=2", "log_interval=100", "save_interval=300",
        "learner.batch_size=4", "learner.target_update_interval=5", "epsilon.anneal_time=300"]
TAGS = {"train/return_mean", "train/epsilon", "test/return_mean", "loss/total", "loss/qmix", "loss/central",
        "train/w_mean", "q/q_tot_mean", "q/target_mean", "train/grad_norm", "perf/env_steps_per_s", "train/lr"}


def scalars(run_dir) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("run")
    assert main(["train", *TINY, f"hydra.run.dir={path}"]) == 0
    return path


def test_run_writes_the_output_layout(run_dir):
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "train.log").read_text().count("test return") >= 3
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "600"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["300", "600", "latest"]
    saved = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert saved["t_max"] == 600 and saved["agent"]["name"] == "cwqmix"


def test_tensorboard_holds_the_design_tags_against_env_steps(run_dir):
    acc = scalars(run_dir)
    assert TAGS <= set(acc.Tags()["scalars"])
    steps = [e.step for e in acc.Scalars("train/epsilon")]
    assert steps == sorted(steps) and steps[-1] <= 600 and steps[0] >= 100
    eps = [e.value for e in acc.Scalars("train/epsilon")]
    assert eps[0] > eps[-1] >= 0.05
    assert len(acc.Scalars("test/return_mean")) == 3


def test_checkpoint_holds_every_network_and_loads_into_a_fresh_policy(run_dir):
    state, _ = load_checkpoint(latest_checkpoint(run_dir))
    names = {k.split(".")[0] for k in state["policy"]}
    assert names == {"agent", "mixer", "central_agent", "central_mixer", "target_central_agent", "target_central_mixer"}
    assert state["counters"]["t_env"] == 600 and state["learner"]["updates"] > 0
    assert {"python", "numpy", "torch"} <= set(state["rng"]) and "optimizer" in state["learner"]
    cfg = validate(state["config"])
    from wqmix_cli.envs.base import EnvInfo

    policy = WQMIXPolicy(EnvInfo(**state["env_info"]), cfg.learner, central=True)
    policy.load_state_dict(state["policy"])
    for key, value in policy.state_dict().items():
        assert torch.equal(value, state["policy"][key])


def test_saved_policy_gives_equal_outputs_after_reload(tmp_path):
    from conftest import SMALL_INFO, random_batch, small_policy

    from wqmix_cli.learner import wqmix_loss

    policy = small_policy()
    batch = random_batch(SMALL_INFO, [4, 2])
    save_checkpoint(tmp_path, 7, {"policy": policy.state_dict()})
    fresh = small_policy()
    fresh.load_state_dict(load_checkpoint(latest_checkpoint(tmp_path))[0]["policy"])
    a = wqmix_loss(policy, batch, "cwqmix", 0.1, 0.99)
    b = wqmix_loss(fresh, batch, "cwqmix", 0.1, 0.99)
    assert a.total.item() == b.total.item()


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        ["agent=owqmix", "learner.recurrent=false", "seed=3"],
        ["agent=qmix", "env.scenario=simple_speaker_listener"],
        ["env.scenario=simple_reference", "env.n_envs=3", "env.workers=1"],
    ],
)
def test_variants_and_scenarios_train(tmp_path, overrides):
    assert main(["train", *TINY, "t_max=300", *overrides, f"hydra.run.dir={tmp_path}"]) == 0
    acc = scalars(tmp_path)
    losses = [e.value for e in acc.Scalars("loss/total")]
    assert losses and all(v == v for v in losses)


def test_config_defaults_in_conf_match_the_schema():
    from wqmix_cli.cli import compose
    from wqmix_cli.config import Config, MPEConfig

    cfg = validate(compose([]))
    assert dataclasses.asdict(cfg) == dataclasses.asdict(Config(env=MPEConfig()))


@pytest.mark.slow
def test_smax_run_logs_battle_won(tmp_path):
    pytest.importorskip("wqmix_cli.envs.smax")  # through its quiet import: jaxmarl resets sys.stdout/stderr
    overrides = ["env=smax", "env.n_envs=4", "t_max=400", "test_interval=200", "test_episodes=4",
                 "log_interval=100", "learner.batch_size=4"]
    assert main(["train", *overrides, f"hydra.run.dir={tmp_path}"]) == 0
    won = [e.value for e in scalars(tmp_path).Scalars("test/battle_won_mean")]
    assert len(won) >= 2 and all(0.0 <= v <= 1.0 for v in won)


def test_learning_in_the_background_changes_nothing_but_the_speed(tmp_path):
    """overlap=true runs the owed updates in a thread during collection; the weights and
    every logged loss equal those of overlap=false (deterministic=true: one thread count for
    every update, as bit-for-bit repeats need)."""
    runs = {}
    for overlap in ("true", "false"):
        path = tmp_path / overlap
        overrides = [*TINY, "test_interval=300", "env.n_envs=2", f"overlap={overlap}", "deterministic=true",
                     f"hydra.run.dir={path}"]
        assert main(["train", *overrides]) == 0
        runs[overlap] = path
    acc = {k: scalars(p) for k, p in runs.items()}
    losses = {k: [(e.step, e.value) for e in a.Scalars("loss/total")] for k, a in acc.items()}
    assert losses["true"] == losses["false"] and len(losses["true"]) >= 3
    states = {k: load_checkpoint(latest_checkpoint(p))[0] for k, p in runs.items()}
    assert states["true"]["learner"]["updates"] == states["false"]["learner"]["updates"] > 0
    for name, weight in states["true"]["policy"].items():
        torch.testing.assert_close(weight, states["false"]["policy"][name], rtol=0, atol=0)


def test_worker_processes_collect_what_this_process_would(tmp_path):
    """env.workers=2 runs the episode loop of one and of two envs in two processes; the
    episodes, so every logged loss and the final weights, are those of env.workers=0."""
    runs = {}
    for workers in ("0", "2"):
        runs[workers] = tmp_path / workers
        overrides = [*TINY, "test_interval=300", "env.n_envs=3", f"env.workers={workers}",
                     "deterministic=true", f"hydra.run.dir={runs[workers]}"]
        assert main(["train", *overrides]) == 0
    losses = {k: [(e.step, e.value) for e in scalars(p).Scalars("loss/total")] for k, p in runs.items()}
    assert losses["0"] == losses["2"] and len(losses["0"]) >= 2
    states = {k: load_checkpoint(latest_checkpoint(p))[0] for k, p in runs.items()}
    assert torch.equal(states["0"]["actor_rng"], states["2"]["actor_rng"])
    for name, weight in states["0"]["policy"].items():
        torch.testing.assert_close(weight, states["2"]["policy"][name], rtol=0, atol=0)


@pytest.mark.parametrize("deterministic, expected", [("false", {3}), ("true", {1})])
def test_updates_use_learner_threads_while_no_episode_is_collected(
    tmp_path, monkeypatch, deterministic: str, expected: set[int]
):
    """overlap=false: every update runs between collections, on learner_threads (unless
    deterministic=true); the actor keeps `threads` either way."""
    from wqmix_cli.actor import Actor
    from wqmix_cli.learner import WQMIXLearner

    seen: dict[str, set[int]] = {"update": set(), "act": set()}

    def spy(method, key):
        def wrapped(*args, **kwargs):
            seen[key].add(torch.get_num_threads())
            return method(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(WQMIXLearner, "update", spy(WQMIXLearner.update, "update"))
    monkeypatch.setattr(Actor, "act", spy(Actor.act, "act"))
    overrides = [*TINY, "t_max=300", "overlap=false", "threads=1", "learner_threads=3",
                 f"deterministic={deterministic}", f"hydra.run.dir={tmp_path}"]
    assert main(["train", *overrides]) == 0
    assert seen == {"update": expected, "act": {1}}
    assert torch.get_num_threads() == 1


def test_the_actor_acts_with_the_weights_of_the_last_boundary():
    """A frozen actor keeps its copy while the learner changes the policy, until sync()."""
    from wqmix_cli.actor import Actor
    from wqmix_cli.config import LearnerConfig
    from wqmix_cli.envs.base import EnvInfo

    info = EnvInfo(n_agents=2, obs_dim=3, state_dim=4, n_actions=3, episode_limit=5)
    policy = WQMIXPolicy(info, LearnerConfig(hidden_dim=8), central=False)
    actor = Actor(policy, torch.device("cpu"), frozen=True)
    before = [p.clone() for p in actor.agent.parameters()]
    with torch.no_grad():
        for p in policy.agent.parameters():
            p.add_(1.0)
    assert all(torch.equal(a, b) for a, b in zip(actor.agent.parameters(), before))
    actor.sync()
    assert all(torch.equal(a, b) for a, b in zip(actor.agent.parameters(), policy.agent.parameters()))


def test_each_run_sets_deterministic_algorithms_its_own_way(tmp_path):
    """A sweep's jobs run one after another in one process: a deterministic=false job after a
    deterministic=true one runs without torch's deterministic algorithms."""
    try:
        for flag in ("true", "false"):
            overrides = [*TINY, "t_max=100", "test_episodes=0", f"deterministic={flag}", f"hydra.run.dir={tmp_path / flag}"]
            assert main(["train", *overrides]) == 0
            assert torch.are_deterministic_algorithms_enabled() == (flag == "true")
    finally:
        torch.use_deterministic_algorithms(False)


def test_a_buffer_larger_than_the_machines_memory_is_one_line(capsys, tmp_path):
    """Found once the env's sizes are known, before any memory is taken for it. (Here, after
    this module's runs: under pytest, a session whose first Hydra job fails inside the job,
    with jaxmarl imported by another test module, loses pytest's own stderr.)"""
    assert main(["train", "learner.buffer_size=1000000000", "env.workers=0", f"hydra.run.dir={tmp_path}/run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        "wqmix: learner.buffer_size=1000000000: that many mpe episodes take 11040.8 GiB, more than this machine's "
    )
