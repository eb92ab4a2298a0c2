"""How many torch and BLAS threads a worker uses, and how idle threads wait.

The policy, in one place:

* A worker is the process (or, on Dask, the worker thread) that computes
  cells. On one machine, ``workers x threads`` never exceeds the cores this
  process is given (``os.sched_getaffinity``, which honours ``taskset`` and
  Slurm's CPU binding; a cgroup CPU quota is not seen): each of ``-j N``
  workers gets ``max(1, cores // N)`` threads, unless ``--threads`` says
  otherwise. The serial run keeps torch's own default (one thread per
  physical core) unless ``--threads`` is given.
* Idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``,
  unless the environment sets it) in every worker process l2obench starts, and
  in a serial ``l2obench run`` when the machine is busy as it starts (other
  processes keep at least ``BUSY_CORES`` of a core busy over ``BUSY_SAMPLE``
  seconds, measured with psutil; the load average is no measure of this: on
  the project's idle 2-core VM it stays at 0.5-1.0, counting tasks in
  uninterruptible sleep). Spinning threads that compete with
  another busy process for the cores made 20 batched ``eigh`` 13x slower on a
  2-core machine (17.9 s against 1.35 s with one thread; 1.56 s with two
  passive threads), and a LISTA training step 3x slower (196 ms against 55-70
  quiet); but on a quiet machine passive threads make that step 1.5-2x slower
  (105-111 ms), so a serial run on a quiet machine keeps OpenMP's default.
  libgomp reads the variable once, when torch is first imported, so it is set
  before that.
* Dask workers: a ``dask-local`` cluster's worker processes get the same
  environment through their nanny. Workers of an existing cluster keep the
  environment they were started with (Dask's nanny sets ``OMP_NUM_THREADS=1``
  by default), and each cell sets torch's threads to ``--threads`` or 1, as
  a Dask worker runs one cell per worker thread and its threads fill its
  cores.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator

__all__ = ["BUSY_CORES", "BUSY_SAMPLE", "THREAD_VARS", "WAIT_POLICY", "apply", "applied", "available_cores", "busy",
           "passive_wait", "passive_wait_if_busy", "threads_per_worker", "worker_environment"]

# Variables that size the thread pools of OpenMP (torch's intra-op pool), MKL and OpenBLAS.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
WAIT_POLICY = ("OMP_WAIT_POLICY", "PASSIVE")
# Busy: other processes used at least half a core, on average over a sample of this many seconds.
BUSY_CORES = 0.5
BUSY_SAMPLE = 0.5


def available_cores() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def threads_per_worker(workers: int, threads: int | None = None, cores: int | None = None) -> int:
    """Threads for each of ``workers`` workers sharing ``cores`` (default: ``available_cores()``).

    ``threads`` (``--threads``) wins when given; otherwise ``max(1, cores // workers)``.
    """
    if threads is not None:
        return threads
    return max(1, (cores or available_cores()) // max(1, workers))


def worker_environment(threads: int) -> dict[str, str]:
    """Environment of a worker process started by l2obench: its thread counts and a passive wait
    (an ``OMP_WAIT_POLICY`` already set in this process's environment is kept)."""
    name, value = WAIT_POLICY
    return {**{var: str(threads) for var in THREAD_VARS}, name: os.environ.get(name, value)}


def passive_wait() -> None:
    """Let idle OpenMP threads sleep in this process, unless ``OMP_WAIT_POLICY`` is set (effective
    only before torch is first imported)."""
    os.environ.setdefault(*WAIT_POLICY)


def busy_cores(sample: float = BUSY_SAMPLE) -> float:
    """Cores kept busy by all processes over the next ``sample`` seconds, while this one sleeps
    (``psutil.cpu_percent``: time not idle and not waiting for I/O)."""
    import psutil

    return psutil.cpu_percent(interval=sample) / 100 * (psutil.cpu_count() or 1)


def busy() -> bool:
    """Whether other processes keep at least ``BUSY_CORES`` of a core busy now."""
    return busy_cores() >= BUSY_CORES


def passive_wait_if_busy() -> None:
    """``passive_wait()`` when the machine is ``busy()`` (not sampled where ``OMP_WAIT_POLICY``
    is set already)."""
    if WAIT_POLICY[0] not in os.environ and busy():
        passive_wait()


def apply(threads: int | None, passive: bool = False) -> None:
    """Use ``threads`` torch and BLAS threads in this process (None: leave them as they are), idle
    threads waiting passively if ``passive`` (worker processes). Environment variables take effect
    only where torch is not imported yet; ``torch.set_num_threads`` always does."""
    if passive:
        passive_wait()
    if threads is None:
        return
    if "torch" not in sys.modules:
        os.environ.update({var: str(threads) for var in THREAD_VARS})
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@contextmanager
def applied(threads: int | None) -> Iterator[None]:
    """``apply(threads)`` for the block, then torch's previous thread count again."""
    import torch

    previous = torch.get_num_threads()
    apply(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
