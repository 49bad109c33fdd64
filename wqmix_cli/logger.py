"""TensorBoard scalars (and the enabled trackers), a console progress bar, and ``train.log`` lines."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from wqmix_cli.config import LoggerConfig
from wqmix_cli.trackers import open_trackers

log = logging.getLogger("wqmix")


def _after_earlier_event_files(tb: Path) -> None:
    """Wait until the clock has left the second of the newest event file in ``tb``.

    TensorBoard reads a run's event files in name order, and a name is
    ``events.out.tfevents.<second>.<host>.<pid>.<counter>``: a resume in the same second and
    process as the last file (tests do that) could sort before it, and its purge of the
    steps after the checkpoint then hid the earlier steps instead."""
    stamps = [int(part[3]) for part in (f.name.split(".") for f in tb.glob("events.out.tfevents.*"))
              if len(part) > 3 and part[3].isdigit()]
    while stamps and time.time() < max(stamps) + 1:
        time.sleep(0.05)


class RunLogger:
    """Writes scalars against environment steps to TensorBoard and the enabled trackers.

    ``start_step`` > 0 (a resumed run, whose checkpoint holds everything logged up to and
    including that step) hides events after it in earlier files from TensorBoard, so a
    resumed curve has neither repeated nor missing steps; the trackers continue the run
    they began in ``run_dir``. ``run_config`` (a plain dict) is logged to a new tracker run.
    """

    def __init__(
        self,
        run_dir: Path,
        t_max: int,
        start_step: int = 0,
        progress: bool | None = None,
        trackers: LoggerConfig | None = None,
        run_config: dict[str, Any] | None = None,
    ) -> None:
        self.trackers = open_trackers(trackers or LoggerConfig(), run_dir, run_config or {}, start_step > 0)
        if start_step:
            _after_earlier_event_files(run_dir / "tb")
        self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=start_step + 1 if start_step else None)
        self.bar = tqdm(
            total=t_max, initial=start_step, unit="step", unit_scale=True, dynamic_ncols=True,
            disable=None if progress is None else not progress,
        )
        self._last_t, self._last_time = start_step, time.perf_counter()

    def scalars(self, values: dict[str, float], t_env: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, t_env)
        for tracker in self.trackers:
            tracker.log(values, t_env)

    def progress(self, t_env: int, **shown: float) -> None:
        """Advance the bar to ``t_env``; ``shown`` goes in its postfix."""
        self.bar.update(t_env - self.bar.n)
        self.bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()}, refresh=False)

    def steps_per_second(self, t_env: int) -> float:
        """Env steps per second since the last call."""
        now = time.perf_counter()
        rate = (t_env - self._last_t) / max(now - self._last_time, 1e-9)
        self._last_t, self._last_time = t_env, now
        return rate

    def close(self) -> None:
        self.bar.close()
        self.writer.flush()
        self.writer.close()
        for tracker in self.trackers:
            tracker.close()
