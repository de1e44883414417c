"""Measuring: warm-up, interleaved steady-state repeats, the device synchronised inside the timed
region, median and spread (``benchmarks/README.md``, "How speed is measured")."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Dict, List

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_interleaved(fns: Dict[str, Callable[[], Any]], device: torch.device, warmup: int, repeats: int) -> Dict[str, Dict[str, Any]]:
    """Time several callables side by side, in steady state.

    ``repeats`` rounds; each runs every callable once, in an order rotated from round to round,
    and each timed call directly follows an untimed call of the same callable. A callable timed
    right after a different one pays for that one's memory churn (on the CPU, re-faulting pages
    the allocator gave back): a ResNet-18 forward pass timed right after a pytorch-grad-cam call
    measured slower than proxyaug's map computation that contains it. Steady state is also what
    a refresh sees, batch after batch.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    keys = list(fns)
    times: Dict[str, List[float]] = {k: [] for k in keys}
    for r in range(repeats):
        for key in keys[r % len(keys):] + keys[: r % len(keys)]:
            fns[key]()
            times[key].append(_timed(fns[key], device))
    return {k: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t), "repeats": repeats, "peak_mem_bytes": None,
                "timer": timer(device)} for k, t in times.items()}


def timer(device: torch.device) -> str:
    """What the timed region is measured with on ``device``."""
    return "cuda events" if device.type == "cuda" else "perf_counter"


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes: on CUDA between two events recorded on the current stream
    around it (the GPU's own clock, after the queue drained), else wall time."""
    _sync(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000
    start_s = time.perf_counter()
    fn()
    return time.perf_counter() - start_s


def measure(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> Dict[str, Any]:
    """Median and spread of ``repeats`` timed calls of ``fn`` after ``warmup`` calls, with peak memory."""
    for _ in range(warmup):
        fn()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) - base if device.type == "cuda" else None
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats, "peak_mem_bytes": peak}

