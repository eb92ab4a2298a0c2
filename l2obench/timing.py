"""Timing ``solve``: warmed up, synchronised, batched and per instance."""
from __future__ import annotations

import os
import platform
import statistics
import time
from functools import lru_cache
from typing import Sequence

import torch

from l2obench.contracts import Instances, Solution, Solver


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is an error."""
    from l2obench.errors import UsageError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda requested but torch sees no CUDA device")
    if name != "cpu" and not name.startswith("cuda"):
        raise UsageError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


@lru_cache(maxsize=None)
def describe_device(device: torch.device) -> str:
    """Human-readable device, recorded with every timing."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"cpu ({model}; {torch.get_num_threads()} threads of {os.cpu_count()} cores)"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_solve(solver: Solver, instances: Instances, device: torch.device,
                warmup: int = 8) -> tuple[Solution, float]:
    """Solve all ``instances`` in one batch after a warm-up on a few of them.

    Returns the solution and the wall-clock seconds of the batched solve.
    """
    with torch.no_grad():
        solver.solve(instances.subset(slice(0, warmup)).observation())
        synchronize(device)
        start = time.perf_counter()
        solution = solver.solve(instances.observation())
        synchronize(device)
    return solution, time.perf_counter() - start


def interleaved_seconds(solvers: Sequence[Solver], instances: Instances, device: torch.device,
                        repeats: int = 5) -> list[float]:
    """Median seconds of each solver's batched solve of ``instances``, the solvers timed in turn
    ``repeats`` times (after one warm-up round), so that a change of load on a shared machine
    affects every solver alike: for ratios such as the time early stopping saves."""
    observation = instances.observation()
    times: list[list[float]] = [[] for _ in solvers]
    with torch.no_grad():
        for round_ in range(repeats + 1):
            for solver, seconds in zip(solvers, times):
                synchronize(device)
                start = time.perf_counter()
                solver.solve(observation)
                synchronize(device)
                if round_:
                    seconds.append(time.perf_counter() - start)
    return [statistics.median(seconds) for seconds in times]


def single_instance_latency(solver: Solver, instances: Instances, device: torch.device,
                            repeats: int = 5) -> float:
    """Median seconds to solve one instance alone (after a warm-up)."""
    one = instances.subset(slice(0, 1)).observation()
    times = []
    with torch.no_grad():
        solver.solve(one)
        for _ in range(repeats):
            synchronize(device)
            start = time.perf_counter()
            solver.solve(one)
            synchronize(device)
            times.append(time.perf_counter() - start)
    return statistics.median(times)
