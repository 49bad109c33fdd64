"""Reproduce the Weighted QMIX paper's matrix-game tables (design section 6).

Trains QMIX, CW-QMIX and OW-QMIX (alpha 0.1, the reference learner settings) on the
payoff ``[[8,-12,-12],[-12,0,0],[-12,0,0]]`` over several seeds, with uniform data
(epsilon fixed at 1) and with epsilon-greedy data (1 -> 0.05 over 1k steps), through
the same path as ``wqmix train env=matrix``: the composed ``conf/`` validated, then
``train()`` (runner, replay buffer, learner) in a temporary run folder. The final
checkpoint is loaded as ``wqmix evaluate`` loads it, and its Q_tot and Q* tables and
its greedy joint action are read out.

    python scripts/reproduce_matrix.py                  # 6 seeds, 3,000 episodes each
    python scripts/reproduce_matrix.py --quick          # 2 seeds, 1,000 episodes

Prints each (variant, data) pair's tables (the median over seeds, cell by cell: a seed
that lands elsewhere does not blur it), greedy joint actions and how many seeds found
(0, 0); saves the tables as heat maps (``--out``).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing as mp
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from wqmix_cli.actor import Actor
from wqmix_cli.checkpoint import latest_checkpoint, load_checkpoint
from wqmix_cli.cli import compose
from wqmix_cli.config import Config, validate
from wqmix_cli.envs import make_env
from wqmix_cli.evaluate_cli import build_policy, joint_value_tables
from wqmix_cli.train import train

VARIANTS = ("qmix", "cwqmix", "owqmix")
DATA = {
    "uniform": ["epsilon.start=1.0", "epsilon.finish=1.0"],
    "epsilon-greedy": ["epsilon.start=1.0", "epsilon.finish=0.05", "epsilon.anneal_time=1000"],
}
DATA_LABELS = {"uniform": "uniform data (epsilon 1)", "epsilon-greedy": "epsilon-greedy data (1 -> 0.05 over 1k)"}
OPTIMUM = (0, 0)
QUICK_SEEDS, QUICK_EPISODES = 2, 1000
DEFAULT_SEEDS, DEFAULT_EPISODES = 6, 3000


@dataclass
class RunResult:
    """One trained seed: ``q_tot`` and ``q_star`` ``[A, A]`` (rows: agent 0's action;
    ``q_star`` is None for QMIX), the greedy joint action and the training time."""

    variant: str
    data: str
    seed: int
    q_tot: np.ndarray
    q_star: np.ndarray | None
    greedy: tuple[int, int]
    seconds: float


def make_config(variant: str, data: str, seed: int, episodes: int) -> Config:
    """The run's configuration, composed from ``conf/`` and checked as ``wqmix train`` does.

    One-step episodes: ``t_max`` environment steps are ``episodes`` episodes. One torch
    thread per run: the runs go in parallel, one per core.
    """
    overrides = [
        "env=matrix", f"agent={variant}", f"seed={seed}", f"t_max={episodes}",
        "test_episodes=0", "threads=1", *DATA[data],
    ]
    return validate(compose(overrides))


def train_and_read(cfg: Config, data: str) -> RunResult:
    """Train one run in a temporary folder, then read its final checkpoint's tables."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        # The progress bars of parallel runs would interleave; this script reports instead.
        with contextlib.redirect_stderr(io.StringIO()):
            code = train(cfg, Path(tmp))
        if code != 0:
            raise RuntimeError(f"{cfg.agent.name} seed {cfg.seed}: training stopped with exit code {code}")
        state, _ = load_checkpoint(latest_checkpoint(Path(tmp)))
    seconds = time.perf_counter() - start
    device = torch.device("cpu")
    policy = build_policy(state, cfg, device)
    first = make_env(cfg.env).reset(cfg.seed)
    tables = joint_value_tables(policy, first)
    actor = Actor(policy, device, seed=cfg.seed)
    actor.start(1)
    greedy = actor.act(first.obs[None], first.avail[None], 0.0)[0]
    return RunResult(cfg.agent.name, data, cfg.seed, tables["q_tot"], tables.get("q_star"),
                     (int(greedy[0]), int(greedy[1])), seconds)


def format_table(table: np.ndarray) -> str:
    """An ``[A, A]`` table with action indices on both axes."""
    header = "      " + "".join(f"{j:>8d}" for j in range(table.shape[1]))
    rows = [f"{i:>6d}" + "".join(f"{v:8.2f}" for v in row) for i, row in enumerate(table)]
    return "\n".join([header, *rows])


def summarise(results: list[RunResult], variant: str, data: str) -> dict:
    """Median tables ``[A, A]`` over a pair's seeds (cell by cell), the farthest seed's
    largest deviation from them, the greedy joint actions by seed and how many are the
    optimum."""
    runs = sorted((r for r in results if r.variant == variant and r.data == data), key=lambda r: r.seed)
    out: dict = {"n": len(runs), "greedy": [r.greedy for r in runs]}
    out["found"] = sum(g == OPTIMUM for g in out["greedy"])
    for name in ("q_tot", "q_star"):
        if getattr(runs[0], name) is not None:
            stack = np.stack([getattr(r, name) for r in runs])  # [seeds, A, A]
            out[name] = np.median(stack, axis=0)
            out[f"{name}_spread"] = float(np.abs(stack - out[name]).max())
    return out


