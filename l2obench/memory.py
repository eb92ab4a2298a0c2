"""Absurd problem sizes refused at planning, by an estimate of the memory their data need.

A problem family estimates, in ``ProblemFamily.memory_bytes``, the bytes of the
tensors one seed's data hold at once: every split and the shared tensors, as
``l2obench.data.make_splits`` keeps them, counted at the dtype they are drawn in.
The estimate is a lower bound: it leaves out the temporaries of drawing the
data, the solver's iterates and the model, so a setting it refuses could not
have run, and one it lets through may still run out of memory later.

Planning (``l2obench.suites.plan``) refuses a setting whose estimate exceeds
the memory available when the run starts (``psutil.virtual_memory().available``,
else ``MemAvailable`` of ``/proc/meminfo``; unknown: not checked), or the limit
in the environment variable ``L2OBENCH_MEMORY`` (bytes, or a number with a
suffix ``K``, ``M``, ``G``, ``T``, powers of 1024) where the cells run on other
machines than the one planning them (a Dask cluster, Slurm nodes).
"""
from __future__ import annotations

import os
import re

from l2obench.errors import UsageError

__all__ = ["ENV_VAR", "available_bytes", "check_memory", "format_bytes"]

ENV_VAR = "L2OBENCH_MEMORY"
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def format_bytes(n: float) -> str:
    """``n`` bytes in the largest binary unit under it, e.g. ``"7.3 TiB"``."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        size = 2 ** (10 * ("KMGT".index(unit[0]) + 1))
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def _limit_from_env() -> int | None:
    text = os.environ.get(ENV_VAR, "").strip()
    if not text:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", text, flags=re.IGNORECASE)
    if not match:
        raise UsageError(f"{ENV_VAR} must be a size in bytes, e.g. 64G or 500M, got {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def available_bytes() -> int | None:
    """Memory the data may take: ``$L2OBENCH_MEMORY`` if set, else what the system has available now
    (``None`` where it cannot tell)."""
    limit = _limit_from_env()
    if limit is not None:
        return limit
    try:
        import psutil
    except ImportError:
        try:
            with open("/proc/meminfo") as f:
                kib = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        except (OSError, StopIteration, ValueError, IndexError):
            return None
        return kib * 1024
    return int(psutil.virtual_memory().available)


def check_memory(family, available: int | None = None) -> None:
    """Refuse ``family`` (a built ``ProblemFamily``) if its data cannot fit in memory.

    Parameters
    ----------
    family : ProblemFamily
        Its ``memory_bytes()`` (``None``: no estimate, not checked) is compared with ``available``.
    available : int, optional
        Bytes available; default ``available_bytes()``.

    Raises
    ------
    ValueError
        Giving the estimate and the memory available (planning reports it with the suite entry).
    """
    estimate = family.memory_bytes()
    if estimate is None:
        return
    available = available_bytes() if available is None else available
    if available is not None and estimate > available:
        source = f"${ENV_VAR}" if _limit_from_env() is not None else "available on this machine"
        raise ValueError(f"these sizes need at least {format_bytes(estimate)} for the data of one seed "
                         f"(an estimate), more than the {format_bytes(available)} {source}; reduce them, or set "
                         f"{ENV_VAR} where the cells run on larger machines")
