"""Checkpoints that are complete or absent: written to a hidden folder, then renamed.

``checkpoints/<t_env>/state.pt`` (networks, targets, optimiser, counters, RNG states),
optionally ``buffer.pt.gz`` (the replay buffer, gzip level 1: padding and dead agents'
zeros compress well); ``checkpoints/latest`` is a text file naming the newest
complete one, replaced atomically after the folder is in place.
"""
from __future__ import annotations

import dataclasses
import gzip
import io
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch

from wqmix_cli.envs.base import EnvInfo

BUFFER_FILE = "buffer.pt.gz"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message is one line."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(obj: Any, path: Path, compress: bool = False) -> None:
    with open(path, "wb") as fh:
        if compress:
            raw = io.BytesIO()
            torch.save(obj, raw)
            fh.write(gzip.compress(raw.getbuffer(), compresslevel=1))
        else:
            torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())


def save_checkpoint(root: Path, t_env: int, state: dict, buffer: dict | None = None, keep: int = 3) -> Path:
    """Write checkpoint ``root/<t_env>`` and point ``root/latest`` at it; keep the newest ``keep``."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / str(t_env)
    tmp = root / f".{t_env}.tmp"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        _write(state, tmp / "state.pt")
        if buffer is not None:
            _write(buffer, tmp / BUFFER_FILE, compress=True)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        pointer = root / ".latest.tmp"
        pointer.write_text(f"{t_env}\n")
        os.replace(pointer, root / "latest")
        _fsync_dir(root)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"could not write checkpoint {final}: {err.strerror or err}") from None
    for old in sorted(list_checkpoints(root), key=lambda p: int(p.name))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """The complete checkpoint folders under ``root``."""
    if not root.is_dir():
        return []
    return [p for p in root.iterdir() if p.is_dir() and p.name.isdigit() and (p / "state.pt").is_file()]


def latest_checkpoint(path: Path) -> Path | None:
    """The newest complete checkpoint for a run folder, a checkpoints folder, a ``latest``
    file or a checkpoint folder itself; None if there is none."""
    path = Path(path)
    if (path / "state.pt").is_file():
        return path
    if path.name == "latest" and path.is_file():
        path = path.parent
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    pointer = root / "latest"
    if pointer.is_file():
        named = root / pointer.read_text().strip()
        if (named / "state.pt").is_file():
            return named
    found = sorted(list_checkpoints(root), key=lambda p: int(p.name))
    return found[-1] if found else None


def load_checkpoint(folder: Path, with_buffer: bool = False) -> tuple[dict, dict | None]:
    """``(state, buffer or None)`` from a checkpoint folder."""
    try:
        state = torch.load(folder / "state.pt", map_location="cpu", weights_only=False)
        buffer_file = folder / BUFFER_FILE
        buffer = None
        if with_buffer and buffer_file.is_file():
            raw = io.BytesIO(gzip.decompress(buffer_file.read_bytes()))
            buffer = torch.load(raw, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, gzip.BadGzipFile) as err:
        raise CheckpointError(f"could not read checkpoint {folder}: {err}".splitlines()[0]) from None
    return state, buffer


def env_size_mismatch(saved: EnvInfo, current: EnvInfo) -> str | None:
    """A one-line description when a checkpoint's env sizes differ from this env's, else None."""
    if saved == current:
        return None
    return (f"the checkpoint was made for env sizes {dataclasses.asdict(saved)}, "
            f"but this env has {dataclasses.asdict(current)}")
