"""CW-QMIX and QMIX on a SMAX map through `wqmix train -m`, then `wqmix plot`.

    python scripts/smax_learning.py --map 3m --t-max 300000 --seeds 0
    python scripts/smax_learning.py --quick          # a few thousand steps, to check the path

Prints each method's final test win rate and return (mean over seeds) and the wall time.
SMAX is jaxmarl's simulator, not StarCraft II: these figures are our own, not the paper's.
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--map", default="3m")
    parser.add_argument("--agents", default="cwqmix,qmix")
    parser.add_argument("--w", type=float, default=0.75, help="alpha for the weighted variants (paper's SMAC CW: 0.75)")
    parser.add_argument("--t-max", type=int, default=300_000)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2, help="parallel jobs (joblib)")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/smax_learning"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    t_max, test_interval = (3000, 1000) if args.quick else (args.t_max, 10_000)
    sweep_dir = args.out_dir / f"{args.map}-{time.strftime('%Y%m%d-%H%M%S')}"
    command = [
        sys.executable, "-m", "wqmix_cli", "train", "-m", f"agent={args.agents}", f"seed={args.seeds}",
        "env=smax", f"env.map_name={args.map}", f"env.n_envs={args.n_envs}", f"agent.w={args.w}",
        f"t_max={t_max}", f"test_interval={test_interval}", "epsilon.anneal_time=100000",
        "hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.jobs}", f"hydra.sweep.dir={sweep_dir}",
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - start
    results = {}
    for metric in ("test/battle_won_mean", "test/return_mean"):
        png = sweep_dir / f"{metric.split('/')[1]}.png"
        subprocess.run([sys.executable, "-m", "wqmix_cli", "plot", str(sweep_dir), "--metric", metric,
                        "--out", str(png), "--group-by", "agent"], check=True)
        with open(png.with_suffix(".csv")) as fh:
            for row in csv.DictReader(fh):
                results.setdefault(row["group"], {})[metric] = (row["final_mean"], row["ci_low"], row["ci_high"],
                                                                 row["n_seeds"])
    print(f"\nSMAX {args.map}, {t_max} env steps, wall {wall / 60:.1f} min ({args.jobs} parallel jobs)")
    for group, metrics in results.items():
        won, ret = metrics["test/battle_won_mean"], metrics["test/return_mean"]
        print(f"{group:>16}: win rate {float(won[0]):.2f} [{float(won[1]):.2f}, {float(won[2]):.2f}]  "
              f"return {float(ret[0]):.2f}  seeds {won[3]}")
    print(f"curves: {sweep_dir}/battle_won_mean.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
