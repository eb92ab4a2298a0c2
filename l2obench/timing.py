"""Timing ``solve``: warmed up, synchronised, batched and per instance, and at growing iteration budgets.

``budget_seconds`` gives a trajectory its measured wall-clock axis the way
benchopt does: the batch is solved again with the solver stopped after ``t``
iterations (``truncated``) for a handful of ``t``, each timed.
"""
from __future__ import annotations

import copy
import os
import platform
import statistics
import time
from functools import lru_cache
from typing import Any, Mapping, Sequence

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
    return _rounds(solvers, instances.observation(), device, repeats, warmup=1)[0]


def budget_seconds(solvers: Sequence[Any], instances: Instances, device: torch.device, allowance: float,
                   max_repeats: int = 5, min_repeats: int = 3) -> tuple[list[float], list[Solution]]:
    """Median seconds of each solver's batched solve of ``instances``, timed in turn as
    ``interleaved_seconds`` does, in as many rounds as fit in ``allowance`` seconds (at least
    ``min_repeats``, so that the median sets one disturbed timing aside; at most ``max_repeats``),
    with no warm-up round: the solvers must be warm already (e.g. copies of one that has just
    solved, see ``truncated``). Spends at most ``max(allowance, min_repeats rounds)``.

    Returns
    -------
    seconds : list of float
        Each solver's median.
    solutions : list of Solution
        Each solver's solution from the last round.
    """
    return _rounds(solvers, instances.observation(), device, max_repeats, warmup=0, allowance=allowance,
                   min_repeats=min_repeats)


def _rounds(solvers: Sequence[Any], observation: Mapping[str, Any], device: torch.device, repeats: int,
            warmup: int, allowance: float | None = None, min_repeats: int = 1) -> tuple[list[float], list[Solution]]:
    times: list[list[float]] = [[] for _ in solvers]
    last: list[Any] = [None] * len(solvers)
    spent, round_ = 0.0, 0
    with torch.no_grad():
        while round_ < warmup + repeats:
            begin = time.perf_counter()
            for i, solver in enumerate(solvers):
                synchronize(device)
                start = time.perf_counter()
                last[i] = solver.solve(observation)
                synchronize(device)
                if round_ >= warmup:
                    times[i].append(time.perf_counter() - start)
            spent += time.perf_counter() - begin
            round_ += 1
            if allowance is not None and round_ >= warmup + min_repeats and spent + spent / round_ > allowance:
                break  # the next round would not fit
    return [statistics.median(seconds) for seconds in times], last


class _FirstLayers:
    """A learned solver's first ``depth`` layers (``LearnedSolver.forward(..., depth=depth)``)."""

    def __init__(self, solver, depth: int):
        self.solver, self.depth = solver, depth

    def solve(self, observation, trajectory: bool = False) -> Solution:
        with torch.no_grad():
            return Solution(self.solver.forward(observation, keep_all=False, depth=self.depth)[-1])


def truncated(solver: Solver, iterations: int):
    """``solver`` stopped after at most ``iterations`` iterations (layers), or None if it has no way.

    In order: the solver's own ``truncated(iterations)``; the first
    ``iterations`` layers of a learned solver (its ``forward``'s ``depth``); a
    copy of a classical solver with its iteration-count hyper-parameter
    (``l2obench.probes.K_PARAMS``: ``k``, ``max_iter``, ...) set to ``iterations``.
    What is returned has ``solve(observation)``. Whether its estimate is the
    solver's trajectory at ``iterations`` is for the caller to check: a
    ``forward`` may ignore ``depth``, a ``max_iter`` may count other steps.
    """
    from l2obench.learned import LearnedSolver
    from l2obench.probes import K_PARAMS

    own = getattr(solver, "truncated", None)
    if callable(own):
        return own(int(iterations))
    if isinstance(solver, LearnedSolver):
        return _FirstLayers(solver, int(iterations))
    name = next((k for k in K_PARAMS if k in getattr(solver, "_param_names", ())), None)
    return None if name is None else copy.copy(solver).set_params(**{name: int(iterations)})


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
