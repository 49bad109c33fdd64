"""Bad input: one line on stderr naming what was wrong and what is allowed, exit 2, no traceback."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from wqmix_cli.cli import main

BAD = [
    (["env=foo"], "allowed: matrix, mpe, predator_prey, smac, smax"),
    (["agent=cwqmixx"], "allowed: cwqmix, owqmix, qmix"),
    (["learner=huge"], "unknown learner 'huge'"),
    (["env.scenario=simple_tag"], "env.scenario='simple_tag' is not known; allowed: simple_spread"),
    (["t_max=-5"], "t_max=-5 must be positive"),
    (["learner.batch_size=6000"], "larger than learner.buffer_size=5000"),
    (["learner.bsize=3"], "did you mean learner.batch_size?"),
    (["lerner.lr=3"], "did you mean learner?"),
    (["logger.wandbb=true"], "did you mean logger.wandb?"),
    (["learner.gamma=1.5"], "learner.gamma=1.5 must be in (0, 1]"),
    (["learner.gamma=0"], "learner.gamma=0.0 must be in (0, 1]"),
    (["agent.w=0"], "agent.w=0.0 must be in (0, 1]"),
    (["agent.w=1.5"], "agent.w=1.5 must be in (0, 1]"),
    (["epsilon.start=2"], "epsilon.start=2.0 must be in [0, 1]"),
    (["epsilon.finish=-0.1"], "epsilon.finish=-0.1 must be in [0, 1]"),
    (["device=tpu"], "allowed: cpu, cuda, auto"),
    (["seed=abc"], "seed='abc' has the wrong type; expected int"),
    (["learner.recurrent=maybe"], "expected bool"),
    (["learner.buffer_size=-1"], "learner.buffer_size=-1 must be positive"),
    (["env.n_envs=0"], "env.n_envs=0 must be positive"),
    (["learner.optimizer=sgd"], "allowed: rmsprop, adam"),
    (["env=matrix", "env.payoff=[[1,2],[3]]"], "square list of lists"),
    (["env=matrix", "env.payoff=[]"], "square list of lists"),
    (["env=smax", "env.scenario=x"], "unknown key 'env.scenario'"),
    (["resume=/nonexistent/run"], "resume=/nonexistent/run: no such folder"),
    (["test_episodes=-1"], "test_episodes=-1 must be >= 0"),
    (["learner_threads=-2"], "learner_threads=-2 must be >= 0 (0: all the CPU cores)"),
    (["seed=-1"], "seed=-1 must be in [0, 4294967295] (numpy's seed range)"),
    (["seed=4294967296"], "seed=4294967296 must be in [0, 4294967295]"),
    (["env.max_cycles=0"], "env.max_cycles=0 must be positive"),
    (["env.n_agents=0"], "env.n_agents=0 must be positive"),
    (["env.local_ratio=1.5"], "env.local_ratio=1.5 must be in [0, 1]"),
    (["hydra/launcher=nope"], "unknown hydra/launcher 'nope'; allowed: basic, joblib"),
]


@pytest.mark.parametrize("overrides,expected", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_input_is_one_line_and_exit_2(overrides, expected, capsys):
    assert main(["train", *overrides]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("wqmix: ")
    assert expected in err


def test_bad_value_in_a_later_sweep_job_stops_the_sweep_before_it_starts(capsys, tmp_path):
    assert main(["train", "-m", "agent=cwqmix,nope", f"hydra.sweep.dir={tmp_path}/s"]) == 2
    assert "unknown agent 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_resume_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["train", f"resume={tmp_path}"]) == 2
    assert "not a wqmix run folder" in capsys.readouterr().err


def test_unknown_command(capsys):
    assert main(["fly"]) == 2
    assert "allowed: train, evaluate, plot" in capsys.readouterr().err


def test_the_installed_command_prints_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "wqmix_cli", "train", "env=foo"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "wqmix: unknown env 'foo'; allowed: matrix, mpe, predator_prey, smac, smax"
    ]
    assert "Traceback" not in proc.stdout + proc.stderr


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    assert "train" in capsys.readouterr().out


def test_unknown_smax_map_lists_the_known_ones(capsys):
    pytest.importorskip("wqmix_cli.envs.smax")  # through its quiet import: jaxmarl resets sys.stdout/stderr
    assert main(["train", "env=smax", "env.map_name=4m"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "env.map_name='4m' is not a SMAX map; allowed:" in err and "3s5z" in err


def test_smax_jax_device_is_checked_against_what_jax_sees(capsys):
    smax = pytest.importorskip("wqmix_cli.envs.smax")
    assert main(["train", "env=smax", "env.jax_device=tpu"]) == 2
    assert capsys.readouterr().err == "wqmix: env.jax_device='tpu' is not known; allowed: cpu, gpu\n"
    if "gpu" in smax.jax_platforms():
        pytest.skip("this jax sees a GPU: env.jax_device=gpu is allowed here")
    assert main(["train", "env=smax", "env.jax_device=gpu"]) == 2
    assert capsys.readouterr().err == (
        "wqmix: env.jax_device='gpu', but this jax has no such device; allowed here: cpu\n"
    )


@pytest.mark.slow
def test_a_wheel_install_carries_every_config(tmp_path):
    """`pip install .` (not -e) must ship ``conf/``: the wheel holds it as ``wqmix_cli/conf``."""
    root = Path(__file__).resolve().parent.parent
    source = tmp_path / "source"  # a copy: a stale build/ in the checkout would hide a missing file
    shutil.copytree(root, source, ignore=shutil.ignore_patterns(".*", "build", "*.egg-info", "docs", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(source)],
                   check=True, capture_output=True)
    (wheel,) = tmp_path.glob("wqmix-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"wqmix_cli/conf/{p.relative_to(root / 'conf').as_posix()}" for p in (root / "conf").rglob("*.yaml")}
    assert len(configs) >= 10
    assert configs <= shipped
