"""Reproduce the Weighted QMIX paper's predator-prey comparison (design section 6).

QMIX, CW-QMIX and OW-QMIX (alpha 0.1, epsilon over 50k steps) on the 10x10 grid with 8
agents, 8 prey and the -2 miscoordination punishment, over several seeds, through the
normal command line: one ``wqmix train -m`` sweep into ``<out-dir>/sweep``, then
``wqmix plot`` of ``test/return_mean`` into ``<out-dir>/test_return.png`` (and its CSV).
Prints each method's final test return (mean over seeds) and the wall time.

    python scripts/reproduce_predator_prey.py                       # 1M steps x 3 seeds: hours
    python scripts/reproduce_predator_prey.py --launcher joblib     # the runs in parallel
    python scripts/reproduce_predator_prey.py --quick               # a short check of the pipeline
    python scripts/reproduce_predator_prey.py -- device=cuda        # extra overrides for every run

The paper: CW-QMIX and OW-QMIX reach 35-40 (40 is the best return); QMIX fails.
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

VARIANTS = ("qmix", "cwqmix", "owqmix")
METRIC = "test/return_mean"
PAPER_T_MAX, PAPER_SEEDS = 1_000_000, 3
# The paper tests every 10k steps with 16 greedy episodes.
PAPER_TEST = ["test_interval=10000", "test_episodes=16"]
# Enough to run every stage (collect, update, test, checkpoint, plot) in about a minute:
# 10 episodes of 200 steps, updates from the 4th episode on, two tests of 2 episodes.
QUICK_T_MAX, QUICK_SEEDS = 2_000, 2
QUICK_TEST = ["test_interval=1000", "test_episodes=2", "log_interval=1000", "learner.batch_size=4"]
WQMIX = [sys.executable, "-m", "wqmix_cli"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--t-max", type=int, default=None,
                        help=f"environment steps per run (default {PAPER_T_MAX:,}; --quick: {QUICK_T_MAX:,})")
    parser.add_argument("--seeds", type=int, default=None,
                        help=f"seeds per method (default {PAPER_SEEDS}; --quick: {QUICK_SEEDS})")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="folder for the sweep, the figure and its CSV "
                        "(default outputs/predator_prey/<date>_<time>)")
    parser.add_argument("--launcher", choices=("basic", "joblib"), default="basic",
                        help="Hydra launcher: basic runs one after another, joblib in parallel "
                        "processes with one torch thread each (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="a short run of the whole pipeline")
    parser.add_argument("overrides", nargs="*", help="more `wqmix train` overrides for every run (after --)")
    args = parser.parse_args()
    args.t_max = args.t_max or (QUICK_T_MAX if args.quick else PAPER_T_MAX)
    args.seeds = args.seeds or (QUICK_SEEDS if args.quick else PAPER_SEEDS)
    if args.t_max <= 0 or args.seeds <= 0:
        parser.error("--t-max and --seeds must be positive")
    args.out_dir = args.out_dir or Path("outputs/predator_prey") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    return args


def train_command(args: argparse.Namespace, sweep_dir: Path) -> list[str]:
    """The ``wqmix train -m`` sweep: every method x every seed."""
    overrides = [
        "env=predator_prey", f"agent={','.join(VARIANTS)}", f"seed={','.join(map(str, range(args.seeds)))}",
        f"t_max={args.t_max}", *(QUICK_TEST if args.quick else PAPER_TEST), f"hydra.sweep.dir={sweep_dir}",
    ]
    if args.launcher == "joblib":
        overrides.append("hydra/launcher=joblib")
        if not any(o.startswith("threads=") for o in args.overrides):
            overrides.append("threads=1")  # parallel runs would oversubscribe the cores otherwise
    return [*WQMIX, "train", "-m", *overrides, *args.overrides]


def read_finals(csv_path: Path) -> list[dict[str, str]]:
    """The rows ``wqmix plot`` wrote: group, n_seeds, final_step, final_mean, ci_low, ci_high."""
    with csv_path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def run(command: list[str]) -> None:
    print("$ " + " ".join(command), flush=True)
    code = subprocess.call(command)
    if code != 0:
        sys.exit(f"reproduce_predator_prey: the command above failed with exit code {code}")


def main() -> None:
    args = parse_args()
    sweep_dir, figure = args.out_dir / "sweep", args.out_dir / "test_return.png"
    start = time.perf_counter()
    run(train_command(args, sweep_dir))
    trained = time.perf_counter()
    run([*WQMIX, "plot", str(sweep_dir), "--metric", METRIC, "--out", str(figure)])

    print(f"\nfinal {METRIC} per method (mean over seeds, 95% bootstrap interval):")
    for row in read_finals(figure.with_suffix(".csv")):
        print(f"  {row['group']:<16} {float(row['final_mean']):8.2f}  "
              f"[{float(row['ci_low']):.2f}, {float(row['ci_high']):.2f}]  "
              f"{row['n_seeds']} seeds, at step {int(row['final_step']):,}")
    print("paper: cwqmix and owqmix 35-40 (the best return is 40), qmix fails under the -2 punishment")
    print(f"wall time: {trained - start:.0f} s training, {time.perf_counter() - start:.0f} s in all; "
          f"results in {args.out_dir}")


if __name__ == "__main__":
    main()
