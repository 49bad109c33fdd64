"""CPU thread defaults: a job's share of the cores when a launcher runs jobs side by side."""
import pytest

from wqmix_cli.cpu import available_cores, default_threads, job_cores, parallel_jobs

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


@pytest.mark.parametrize("launcher, jobs", [
    ({"_target_": JOBLIB, "n_jobs": 3}, 3),
    ({"_target_": JOBLIB, "n_jobs": -1}, available_cores()),
    ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, 1),
    ({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"}, 1),
], ids=["joblib-3", "joblib-all", "basic", "slurm"])
def test_parallel_jobs(launcher: dict, jobs: int) -> None:
    assert parallel_jobs(launcher) == jobs


def test_a_job_gets_its_share_and_half_of_it_for_collection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("wqmix_cli.cpu.available_cores", lambda: 16)
    assert (job_cores(), default_threads()) == (16, 8)
    assert (job_cores(4), default_threads(4)) == (4, 2)
    assert (job_cores(32), default_threads(32)) == (1, 1)
