"""``wqmix evaluate checkpoint=PATH [episodes=32] [render=false] [gif=PATH] [seed=0]
[device=cpu] [json=PATH] [env.KEY=VALUE ...]``: greedy episodes from a checkpoint.

Prints a table of the returns (mean with a 95% percentile-bootstrap interval, std, min,
max) and, where the env has battles, the win rate (with a 95% Wilson score interval).
``json=PATH`` also writes the same numbers as one JSON line (``json=-``: print that line
instead of the table). For ``env=matrix`` runs it prints the learned Q_tot table, and
for the weighted variants the Q* table, over all joint actions. ``render=true`` writes a
GIF of one greedy episode.
"""
from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from wqmix_cli.actor import Actor
from wqmix_cli.checkpoint import CheckpointError, env_size_mismatch, latest_checkpoint, load_checkpoint
from wqmix_cli.cli import EXIT_BAD_INPUT
from wqmix_cli.config import Config, ConfigError, MatrixConfig, validate
from wqmix_cli.envs import check_env, make_env, make_vector_env
from wqmix_cli.envs.base import EnvInfo, MissingDependency, Observation
from wqmix_cli.evaluate import run_greedy
from wqmix_cli.policy import WQMIXPolicy
from wqmix_cli.runner import EpisodeRunner
from wqmix_cli.stats import bootstrap_ci
from wqmix_cli.train import resolve_device

N_RESAMPLES = 10_000
Z_95 = 1.959963984540054  # the standard normal's 0.975 quantile
GIF_FRAME_MS = 100
USAGE = """usage: wqmix evaluate checkpoint=PATH [episodes=32] [render=false] [gif=PATH] [seed=0]
                      [device=cpu] [json=PATH|-] [env.KEY=VALUE ...]

  checkpoint  a run folder, its checkpoints/ folder, checkpoints/latest or checkpoints/<t_env>
  episodes    greedy episodes to run (> 0)
  render      true: also write a GIF of one greedy episode (to gif=PATH,
              default <run dir>/episode.gif)
  seed        episode k is reset with seed + k
  epsilon     0: greedy (default); 1: uniformly random available actions (a baseline)
  device      cpu | cuda | auto
  json        write the results as one JSON line to PATH (-: print it instead of the table)
  env.KEY     change a setting of the run's env (e.g. env.n_envs=8)
"""
OPTIONS: dict[str, Any] = {
    "checkpoint": None,
    "episodes": 32,
    "render": False,
    "gif": None,
    "seed": 0,
    "epsilon": 0.0,
    "device": "cpu",
    "json": None,
}


class BadInput(ValueError):
    """A user's mistake; the message is one line."""


@dataclasses.dataclass
class Options:
    """The parsed command line of ``wqmix evaluate``."""

    checkpoint: Path
    episodes: int
    render: bool
    gif: Path | None
    seed: int
    epsilon: float
    device: str
    json: str | None
    env: dict[str, Any]