def report(summaries: dict[tuple[str, str], dict]) -> None:
    for (variant, data), s in summaries.items():
        print(f"\n=== {variant}, {DATA_LABELS[data]}: optimum {OPTIMUM} greedy in {s['found']}/{s['n']} seeds")
        print("greedy joint action by seed: " + " ".join(f"({a},{b})" for a, b in s["greedy"]))
        for name, label in (("q_tot", "Q_tot"), ("q_star", "Q*")):
            if name in s:
                print(f"{label} (median over {s['n']} seeds; every seed within {s[f'{name}_spread']:.2f} of it):")
                print(format_table(s[name]))
    print("\nseeds whose greedy joint action is the optimum (0, 0):")
    print(f"{'variant':<8}" + "".join(f"{d:>16}" for d in DATA))
    for variant in VARIANTS:
        cells = "".join(f"{summaries[variant, d]['found']:>13d}/{summaries[variant, d]['n']:<2d}" for d in DATA)
        print(f"{variant:<8}{cells}")
    print("paper (authors' code, 6 seeds): qmix 1/6; cwqmix and owqmix 6/6, with both kinds of data")


def save_figure(summaries: dict[tuple[str, str], dict], payoff: np.ndarray, out: Path) -> None:
    """Heat maps: a row per variant; columns payoff, then Q_tot and Q* for each kind of data."""
    columns = [("payoff", None)] + [(name, data) for data in DATA for name in ("q_tot", "q_star")]
    figure = Figure(figsize=(3.0 * len(columns), 3.0 * len(VARIANTS)))
    FigureCanvasAgg(figure)
    norm = TwoSlopeNorm(vmin=min(-12.0, payoff.min()), vcenter=0.0, vmax=max(8.0, payoff.max()))
    size = payoff.shape[0]
    for row, variant in enumerate(VARIANTS):
        for col, (name, data) in enumerate(columns):
            axes = figure.add_subplot(len(VARIANTS), len(columns), row * len(columns) + col + 1)
            axes.set_xticks(range(size))
            axes.set_yticks(range(size))
            axes.tick_params(labelsize=8)
            if col == 0:
                axes.set_ylabel(f"{variant}\nagent 0's action", fontsize=10)
            if row == len(VARIANTS) - 1:
                axes.set_xlabel("agent 1's action", fontsize=9)
            s = summaries[variant, data] if data else None
            table = payoff if s is None else s.get(name)
            if table is None:
                axes.text(0.5, 0.5, "no Q*\n(QMIX)", ha="center", va="center", transform=axes.transAxes)
                axes.set_xticks([])
                axes.set_yticks([])
                continue
            axes.imshow(table, cmap="RdBu", norm=norm)
            for i in range(size):
                for j in range(size):
                    dark = abs(float(norm(table[i, j])) - 0.5) > 0.3
                    axes.text(j, i, f"{table[i, j]:.1f}", ha="center", va="center", fontsize=9,
                              color="white" if dark else "black")
            if s is None:
                axes.set_title("payoff", fontsize=10)
            elif name == "q_tot":
                axes.set_title(f"Q_tot, {data}\ngreedy (0,0) in {s['found']}/{s['n']} seeds", fontsize=9)
            else:
                axes.set_title(f"Q*, {data}", fontsize=9)
    n_seeds = summaries[VARIANTS[0], next(iter(DATA))]["n"]
    figure.suptitle(f"Matrix game, alpha 0.1: learned tables, median over {n_seeds} seeds", fontsize=12)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=None,
                        help=f"seeds per (variant, data) (default {DEFAULT_SEEDS}; --quick: {QUICK_SEEDS})")
    parser.add_argument("--episodes", type=int, default=None,
                        help=f"training episodes per run (default {DEFAULT_EPISODES}; --quick: {QUICK_EPISODES})")
    parser.add_argument("--out", type=Path, default=Path("matrix_tables.png"), help="figure path (%(default)s)")
    parser.add_argument("--quick", action="store_true", help="a short check: fewer seeds and episodes")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="runs trained in parallel, one CPU core each (default: the core count, %(default)s)")
    args = parser.parse_args()
    args.seeds = args.seeds or (QUICK_SEEDS if args.quick else DEFAULT_SEEDS)
    args.episodes = args.episodes or (QUICK_EPISODES if args.quick else DEFAULT_EPISODES)
    for key in ("seeds", "episodes", "jobs"):
        if getattr(args, key) <= 0:
            parser.error(f"--{key} must be positive")
    return args


def main() -> None:
    args = parse_args()
    jobs = [(make_config(v, d, seed, args.episodes), d)
            for v in VARIANTS for d in DATA for seed in range(args.seeds)]
    print(f"{len(jobs)} runs ({len(VARIANTS)} variants x {len(DATA)} kinds of data x {args.seeds} seeds), "
          f"{args.episodes} episodes each, {min(args.jobs, len(jobs))} at a time")
    start = time.perf_counter()
    results = []
    # spawn: each worker starts its own torch, not a fork of this process's.
    with ProcessPoolExecutor(min(args.jobs, len(jobs)), mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(train_and_read, cfg, data) for cfg, data in jobs]
        for future in as_completed(futures):
            r = future.result()
            results.append(r)
            print(f"[{len(results)}/{len(jobs)}] {r.variant} {r.data} seed {r.seed}: "
                  f"greedy {r.greedy} ({r.seconds:.0f} s)", flush=True)
    summaries = {(v, d): summarise(results, v, d) for v in VARIANTS for d in DATA}
    report(summaries)
    save_figure(summaries, np.asarray(jobs[0][0].env.payoff, dtype=float), args.out)
    print(f"\nwrote {args.out}; wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
