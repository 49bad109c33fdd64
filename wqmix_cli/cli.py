"""``wqmix <command> [overrides]``: train | evaluate | plot.

Everything after ``train`` is Hydra's (overrides, ``-m``, ``--help``). Every job's
configuration is composed and checked here first, so a mistake costs one line and exit
code 2 before any run starts, a sweep's last job included.
"""
from __future__ import annotations

import difflib
import itertools
import sys
from collections.abc import Callable
from pathlib import Path

EXIT_BAD_INPUT = 2


def _conf_dir() -> Path:
    """``conf/`` inside an installed wheel (``wqmix_cli/conf``), else beside the package in a checkout."""
    package = Path(__file__).resolve().parent
    installed = package / "conf"
    return installed if installed.is_dir() else package.parent / "conf"


CONF_DIR = _conf_dir()
GROUPS = ("env", "agent", "learner")
USAGE = """usage: wqmix <command> [overrides]

commands:
  train      train a team (Hydra overrides; -m for a sweep; `wqmix train --help`)
  evaluate   greedy episodes from a checkpoint (checkpoint=PATH episodes=N render=true)
  plot       learning curves of runs (wqmix plot DIR... --metric TAG --out PNG)
"""
_HYDRA_FLAGS = {"-m", "--multirun", "--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c",
                "--resolve", "--package", "-p", "--run", "-r", "--shell-completion", "-sc"}