def parse_args(args: list[str]) -> Options:
    """``key=value`` arguments -> Options; raises BadInput naming the argument."""
    values: dict[str, Any] = dict(OPTIONS)
    env: dict[str, Any] = {}
    for arg in args:
        key, sep, text = arg.partition("=")
        if not sep or not key:
            raise BadInput(f"expected key=value, got {arg!r}; allowed keys: {', '.join(OPTIONS)}, env.KEY")
        if key.startswith("env."):
            env[key[4:]] = _parse_value(text)
        elif key in ("checkpoint", "gif", "json", "device"):
            if not text:
                raise BadInput(f"{key}= needs a value")
            values[key] = text
        elif key in OPTIONS:
            values[key] = _parse_value(text)
        else:
            close = difflib.get_close_matches(key, list(OPTIONS), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise BadInput(f"unknown argument '{key}'{hint}; allowed: {', '.join(OPTIONS)}, env.KEY")
    if values["checkpoint"] is None:
        raise BadInput("checkpoint=PATH is required (a run folder or a checkpoint)")
    for key in ("episodes", "seed"):
        if not isinstance(values[key], int) or isinstance(values[key], bool):
            raise BadInput(f"{key}={values[key]!r} must be an integer")
    if values["episodes"] <= 0:
        raise BadInput(f"episodes={values['episodes']} must be positive")
    if values["seed"] < 0:
        raise BadInput(f"seed={values['seed']} must be >= 0")
    if isinstance(values["epsilon"], bool) or not isinstance(values["epsilon"], (int, float)) \
            or not 0 <= values["epsilon"] <= 1:
        raise BadInput(f"epsilon={values['epsilon']!r} must be a number in [0, 1]")
    if not isinstance(values["render"], bool):
        raise BadInput(f"render={values['render']!r} must be true or false")
    if values["device"] not in ("cpu", "cuda", "auto"):
        raise BadInput(f"device={values['device']!r} is not known; allowed: cpu, cuda, auto")
    return Options(
        checkpoint=Path(values["checkpoint"]),
        episodes=values["episodes"],
        render=values["render"],
        gif=Path(values["gif"]) if values["gif"] is not None else None,
        seed=values["seed"],
        epsilon=float(values["epsilon"]),
        device=values["device"],
        json=values["json"],
        env=env,
    )


def _parse_value(text: str) -> Any:
    """A value as Hydra would read it: numbers, booleans, null and lists are typed."""
    try:
        return yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        return text


def load_run(opts: Options) -> tuple[Path, dict, Config]:
    """The checkpoint folder, its state and the run's Config with ``env.*`` changes applied."""
    folder = latest_checkpoint(opts.checkpoint)
    if folder is None:
        what = "no such file or folder" if not opts.checkpoint.exists() else "no complete checkpoint there"
        raise BadInput(f"checkpoint={opts.checkpoint}: {what} (expected RUN_DIR/checkpoints/<t_env>/state.pt)")
    try:
        state, _ = load_checkpoint(folder)
    except CheckpointError as err:
        raise BadInput(str(err)) from None
    if not isinstance(state, dict) or not {"policy", "config", "env_info"} <= set(state):
        raise BadInput(f"{folder} is not a wqmix checkpoint (no policy, config or env_info in state.pt)")
    raw = dict(state["config"])
    raw["env"] = {**raw["env"], **opts.env}
    cfg = validate(raw)
    check_env(cfg.env)
    return folder, state, cfg


def build_policy(state: dict, cfg: Config, device: torch.device) -> WQMIXPolicy:
    """The run's networks with the checkpoint's weights, on ``device``, in eval mode."""
    info = EnvInfo(**state["env_info"])
    policy = WQMIXPolicy(info, cfg.learner, central=cfg.agent.name != "qmix")
    try:
        policy.load_state_dict(state["policy"])
    except RuntimeError as err:
        raise BadInput(f"the checkpoint's networks do not match its config ({str(err).splitlines()[0]})") from None
    return policy.to(device).eval()


def _check_sizes(policy: WQMIXPolicy, env_info: EnvInfo) -> None:
    problem = env_size_mismatch(policy.info, env_info)
    if problem:
        raise BadInput(problem)


def wilson_ci(wins: float, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a win rate (sensible at 0 and 1 wins, unlike the bootstrap)."""
    p = wins / n
    centre = (p + Z_95**2 / (2 * n)) / (1 + Z_95**2 / n)
    half = Z_95 * math.sqrt(p * (1 - p) / n + Z_95**2 / (4 * n * n)) / (1 + Z_95**2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def summarise_results(results: dict[str, np.ndarray]) -> dict[str, Any]:
    """Return statistics (and win rate) of ``run_greedy``'s results, JSON-ready.

    Std and the interval need two episodes; with one they are None.
    """
    returns = results["returns"].astype(np.float64)
    n = len(returns)
    ci = [float(x[0]) for x in bootstrap_ci(returns[:, None], n_resamples=N_RESAMPLES)] if n > 1 else None
    out: dict[str, Any] = {
        "return": {
            "mean": float(returns.mean()),
            "ci95": ci,
            "ci_method": f"percentile bootstrap, {N_RESAMPLES} resamples",
            "std": float(returns.std(ddof=1)) if n > 1 else None,
            "min": float(returns.min()),
            "max": float(returns.max()),
        }
    }
    if "battle_won" in results:
        won = results["battle_won"].astype(np.float64)
        out["battle_won"] = {
            "mean": float(won.mean()),
            "ci95": list(wilson_ci(float(won.sum()), n)),
            "ci_method": "Wilson score",
        }
    return out


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def format_table(summary: dict[str, Any]) -> str:
    """The summary as an aligned plain-text table, with a note on how the CIs were made."""
    ret = summary["return"]
    ci = ret["ci95"]
    rows = [["", "mean", "95% CI", "std", "min", "max"],
            ["return", _num(ret["mean"]), f"[{_num(ci[0])}, {_num(ci[1])}]" if ci else "n/a",
             _num(ret["std"]), _num(ret["min"]), _num(ret["max"])]]
    notes = [f"return CI: {ret['ci_method']}" if ci else "return CI: needs 2 or more episodes"]
    if "battle_won" in summary:
        won = summary["battle_won"]
        rows.append(["win rate", _num(won["mean"]), f"[{_num(won['ci95'][0])}, {_num(won['ci95'][1])}]", "", "", ""])
        notes.append(f"win rate CI: {won['ci_method']}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
        for row in rows
    ]
    return "\n".join(lines + ["; ".join(notes)])


@torch.inference_mode()
def joint_value_tables(policy: WQMIXPolicy, first: Observation) -> dict[str, np.ndarray]:
    """Q_tot (and Q* for a central policy) of a one-step game at its first observation,
    for every joint action: ``{"q_tot": [A]*N, "q_star": [A]*N}``.

    ``first`` is the env's reset Observation (obs ``[N, O]``, state ``[S]``).
    """
    info = policy.info
    n, a = info.n_agents, info.n_actions
    device = next(policy.parameters()).device
    obs = torch.as_tensor(first.obs, device=device).view(1, 1, n, -1)
    state = torch.as_tensor(first.state, device=device).view(1, 1, -1)
    inputs = policy.agent_inputs(obs, torch.full((1, 1, n), -1, device=device))
    joint = torch.tensor(list(itertools.product(range(a), repeat=n)), device=device)  # [A^N, N]
    states = state.expand(len(joint), 1, -1)
    nets = {"q_tot": (policy.agent, policy.mixer)}
    if policy.central:
        nets["q_star"] = (policy.central_agent, policy.central_mixer)
    tables = {}
    for name, (agent, mixer) in nets.items():
        q, _ = agent(inputs)  # [1, 1, N, A]
        chosen = q[0, 0][torch.arange(n, device=device), joint]  # [A^N, N]: agent i's value of its action
        tables[name] = mixer(chosen.unsqueeze(1), states).view([a] * n).cpu().numpy()
    return tables


def format_matrix(name: str, table: np.ndarray) -> str:
    """A 2-agent table: rows are agent 0's actions, columns agent 1's."""
    header = [f"{name} (rows: agent 0's action, columns: agent 1's)"]
    cells = [[""] + [str(j) for j in range(table.shape[1])]]
    cells += [[str(i)] + [f"{v:.3f}" for v in row] for i, row in enumerate(table)]
    width = max(len(c) for row in cells for c in row)
    return "\n".join(header + ["  ".join(c.rjust(width) for c in row) for row in cells])


def render_episode(policy: WQMIXPolicy, cfg: Config, device: torch.device, seed: int, path: Path) -> int:
    """Write a GIF of one greedy episode (reset with ``seed``) to ``path``; returns its steps.

    The GIF writer merges identical consecutive frames, so it may hold fewer than steps + 1.
    """
    import imageio.v3 as iio

    try:
        env = make_env(cfg.env, render_mode="rgb_array")
    except ValueError as err:
        raise BadInput(f"env {cfg.env.name} cannot render ({err})") from None
    try:
        _check_sizes(policy, env.info())
        actor = Actor(policy, device, seed=seed)
        actor.start(1)
        ob = env.reset(seed)
        try:
            frames = [env.render()]
        except (NotImplementedError, RuntimeError) as err:
            raise BadInput(f"env {cfg.env.name} cannot render ({err})") from None
        for _ in range(policy.info.episode_limit):
            action = actor.act(ob.obs[None], ob.avail[None], 0.0)[0]
            _, terminated, truncated, _ = env.step(action)
            frames.append(env.render())
            if terminated or truncated:
                break
            ob = env.observe()
    finally:
        env.close()
    # Encoded in memory, then written: imageio's writer, left holding a file it could not
    # open, printed a second traceback when it was collected.
    gif = iio.imwrite("<bytes>", np.stack(frames), extension=".gif", duration=GIF_FRAME_MS, loop=0)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gif)
    except OSError as err:
        raise BadInput(f"gif={path}: cannot write it ({err.strerror or err})") from None
    return len(frames) - 1


def evaluate(opts: Options) -> int:
    """Run the evaluation described by ``opts``; print and write its results."""
    folder, state, cfg = load_run(opts)
    device = resolve_device(opts.device)
    policy = build_policy(state, cfg, device)
    run_dir = folder.parent.parent if folder.parent.name == "checkpoints" else folder

    if opts.render:
        gif = opts.gif or run_dir / "episode.gif"
        steps = render_episode(policy, cfg, device, opts.seed, gif)
        print(f"wrote {gif} (one greedy episode, {steps} steps)", file=sys.stderr if opts.json == "-" else sys.stdout)

    env = make_vector_env(cfg.env, n_envs=min(cfg.env.n_envs, opts.episodes))
    try:
        _check_sizes(policy, env.info())
        runner = EpisodeRunner(env, Actor(policy, device, seed=opts.seed))
        results = run_greedy(runner, opts.episodes, opts.seed, epsilon=opts.epsilon)
    finally:
        env.close()

    t_env = state.get("counters", {}).get("t_env")
    record: dict[str, Any] = {
        "checkpoint": str(folder),
        "t_env": t_env,
        "agent": cfg.agent.name,
        "env": cfg.env.name,
        "episodes": opts.episodes,
        "seed": opts.seed,
        "epsilon": opts.epsilon,
        **summarise_results(results),
    }
    tables: dict[str, np.ndarray] = {}
    if isinstance(cfg.env, MatrixConfig):
        tables = joint_value_tables(policy, make_env(cfg.env).reset(opts.seed))
        record.update({name: table.tolist() for name, table in tables.items()})

    line = json.dumps(record)
    if opts.json == "-":
        print(line)
        return 0
    if opts.json is not None:
        try:
            Path(opts.json).parent.mkdir(parents=True, exist_ok=True)
            Path(opts.json).write_text(line + "\n")
        except OSError as err:
            raise BadInput(f"json={opts.json}: cannot write it ({err.strerror or err})") from None
    print(f"{folder} (agent {cfg.agent.name}, env {cfg.env.name}, t_env {t_env}): "
          f"{opts.episodes} {'greedy' if opts.epsilon == 0 else f'epsilon-{opts.epsilon:g}'} "
          f"episode{'s' if opts.episodes > 1 else ''}, seed {opts.seed}")
    print(format_table(record))
    for name, label in (("q_tot", "Q_tot"), ("q_star", "Q*")):
        if name in tables and tables[name].ndim == 2:
            print()
            print(format_matrix(label, tables[name]))
    return 0


def evaluate_command(args: list[str]) -> int:
    """Entry of ``wqmix evaluate``; returns the exit code (0 done, 2 bad input)."""
    if any(a in ("-h", "--help", "help") for a in args):
        print(USAGE)
        return 0
    try:
        return evaluate(parse_args(args))
    except (BadInput, ConfigError, MissingDependency) as err:
        print(f"wqmix: evaluate: {err}".splitlines()[0], file=sys.stderr)
        return EXIT_BAD_INPUT
