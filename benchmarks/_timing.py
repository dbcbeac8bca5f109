"""Interleaved timing: ours and the peer in one process, alternating, so a noisy machine slows both alike."""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                device: torch.device | str = "cpu", min_round_seconds: float = 0.0) -> dict[str, float]:
    """Run each function ``warmup`` times, then ``repeats`` rounds in turn (the order alternates every round).
    Returns each function's median seconds per call. ``min_round_seconds``: see :func:`interleaved_rounds`."""
    rounds = interleaved_rounds(fns, repeats, warmup, device, min_round_seconds)
    return {n: statistics.median(v) for n, v in rounds.items()}


def calls_per_round(fns: dict[str, Callable[[], object]], min_round_seconds: float,
                    device: torch.device | str = "cpu", last_seconds: dict[str, float] | None = None) -> int:
    """How many calls one round makes so that the fastest function's round lasts at least ``min_round_seconds``
    (as timeit's autorange does), from one probe call each after the warm-up. 1 when ``min_round_seconds`` <= 0,
    and, without a probe, when every function's ``last_seconds`` (its last warm-up call) already reached it."""
    if min_round_seconds <= 0:
        return 1
    if last_seconds and min(last_seconds.values()) >= min_round_seconds:
        return 1
    fastest = float("inf")
    for fn in fns.values():
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        fastest = min(fastest, time.perf_counter() - t0)
    return max(1, math.ceil(min_round_seconds / max(fastest, 1e-9)))


def interleaved_rounds(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                       device: torch.device | str = "cpu", min_round_seconds: float = 0.0) -> dict[str, list[float]]:
    """As :func:`interleaved`, but returns every round's seconds per call for each function (index r: round r), so
    a ratio can be taken round by round, between calls made moments apart.

    A round is one call per function, or, with ``min_round_seconds`` > 0, the same number of back-to-back calls per
    function (:func:`calls_per_round`), so that a call of a tenth of a second is not timed alone; the round's time
    is divided by that number."""
    names = list(fns)
    last: dict[str, float] = {}
    for _ in range(warmup):
        for n in names:
            sync(device)
            t0 = time.perf_counter()
            fns[n]()
            sync(device)
            last[n] = time.perf_counter() - t0
    per_round = calls_per_round(fns, min_round_seconds, device, last)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names if r % 2 == 0 else reversed(names):
            sync(device)
            t0 = time.perf_counter()
            for _ in range(per_round):
                fns[n]()
            sync(device)
            times[n].append((time.perf_counter() - t0) / per_round)
    return times


def ratio_spread(ours: list[float], peer: list[float]) -> tuple[float, float, float]:
    """Speed ratio ours / peer (peer seconds over ours) of each round: (median, lowest, highest)."""
    ratios = [p / o for o, p in zip(ours, peer)]
    return statistics.median(ratios), min(ratios), max(ratios)


def _preloaded_allocator() -> tuple[str, str] | None:
    """(name, path) of jemalloc, tcmalloc or mimalloc when this process has one mapped (as ``LD_PRELOAD`` does)."""
    try:
        maps = open("/proc/self/maps").read().splitlines()
    except OSError:
        return None
    for lib in ("jemalloc", "tcmalloc", "mimalloc"):
        for line in maps:
            path = line.split()[-1]
            if f"/lib{lib}" in path:
                return lib, path
    return None


def allocator() -> tuple[str, str, str]:
    """The heap allocator of this process: (label for a table's header, suffix for a results file name, environment
    prefix for the table's Command line). jemalloc, tcmalloc or mimalloc when one is mapped, with ``MALLOC_CONF``
    if set, e.g. ("jemalloc (MALLOC_CONF=...)", "_jemalloc", "LD_PRELOAD=/usr/lib/.../libjemalloc.so.2
    MALLOC_CONF=... "); else ("glibc malloc", "", ""). Both sides of an interleaved comparison share it; on a CPU it
    moves throughput by tens of percent (large activations mapped and unmapped every step), so a table names it."""
    found = _preloaded_allocator()
    if found is None:
        return ("glibc malloc" if platform.libc_ver()[0] == "glibc" else "the C library's malloc"), "", ""
    name, path = found
    conf = os.environ.get("MALLOC_CONF")
    label = name + (f" (MALLOC_CONF={conf})" if conf else "")
    return label, f"_{name}", f"LD_PRELOAD={path} " + (f"MALLOC_CONF={conf} " if conf else "")


def threads_suffix(device: torch.device | str = "cpu") -> str:
    """Suffix for a results file name measured on more than one CPU thread (e.g. "_2threads"); "" at one thread
    and on CUDA. A table at one thread and one at every core are different measurements and keep separate files."""
    n = torch.get_num_threads()
    return "" if torch.device(device).type == "cuda" or n == 1 else f"_{n}threads"


def machine(device: torch.device | str = "cpu") -> str:
    """One line naming what the figures were measured on."""
    device = torch.device(device)
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        cpu = platform.processor() or platform.machine()
        try:
            for line in open("/proc/cpuinfo"):
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        where = f"{cpu}, {torch.get_num_threads()} thread(s) of {os.cpu_count()} cores"
    return f"{where}; torch {torch.__version__}"


def proc_status_bytes(field: str) -> int:
    """A memory field of this process's /proc/self/status in bytes (Linux): ``VmRSS`` (resident now), ``VmHWM``
    (the resident set's peak so far)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_growth(fn: Callable[[], object], calls: int = 3) -> int:
    """Bytes by which the resident set's peak (VmHWM) rises over ``calls`` calls of ``fn``, above the resident set
    (VmRSS) before them: what the calls allocate on top of what is already built (model, data). Meant for a fresh
    process (:func:`subprocess_peak_mib`). Freed heap is first handed back to the system (glibc's ``malloc_trim``)
    and the peak reset to the current resident set (Linux's ``/proc/self/clear_refs``, "5"), so that building the
    model and data -- SAM's image encoding before its clicks are measured -- counts neither as peak nor as free
    memory the calls reuse unseen; where either is unavailable, that step is skipped."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    base = proc_status_bytes("VmRSS")
    for _ in range(calls):
        fn()
    return proc_status_bytes("VmHWM") - base


def subprocess_peak_mib(cmd: list[str]) -> float:
    """MiB: run ``cmd`` (a benchmark re-invoking itself in a child mode that prints ``{"peak": bytes}`` as its last
    line, e.g. from :func:`peak_growth`) in a fresh process and return that peak."""
    import json
    import subprocess

    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak"] / 2**20
