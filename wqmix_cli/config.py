"""The run configuration: a dataclass schema and the checks made before anything runs.

Hydra composes ``conf/``; ``validate`` turns the composed DictConfig into a typed
``Config`` or raises ``ConfigError`` with one line naming the key and what is allowed.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from omegaconf import DictConfig, ListConfig, OmegaConf

PAPER_PAYOFF = [[8.0, -12.0, -12.0], [-12.0, 0.0, 0.0], [-12.0, 0.0, 0.0]]


class ConfigError(ValueError):
    """A user's mistake in the configuration; the message is one line."""


@dataclass
class EnvConfig:
    name: str = "mpe"
    n_envs: int = 1
    workers: int = 0
    t_max: int = 2_000_000


@dataclass
class MPEConfig(EnvConfig):
    n_envs: int = 8
    workers: int = 1
    scenario: str = "simple_spread"
    n_agents: int = 3
    local_ratio: float = 0.5
    max_cycles: int = 25


@dataclass
class SMAXConfig(EnvConfig):
    name: str = "smax"
    map_name: str = "3m"
    n_envs: int = 8
    jax_device: str = "cpu"


@dataclass
class SMACConfig(EnvConfig):
    name: str = "smac"
    map_name: str = "3s5z"
    package: str = "auto"
    capability_config: dict = field(default_factory=dict)
    max_restarts: int = 3


@dataclass
class MatrixConfig(EnvConfig):
    name: str = "matrix"
    payoff: list = field(default_factory=lambda: [list(r) for r in PAPER_PAYOFF])
    t_max: int = 10_000


@dataclass
class PredatorPreyConfig(EnvConfig):
    name: str = "predator_prey"
    grid_size: int = 10
    n_agents: int = 8
    n_prey: int = 8
    sight: int = 2
    capture_reward: float = 10.0
    punishment: float = -2.0
    min_catchers: int = 2
    episode_limit: int = 200
    t_max: int = 1_000_000


ENV_SCHEMAS: dict[str, type[EnvConfig]] = {
    "mpe": MPEConfig,
    "smax": SMAXConfig,
    "smac": SMACConfig,
    "matrix": MatrixConfig,
    "predator_prey": PredatorPreyConfig,
}
MPE_SCENARIOS = ("simple_spread", "simple_speaker_listener", "simple_reference")
SMAX_JAX_DEVICES = ("cpu", "gpu")  # where jax steps the battles
AGENT_VARIANTS = ("cwqmix", "owqmix", "qmix")


@dataclass
class AgentConfig:
    name: str = "cwqmix"
    w: float = 0.1


@dataclass
class LearnerConfig:
    recurrent: bool = True
    hidden_dim: int = 64
    mixer_embed_dim: int = 32
    hypernet_dim: int = 64
    central_mixer_dim: int = 256
    batch_size: int = 32
    buffer_size: int = 5000
    lr: float = 5e-4
    lr_schedule: str = "constant"
    lr_schedule_updates: int = 0
    lr_min: float = 0.0
    optimizer: str = "rmsprop"
    optim_alpha: float = 0.99
    optim_eps: float = 1e-5
    gamma: float = 0.99
    grad_clip: float = 10.0
    target_update_interval: int = 200
    target_update: str = "hard"
    tau: float = 0.005
    updates_per_episode: float = 1.0
    central_loss_weight: float = 1.0
    cuda_graph: bool = True


@dataclass
class EpsilonConfig:
    start: float = 1.0
    finish: float = 0.05
    anneal_time: int = 50_000


@dataclass
class CheckpointConfig:
    keep: int = 3
    save_buffer: bool = False


@dataclass
class LoggerConfig:
    """Experiment trackers beside TensorBoard, which always runs."""

    wandb: bool = False
    wandb_project: str = "wqmix"
    wandb_mode: str = "offline"
    mlflow: bool = False
    mlflow_uri: str | None = None
    mlflow_experiment: str = "wqmix"


WANDB_MODES = ("offline", "online", "disabled")


