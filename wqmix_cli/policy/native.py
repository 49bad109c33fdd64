"""Build and load ``gru_kernel.c`` (the learner's GRU over whole sequences and the actor's
whole step) with the system C compiler.

The library is compiled once per source, compiler and CPU (``-march=native``) into
``$WQMIX_CACHE_DIR`` (default ``~/.cache/wqmix``) and loaded with ``ctypes``; compiling
takes about a second. Where there is no compiler, or ``WQMIX_NATIVE_GRU=0``, ``gru_kernel()``
returns None and the learner runs each agent's own ``nn.GRU`` instead, and the actor its
torch step (same values, slower on the CPU).
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("gru_kernel.c")
FLAGS = ("-O3", "-march=native", "-ffast-math", "-fopenmp-simd", "-fPIC", "-shared", "-pthread")

_LONG, _PTR = ctypes.c_long, ctypes.c_void_p


class ActorStep(ctypes.Structure):
    """``gru_kernel.c``'s ``ActorStep``: the actor's sizes, weights and buffers, which the
    caller keeps alive and sets once per episode, plus the per-step draws and epsilon."""

    _fields_ = [(name, _LONG) for name in ("R", "N", "O", "A", "H")] + [
        (name, _PTR) for name in ("w1t", "b1", "w_iht", "b_ih", "w_hht", "b_hh", "w2", "b2", "hidden", "obs",
                                  "avail", "actions", "draws")
    ] + [("epsilon", ctypes.c_float)]


_SIGNATURES = {
    "gru_forward": [_LONG] * 5 + [_PTR] * 8,
    "gru_backward": [_LONG] * 5 + [_PTR] * 8,
    "actor_step": [ctypes.POINTER(ActorStep)],
}


def pointers(*tensors: torch.Tensor) -> list[int]:
    """The kernel's arrays; the caller keeps the tensors alive while they are used."""
    if not all(t.is_contiguous() and t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors):
        raise RuntimeError("the fused GRU kernel takes contiguous float32 CPU tensors only")
    return [t.data_ptr() for t in tensors]


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "wqmix"
    return Path(os.environ.get("WQMIX_CACHE_DIR", default))


def _cpu_flags() -> str:
    """The CPU's feature flags: a library built with -march=native must not be loaded on
    another CPU model sharing the same home directory."""
    try:
        with open("/proc/cpuinfo") as info:
            return next((line for line in info if line.startswith(("flags", "Features"))), "")
    except OSError:
        return platform.processor()


def _build(compiler: str) -> Path:
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), *FLAGS, version, _cpu_flags()]).encode()).hexdigest()
    target = cache_dir() / f"gru_kernel-{key[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(built), "-lm"],
                       capture_output=True, text=True, check=True)
        os.replace(built, target)  # atomic: parallel runs (sweeps) never load a half-written file
    return target


@functools.cache
def gru_kernel() -> ctypes.CDLL | None:
    """The compiled fused GRU step, or None (with one warning) where it cannot be built."""
    if os.environ.get("WQMIX_NATIVE_GRU", "1") == "0":
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    try:
        if compiler is None:
            raise FileNotFoundError("no C compiler (cc, gcc or clang) on PATH")
        library = ctypes.CDLL(str(_build(compiler)))
    except (OSError, subprocess.CalledProcessError) as error:
        lines = (getattr(error, "stderr", None) or "").strip().splitlines()
        detail = lines[-1] if lines else error
        warnings.warn(f"wqmix: the fused GRU kernel could not be built ({detail}); the learner and the actor "
                      "run PyTorch's nn.GRU instead (same results, slower on the CPU; $CC picks the compiler, "
                      "$WQMIX_CACHE_DIR the folder)", stacklevel=2)
        return None
    for name, argtypes in _SIGNATURES.items():
        function = getattr(library, name)
        function.argtypes, function.restype = argtypes, None
    return library