def fail(message: str) -> int:
    print(f"wqmix: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def split_args(args: list[str]) -> tuple[list[str], list[str]]:
    """(Hydra's own flags, overrides)."""
    flags, overrides = [], []
    takes_value = {"--cfg", "-c", "--package", "-p", "--info", "-i", "--config-name", "-cn",
                   "--config-path", "-cp", "--config-dir", "-cd"}
    it = iter(args)
    for arg in it:
        if arg in _HYDRA_FLAGS or arg in takes_value or arg.startswith("--"):
            flags.append(arg)
            if arg in takes_value and arg not in {"--info", "-i"}:
                flags.append(next(it, ""))
        else:
            overrides.append(arg)
    return flags, overrides


def expand_sweeps(overrides: list[str]) -> list[list[str]]:
    """Every job's overrides of a ``-m`` sweep (the cartesian product of swept values)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = []
    for ov in parsed:
        key = ov.get_key_element()
        if ov.is_sweep_override():
            choices.append([f"{key}={v}" for v in ov.sweep_string_iterator()])
        else:
            choices.append([f"{key}={ov.get_value_element_as_str()}" if not ov.is_delete() else f"~{key}"])
    return [list(combo) for combo in itertools.product(*choices)]


def check_override_keys(overrides: list[str]) -> str | None:
    """A one-line complaint about an unknown group option or key, else None."""
    from wqmix_cli import config as schema

    values = dict(o.split("=", 1) for o in overrides if "=" in o and not o.startswith(("~", "+")))
    for group in GROUPS:
        if group in values and values[group] not in group_options(group):
            return f"unknown {group} '{values[group]}'; allowed: {', '.join(group_options(group))}"
    env_cls = schema.ENV_SCHEMAS.get(values.get("env", "mpe"), schema.MPEConfig)
    sections = {"env": env_cls, "agent": schema.AgentConfig, "learner": schema.LearnerConfig,
                "epsilon": schema.EpsilonConfig, "checkpoint": schema.CheckpointConfig, "logger": schema.LoggerConfig}
    top = [f for f in schema.Config.__dataclass_fields__ if f not in sections] + list(sections)
    for key in values:
        if key.startswith("hydra") or key in GROUPS:
            continue
        head, _, rest = key.partition(".")
        if head not in top:
            close = difflib.get_close_matches(head, top, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            return f"unknown key '{key}'{hint}; allowed top-level keys: {', '.join(top)}"
        if rest and head in sections:
            fields = list(sections[head].__dataclass_fields__)
            name = rest.split(".")[0]
            if name not in fields and not (head == "env" and name == "capability_config"):
                close = difflib.get_close_matches(name, fields, n=1)
                hint = f" (did you mean {head}.{close[0]}?)" if close else ""
                return f"unknown key '{key}'{hint}; allowed in {head}: {', '.join(fields)}"
    return None


def check_hydra_groups(overrides: list[str]) -> str | None:
    """A one-line complaint about an unknown Hydra plugin (``hydra/launcher=...``,
    ``hydra/sweeper=...``), else None; ``compose`` leaves Hydra's own settings out."""
    chosen = [o for o in overrides if o.startswith("hydra/")]
    if not chosen:
        return None
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import MissingConfigException

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            hydra_compose("config", overrides=chosen, return_hydra_config=True)
    except MissingConfigException as err:
        group, _, name = err.missing_cfg_file.rpartition("/")
        return f"unknown {group} '{name}'; allowed: {', '.join(err.options or [])}"
    return None


def compose(overrides: list[str]):
    """The composed DictConfig for one job's overrides (Hydra's compose API)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=[o for o in overrides if not o.startswith("hydra")])


def resume_overrides(overrides: list[str]) -> list[str] | str:
    """With ``resume=RUN_DIR``: the run's own overrides, then these, in the same folder.

    Returns the new override list, or a one-line complaint.
    """
    import yaml

    values = dict(o.split("=", 1) for o in overrides if "=" in o)
    run = values.get("resume")
    if not run or run == "null":
        return overrides
    run_dir = Path(run)
    if not run_dir.is_dir():
        return f"resume={run}: no such folder"
    previous = run_dir / ".hydra" / "overrides.yaml"
    if not previous.is_file():
        return f"resume={run}: not a wqmix run folder (no .hydra/overrides.yaml)"
    old = [o for o in yaml.safe_load(previous.read_text()) or [] if not o.startswith(("resume=", "hydra.run.dir="))]
    new = [o for o in overrides if not o.startswith("resume=")]
    latest = {o.split("=", 1)[0]: o for o in old + new}  # a key set again keeps its last value only
    return list(latest.values()) + [f"resume={run_dir}", f"hydra.run.dir={run_dir}"]


def kept_on_bad_input(run_dir: Path, run: Callable[[], int]) -> int:
    """``run()``, a resume of ``run_dir``: Hydra rewrites the run's ``.hydra`` files before
    the job starts, so a resume refused as bad input (exit 2: other networks, another env)
    would leave the run recorded with the refused overrides, and every later resume would
    fail the same way. Those files are put back then."""
    saved = {path: path.read_bytes() for path in (run_dir / ".hydra").glob("*.yaml")}
    code = run()
    if code == EXIT_BAD_INPUT:
        for path, data in saved.items():
            path.write_bytes(data)
    return code


def unwritable(path: Path) -> bool:
    """True when ``path`` cannot be created as a folder: its nearest existing ancestor is a
    file, or a folder in which no folder can be made. Tried with a temporary folder, removed
    at once: permission bits do not tell for root, nor on a read-only or special file system."""
    import tempfile

    probe = path.absolute()
    while not probe.exists():
        probe = probe.parent
    if probe.is_file():
        return True
    try:
        with tempfile.TemporaryDirectory(dir=probe, prefix=".wqmix-probe-"):
            return False
    except OSError:
        return True


def preflight(overrides: list[str], multirun: bool) -> str | None:
    """Compose and validate every job; a one-line complaint, or None when all are fine."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from wqmix_cli.config import ConfigError, validate
    from wqmix_cli.envs import check_env
    from wqmix_cli.envs.base import MissingDependency
    from wqmix_cli.trackers import check_trackers

    try:
        jobs = expand_sweeps(overrides) if multirun else [overrides]
    except HydraException as err:
        return f"cannot parse the overrides: {str(err).splitlines()[0]}"
    for job in jobs:
        for override in job:
            key, _, value = override.partition("=")
            if key in ("hydra.run.dir", "hydra.sweep.dir") and "${" not in value and unwritable(Path(value)):
                return f"{key}={value}: cannot write there (not a writable folder)"
        problem = check_override_keys(job) or check_hydra_groups(job)
        if problem:
            return problem
        try:
            cfg = validate(compose(job))
            check_env(cfg.env)
            check_trackers(cfg.logger)
            if cfg.device == "cuda":
                from wqmix_cli.train import resolve_device

                resolve_device(cfg.device)
        except (ConfigError, MissingDependency) as err:
            return str(err)
        except (HydraException, OmegaConfBaseException) as err:
            return str(err).strip().splitlines()[0]
    return None


EXIT_FILE_VAR = "WQMIX_EXIT_CODES"


def _run_hydra_train(args: list[str]) -> int:
    """Run Hydra's app; returns the worst exit code of its jobs.

    Jobs may run in other processes (joblib, submitit, ray launchers), so each appends its
    exit code to a file whose path the environment carries to them.
    """
    import dataclasses
    import os
    import tempfile

    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
    def task(raw: DictConfig) -> int:
        from wqmix_cli.checkpoint import CheckpointError
        from wqmix_cli.config import ConfigError, validate
        from wqmix_cli.cpu import default_threads, job_cores, parallel_jobs
        from wqmix_cli.envs.base import MissingDependency
        from wqmix_cli.train import train

        try:
            cfg = validate(raw)
            jobs = parallel_jobs(HydraConfig.get().launcher)
            cfg = dataclasses.replace(cfg, threads=cfg.threads or default_threads(jobs),
                                      learner_threads=cfg.learner_threads or job_cores(jobs))
            code = train(cfg, Path(HydraConfig.get().runtime.output_dir))
        except (ConfigError, MissingDependency) as err:
            code = fail(str(err))
        except (FloatingPointError, CheckpointError) as err:
            print(f"wqmix: {err}", file=sys.stderr)
            code = 1
        with open(os.environ[EXIT_FILE_VAR], "a") as fh:
            fh.write(f"{code}\n")
        return code

    with tempfile.NamedTemporaryFile("r", prefix="wqmix-exit-", suffix=".txt") as codes:
        previous = os.environ.get(EXIT_FILE_VAR)
        os.environ[EXIT_FILE_VAR] = codes.name
        try:
            sys.argv = ["wqmix train", *args]
            task()
        finally:
            if previous is None:
                os.environ.pop(EXIT_FILE_VAR, None)
            else:
                os.environ[EXIT_FILE_VAR] = previous
        return max((int(line) for line in codes.read().split()), default=0)


def train_command(args: list[str]) -> int:
    flags, overrides = split_args(args)
    if any(f in flags for f in ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc")):
        return _run_hydra_train(args)
    overrides = resume_overrides(overrides)
    if isinstance(overrides, str):
        return fail(overrides)
    problem = preflight(overrides, multirun="-m" in flags or "--multirun" in flags)
    if problem:
        return fail(problem)
    resumed = next((o.split("=", 1)[1] for o in overrides if o.startswith("resume=")), "null")
    if resumed == "null":
        return _run_hydra_train(flags + overrides)
    return kept_on_bad_input(Path(resumed), lambda: _run_hydra_train(flags + overrides))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "train":
        return train_command(rest)
    if command == "evaluate":
        from wqmix_cli.evaluate_cli import evaluate_command

        return evaluate_command(rest)
    if command == "plot":
        from wqmix_cli.plot import main as plot_main

        return plot_main(rest)
    return fail(f"unknown command '{command}'; allowed: train, evaluate, plot")


def entry() -> None:
    sys.exit(main())