@dataclass
class Config:
    env: EnvConfig = field(default_factory=MPEConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    epsilon: EpsilonConfig = field(default_factory=EpsilonConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0
    t_max: int = 2_000_000
    device: str = "cpu"
    threads: int = 0
    learner_threads: int = 0
    test_interval: int = 10_000
    test_episodes: int = 32
    log_interval: int = 2_000
    save_interval: int = 100_000
    resume: str | None = None
    deterministic: bool = False
    overlap: bool = True


def _choices(name: str, value: Any, allowed: tuple[str, ...] | list[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not known; allowed: {', '.join(allowed)}")


def _build(cls: type, node: Any, prefix: str) -> Any:
    """Build dataclass ``cls`` from a mapping, naming the key on an unknown key or wrong type."""
    if not isinstance(node, dict):
        raise ConfigError(f"{prefix or 'config'} must be a group of keys, got {node!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in node.items():
        path = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise ConfigError(
                f"unknown key {path}{hint}; allowed in {prefix.rstrip('.') or 'config'}: "
                + ", ".join(sorted(fields))
            )
        kwargs[key] = _coerce(hints[key], value, path)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path + ".")
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint == (str | None):
        if value is None or isinstance(value, str):
            return value
    elif hint is list:
        if isinstance(value, list):
            return value
    elif hint is dict:
        if isinstance(value, dict):
            return value
    else:
        return value
    name = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{path}={value!r} has the wrong type; expected {name}")


def validate(raw: DictConfig | dict) -> Config:
    """Check a composed configuration and return it typed.

    Raises ConfigError (one line: the key, the value, what is allowed) on an unknown key,
    a wrong type, an out-of-range value or an unknown env, scenario, map or variant.
    """
    try:
        node = OmegaConf.to_container(raw, resolve=True) if isinstance(raw, (DictConfig, ListConfig)) else dict(raw)
    except Exception as err:  # interpolation errors from omegaconf
        raise ConfigError(f"the configuration does not resolve: {err}".splitlines()[0]) from None
    node = {k: v for k, v in node.items() if k != "hydra"}
    env_node = node.get("env", {}) or {}
    env_name = env_node.get("name", "mpe") if isinstance(env_node, dict) else None
    _choices("env", env_name, tuple(ENV_SCHEMAS))
    agent_name = (node.get("agent") or {}).get("name", "cwqmix")
    _choices("agent", agent_name, AGENT_VARIANTS)

    cfg = Config(
        **{
            key: _coerce(ENV_SCHEMAS[env_name] if key == "env" else get_type_hints(Config)[key], value, key)
            for key, value in node.items()
            if key in {f.name for f in dataclasses.fields(Config)}
        }
    )
    unknown = sorted(set(node) - {f.name for f in dataclasses.fields(Config)})
    if unknown:
        close = difflib.get_close_matches(unknown[0], [f.name for f in dataclasses.fields(Config)], n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(
            f"unknown key {unknown[0]}{hint}; allowed: "
            + ", ".join(f.name for f in dataclasses.fields(Config))
        )
    _check_ranges(cfg)
    _check_logger(cfg.logger)
    return cfg


def _check_logger(trackers: LoggerConfig) -> None:
    """The tracker settings are known (their packages: ``trackers.check_trackers``)."""
    _choices("logger.wandb_mode", trackers.wandb_mode, WANDB_MODES)
    for key in ("wandb_project", "mlflow_experiment"):
        if not getattr(trackers, key).strip():
            raise ConfigError(f"logger.{key} must not be empty")


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{name}={value} must be positive")


def _check_ranges(cfg: Config) -> None:
    env, lr = cfg.env, cfg.learner
    if isinstance(env, MPEConfig):
        _choices("env.scenario", env.scenario, MPE_SCENARIOS)
        _positive("env.max_cycles", env.max_cycles)
        _positive("env.n_agents", env.n_agents)
        if not 0 <= env.local_ratio <= 1:
            raise ConfigError(f"env.local_ratio={env.local_ratio} must be in [0, 1]")
    if isinstance(env, SMACConfig):
        _choices("env.package", env.package, ("auto", "smac", "smacv2"))
    if isinstance(env, SMAXConfig):
        _choices("env.jax_device", env.jax_device, SMAX_JAX_DEVICES)
    if isinstance(env, MatrixConfig):
        rows = env.payoff
        if not rows or any(not isinstance(r, list) or len(r) != len(rows) for r in rows):
            raise ConfigError(
                f"env.payoff={rows!r} must be a non-empty square list of lists (A rows of A numbers)"
            )
        if any(not isinstance(x, (int, float)) or isinstance(x, bool) for r in rows for x in r):
            raise ConfigError(f"env.payoff={rows!r} must hold numbers only")
    if isinstance(env, PredatorPreyConfig):
        for key in ("grid_size", "n_agents", "n_prey", "episode_limit", "min_catchers"):
            _positive(f"env.{key}", getattr(env, key))
        if env.sight < 0:
            raise ConfigError(f"env.sight={env.sight} must be >= 0")
    _positive("env.n_envs", env.n_envs)
    if not 0 <= cfg.seed < 2**32:
        raise ConfigError(f"seed={cfg.seed} must be in [0, {2**32 - 1}] (numpy's seed range)")
    if env.workers < 0:
        raise ConfigError(f"env.workers={env.workers} must be >= 0 (0 steps the envs in this process)")
    for key in ("t_max", "test_interval", "save_interval", "log_interval"):
        _positive(key, getattr(cfg, key))
    if cfg.threads < 0:
        raise ConfigError(f"threads={cfg.threads} must be >= 0 (0: half the CPU cores)")
    if cfg.learner_threads < 0:
        raise ConfigError(f"learner_threads={cfg.learner_threads} must be >= 0 (0: all the CPU cores)")
    if cfg.test_episodes < 0:
        raise ConfigError(f"test_episodes={cfg.test_episodes} must be >= 0")
    _choices("device", cfg.device, ("cpu", "cuda", "auto"))
    if not 0 < cfg.agent.w <= 1:
        raise ConfigError(f"agent.w={cfg.agent.w} must be in (0, 1]")
    if not 0 < lr.gamma <= 1:
        raise ConfigError(f"learner.gamma={lr.gamma} must be in (0, 1]")
    for key in ("batch_size", "buffer_size", "lr", "hidden_dim", "mixer_embed_dim", "hypernet_dim",
                "central_mixer_dim", "grad_clip", "target_update_interval", "updates_per_episode"):
        _positive(f"learner.{key}", getattr(lr, key))
    if lr.batch_size > lr.buffer_size:
        raise ConfigError(
            f"learner.batch_size={lr.batch_size} is larger than learner.buffer_size={lr.buffer_size}; "
            "the batch is drawn from the buffer"
        )
    _choices("learner.optimizer", lr.optimizer, ("rmsprop", "adam"))
    _choices("learner.lr_schedule", lr.lr_schedule, ("constant", "linear", "cosine"))
    if lr.lr_schedule_updates < 0:
        raise ConfigError(f"learner.lr_schedule_updates={lr.lr_schedule_updates} must be >= 0 (0: the whole run)")
    if not 0 <= lr.lr_min <= lr.lr:
        raise ConfigError(f"learner.lr_min={lr.lr_min} must be in [0, learner.lr={lr.lr}]")
    _choices("learner.target_update", lr.target_update, ("hard", "soft"))
    if not 0 < lr.tau <= 1:
        raise ConfigError(f"learner.tau={lr.tau} must be in (0, 1]")
    eps = cfg.epsilon
    for key in ("start", "finish"):
        if not 0 <= getattr(eps, key) <= 1:
            raise ConfigError(f"epsilon.{key}={getattr(eps, key)} must be in [0, 1]")
    if eps.anneal_time < 0:
        raise ConfigError(f"epsilon.anneal_time={eps.anneal_time} must be >= 0")
    _positive("checkpoint.keep", cfg.checkpoint.keep)
