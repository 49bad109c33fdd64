"""`wqmix plot`: learning curves with bootstrap confidence bands from run folders.

A run folder is Hydra's run dir: it holds `.hydra/config.yaml` and `tb/` (TensorBoard
event files, x axis = environment steps). Runs are grouped by the config keys whose
values differ between them (seeds excluded); each group is drawn as the mean over its
seeds with a 95% bootstrap confidence band, and summarised in a CSV by its final values.

Alignment of seeds: the seeds of one group rarely log at exactly the same step (steps
are counted at episode boundaries), so each seed is linearly interpolated onto the union
of all the group's logged steps that lie inside the range every seed covers (from the
latest first step to the earliest last step). Nothing is extrapolated: the curve stops
where the shortest seed stops.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import (
    SCALARS,
    EventAccumulator,
)

from wqmix_cli.stats import bootstrap_ci

PROG = "wqmix plot"
# Keys that never define a group: seeds are what we average over, `resume` is a path.
IGNORED_KEYS = ("seed", "resume")
# Settings named in the default title when every run shares them.
CONTEXT_KEYS = ("env.name", "env.map_name", "env.scenario", "agent.name")


class PlotError(Exception):
    """A user's mistake: reported as one line on stderr with exit code 2."""


@dataclass
class GroupSummary:
    """One CSV row: a group's final values over its seeds."""

    group: str
    n_seeds: int
    final_step: int
    final_mean: float
    ci_low: float
    ci_high: float


def find_runs(paths: Sequence[Path]) -> list[Path]:
    """Return every run folder (holding `tb/` and `.hydra/config.yaml`) under `paths`.

    Each path is searched recursively; a run folder is not searched further.
    Raises PlotError for a path that is not a folder.
    """
    runs: set[Path] = set()
    for path in paths:
        if not path.is_dir():
            raise PlotError(f"not a folder: {path}")
        for root, dirs, _ in os.walk(path):
            folder = Path(root)
            if (folder / ".hydra" / "config.yaml").is_file() and (folder / "tb").is_dir():
                runs.add(folder.resolve())
                dirs.clear()
    return sorted(runs)


def _event_files(run: Path) -> list[Path]:
    return sorted((run / "tb").rglob("events.out.tfevents*"))


def _load(event_file: Path) -> EventAccumulator:
    # purge_orphaned_data=False: we resolve repeated steps ourselves (last write wins)
    # instead of letting TensorBoard drop everything after a step that goes back.
    accumulator = EventAccumulator(
        str(event_file), size_guidance={SCALARS: 0}, purge_orphaned_data=False
    )
    accumulator.Reload()
    return accumulator


