"""A time limit per cell: ``--cell-timeout``.

The limit is a ``SIGALRM`` timer (``signal.setitimer``) whose handler raises
``CellTimeout`` in the main thread, wherever Python code is running then: a
solver looping in Python is stopped at once, while a hang inside one C call
(one huge matrix product, a blocking read) is only interrupted when that call
returns. ``CellTimeout`` derives from ``BaseException``, so that a plugin's
``except Exception`` does not swallow it. Off the main thread, or where
``setitimer`` does not exist, no limit is applied (with a warning).
"""
from __future__ import annotations

import signal
import threading
import time
import warnings
from contextlib import contextmanager
from typing import Iterator

__all__ = ["DEFAULT_CELL_TIMEOUT", "CellTimeout", "time_limit"]

# Seconds a cell may run at each scale unless --cell-timeout says otherwise; None: no limit.
# Smoke cells take seconds and small cells minutes on a 2-core CPU (the slowest, RNN's training, took
# 53 s quiet and 590 s next to a CPU-bound process); paper-scale training may take hours on a GPU.
DEFAULT_CELL_TIMEOUT = {"smoke": 600.0, "small": 3600.0, "paper": None}


class CellTimeout(BaseException):
    """Raised by ``time_limit`` when a cell runs past its limit; the runner records the cell as ``timeout``."""


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise ``CellTimeout`` in the block once it has run for ``seconds`` (None or 0: no limit).

    The previous ``SIGALRM`` handler is restored afterwards, and a timer that
    was running before is set again for the time it had left.
    """
    if not seconds:
        yield
        return
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        warnings.warn(f"no time limit of {seconds:g} s applied: SIGALRM timers need the main thread of a POSIX "
                      "process", RuntimeWarning, stacklevel=3)
        yield
        return

    def expire(signum, frame):
        raise CellTimeout(f"the cell ran past its time limit of {seconds:g} s (--cell-timeout)")

    previous = signal.signal(signal.SIGALRM, expire)
    start = time.monotonic()
    outer, interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - start), 1e-3), interval)