def read_scalars(run: Path, tag: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one scalar tag of a run as (steps int64, values float64), sorted by step.

    All event files in `run/tb` are merged: a run resumed in the same folder writes a
    new file, and where a step was logged more than once the latest write (by wall
    time) wins. Returns empty arrays when the tag is absent.
    """
    latest: dict[int, tuple[float, float]] = {}
    for event_file in _event_files(run):
        accumulator = _load(event_file)
        if tag not in accumulator.Tags()[SCALARS]:
            continue
        for event in accumulator.Scalars(tag):
            previous = latest.get(event.step)
            if previous is None or event.wall_time >= previous[0]:
                latest[event.step] = (event.wall_time, event.value)
    steps = np.array(sorted(latest), dtype=np.int64)
    values = np.array([latest[int(step)][1] for step in steps], dtype=np.float64)
    return steps, values


def scalar_tags(run: Path) -> set[str]:
    """Return the scalar tags logged anywhere in `run/tb`."""
    return {tag for f in _event_files(run) for tag in _load(f).Tags()[SCALARS]}


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: node}


def read_config(run: Path) -> dict[str, Any]:
    """Read a run's `.hydra/config.yaml` as a flat dict of dotted keys."""
    path = run / ".hydra" / "config.yaml"
    try:
        config = OmegaConf.load(path)
    except Exception as err:  # any YAML or OmegaConf error is the user's file
        raise PlotError(f"cannot read {path}: {err}".replace("\n", " ")) from err
    try:
        container = OmegaConf.to_container(config, resolve=True)
    except Exception:
        # An interpolation into Hydra's runtime (e.g. ${hydra:...}) cannot be resolved
        # outside Hydra; its raw text still tells runs apart.
        container = OmegaConf.to_container(config, resolve=False)
    return _flatten(container)


def _is_ignored(key: str) -> bool:
    return key in IGNORED_KEYS or key == "hydra" or key.startswith("hydra.")


def _canonical(value: Any) -> str:
    """A hashable, order-independent form of a config value (lists included)."""
    return json.dumps(value, sort_keys=True, default=str)


def _display(key: str) -> str:
    """`agent.name=cwqmix` reads better as `agent=cwqmix`."""
    return key.removesuffix(".name")


def _partition(configs: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> set[tuple]:
    groups: dict[tuple, list[int]] = {}
    for index, config in enumerate(configs):
        groups.setdefault(tuple(_canonical(config.get(k)) for k in keys), []).append(index)
    return {tuple(members) for members in groups.values()}


def differing_keys(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Return the fewest keys that tell the runs' configs apart (seed, resume, hydra aside).

    `*.name` keys come first; a key is kept only if it splits the runs further than the
    keys already kept, so `agent.w` is left out when each agent has its own w.
    """
    ordered: list[str] = []
    for config in configs:
        ordered.extend(k for k in config if k not in ordered and not _is_ignored(k))
    candidates = [
        key
        for key in ordered
        if len({_canonical(config.get(key)) for config in configs}) > 1
    ]
    candidates.sort(key=lambda key: not key.endswith(".name"))
    kept: list[str] = []
    for key in candidates:
        if len(_partition(configs, kept + [key])) > len(_partition(configs, kept)):
            kept.append(key)
    return kept


def _label(config: Mapping[str, Any], keys: Sequence[str]) -> str:
    parts = []
    for key in keys:
        value = config.get(key)
        parts.append(f"{_display(key)}={value if isinstance(value, str) else _canonical(value)}")
    return " ".join(parts)


def group_runs(
    configs: Mapping[Path, Mapping[str, Any]], keys: Sequence[str] | None = None
) -> dict[str, list[Path]]:
    """Group runs by config keys; return {readable label: runs}, sorted by label.

    `keys` defaults to `differing_keys`; a key may be given without its `.name` suffix
    (`agent` for `agent.name`). When no key tells the runs apart, the single group is
    labelled "all runs". Raises PlotError for a key no run has.
    """
    runs = list(configs)
    flat = [configs[run] for run in runs]
    if keys is None:
        keys = differing_keys(flat)
    else:
        keys = [_resolve_key(key, flat) for key in keys]
    groups: dict[str, list[Path]] = {}
    for run, config in zip(runs, flat):
        groups.setdefault(_label(config, keys) or "all runs", []).append(run)
    return dict(sorted(groups.items()))


def _resolve_key(key: str, configs: Sequence[Mapping[str, Any]]) -> str:
    for candidate in (key, f"{key}.name"):
        if any(candidate in config for config in configs):
            return candidate
    known = sorted({k for config in configs for k in config if not _is_ignored(k)})
    raise PlotError(f"--group-by {key}: no run has this key; keys: {', '.join(known)}")


def shared_context(configs: Sequence[Mapping[str, Any]]) -> str:
    """Label the CONTEXT_KEYS settings that all runs share, e.g. `env=smax env.map_name=3m`."""
    keys = [
        key
        for key in CONTEXT_KEYS
        if key in configs[0] and len({_canonical(c.get(key)) for c in configs}) == 1
    ]
    return _label(configs[0], keys)


def align(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Interpolate seeds onto one step grid: returns (grid [steps], values [seeds, steps]).

    The grid is the union of the seeds' steps inside the range all seeds cover; it is
    empty when the seeds' ranges do not overlap.
    """
    start = max(steps[0] for steps, _ in curves)
    stop = min(steps[-1] for steps, _ in curves)
    grid = np.unique(np.concatenate([steps for steps, _ in curves]))
    grid = grid[(grid >= start) & (grid <= stop)]
    values = np.stack([np.interp(grid, steps, vals) for steps, vals in curves])
    return grid, values


def format_steps(x: float, _pos: int | None = None) -> str:
    """Tick label for environment steps: 0, 500, 1.5k, 20k, 1M, 2.5M."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.0f}"


def plot_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, int]],
    metric: str,
    out: Path,
    title: str | None,
) -> None:
    """Draw {label: (grid, values [seeds, steps], n_seeds)} as mean lines with CI bands."""
    figure = Figure(figsize=(8, 5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for label, (grid, values, n_seeds) in curves.items():
        mean = values.mean(axis=0)
        low, high = bootstrap_ci(values)
        (line,) = axes.plot(
            grid, mean, linewidth=2, marker="o" if grid.size == 1 else None,
            label=f"{label} (n={n_seeds})",
        )
        axes.fill_between(grid, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    axes.set_xlabel("environment steps", fontsize=12)
    axes.set_ylabel(metric, fontsize=12)
    axes.xaxis.set_major_formatter(FuncFormatter(format_steps))
    axes.tick_params(labelsize=10)
    axes.grid(True, alpha=0.3)
    if title:
        axes.set_title(title, fontsize=13)
    if curves:
        axes.legend(fontsize=10, framealpha=0.9)
    figure.tight_layout()
    figure.savefig(out, dpi=150)


def summarise(label: str, finals: Sequence[tuple[int, float]]) -> GroupSummary:
    """Summarise a group from each seed's (last step, last value)."""
    final_values = np.array([value for _, value in finals], dtype=np.float64)
    low, high = bootstrap_ci(final_values[:, None])
    return GroupSummary(
        group=label,
        n_seeds=len(finals),
        # The shortest seed's last step: a seed that stopped early shows here.
        final_step=min(step for step, _ in finals),
        final_mean=float(final_values.mean()),
        ci_low=float(low[0]),
        ci_high=float(high[0]),
    )


def write_csv(rows: Sequence[GroupSummary], path: Path) -> None:
    """Write the summary rows; floats keep their full precision."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["group", "n_seeds", "final_step", "final_mean", "ci_low", "ci_high"])
        for row in rows:
            writer.writerow(
                [row.group, row.n_seeds, row.final_step,
                 repr(row.final_mean), repr(row.ci_low), repr(row.ci_high)]
            )


def format_table(rows: Sequence[GroupSummary]) -> str:
    """The summary rows as an aligned plain-text table."""
    header = ["group", "n_seeds", "final_step", "final_mean", "ci_low", "ci_high"]
    cells = [header] + [
        [r.group, str(r.n_seeds), format_steps(r.final_step),
         f"{r.final_mean:.4g}", f"{r.ci_low:.4g}", f"{r.ci_high:.4g}"]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                  for i, (cell, w) in enumerate(zip(row, widths)))
        for row in cells
    ]
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _Parser(
        prog=PROG,
        description="Plot learning curves (mean over seeds, 95% bootstrap band) of "
        "wqmix runs, and write the final values to a CSV.",
    )
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR",
                        help="run folders or folders holding them (searched recursively)")
    parser.add_argument("--metric", default="test/return_mean",
                        help="TensorBoard scalar tag (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("curves.png"),
                        help="figure path (default: %(default)s)")
    parser.add_argument("--csv", type=Path, default=None,
                        help="summary CSV path (default: the --out path with .csv)")
    parser.add_argument("--group-by", nargs="+", default=None, metavar="KEY",
                        help="config keys to group by (default: the keys that differ "
                        "between runs, seed excluded)")
    parser.add_argument("--title", default=None,
                        help="figure title (default: the environment and agent settings "
                        "all runs share; '' for none)")
    return parser.parse_args(argv)


def _run(args: argparse.Namespace) -> int:
    formats = sorted(FigureCanvasAgg(Figure()).get_supported_filetypes())
    if args.out.suffix[1:].lower() not in formats:
        raise PlotError(f"--out {args.out}: not a figure format matplotlib writes; allowed endings: {', '.join(formats)}")
    runs = find_runs(args.dirs)
    if not runs:
        raise PlotError(
            "no run folders (with tb/ and .hydra/config.yaml) found under "
            + ", ".join(str(d) for d in args.dirs)
        )
    data = {run: read_scalars(run, args.metric) for run in runs}
    with_metric = [run for run in runs if data[run][0].size]
    if not with_metric:
        tags = sorted({tag for run in runs for tag in scalar_tags(run)})
        raise PlotError(
            f"metric {args.metric!r} is in none of the {len(runs)} runs; "
            f"tags found: {', '.join(tags) or 'none'}"
        )
    for run in runs:
        if run not in with_metric:
            print(f"{PROG}: skipping {run}: no {args.metric!r}", file=sys.stderr)

    configs = {run: read_config(run) for run in with_metric}
    groups = group_runs(configs, args.group_by)
    curves: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
    rows = []
    for label, members in groups.items():
        grid, values = align([data[run] for run in members])
        if grid.size:
            curves[label] = (grid, values, len(members))
        else:
            print(f"{PROG}: {label}: the seeds' step ranges do not overlap; no curve",
                  file=sys.stderr)
        rows.append(summarise(label, [(int(data[r][0][-1]), float(data[r][1][-1]))
                                      for r in members]))

    title = args.title if args.title is not None else shared_context(list(configs.values()))
    csv_path = args.csv or args.out.with_suffix(".csv")
    for flag, path, write in (("--out", args.out, lambda: plot_curves(curves, args.metric, args.out, title)),
                              ("--csv", csv_path, lambda: write_csv(rows, csv_path))):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write()
        except OSError as err:
            raise PlotError(f"{flag} {path}: cannot write it ({err.strerror or err})") from None
    print(format_table(rows))
    print(f"wrote {args.out} and {csv_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `wqmix plot`; returns the exit code (0 done, 2 bad input)."""
    try:
        args = _parse_args(argv)
    except SystemExit as exit_:  # --help or a usage error: argparse already printed
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        return _run(args)
    except PlotError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
