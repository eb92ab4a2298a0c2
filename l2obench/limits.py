"""A cell's time limit in any thread: ``SIGALRM`` in a main thread, an asynchronous exception elsewhere.

A process-pool worker runs its cells in its main thread, where
``l2obench.timeout.time_limit`` (a ``SIGALRM`` timer) applies. A Dask worker
runs them in its worker threads, where signals cannot be used: there a timer
thread raises ``CellTimeout`` in the cell's thread with CPython's
``PyThreadState_SetAsyncExc``. Both stop Python code at its next bytecode and
interrupt a call into C (one huge matrix product) only when it returns.
"""
from __future__ import annotations

import ctypes
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

from l2obench.timeout import CellTimeout, time_limit

__all__ = ["cell_time_limit", "thread_time_limit"]


def _set_async_exc(thread_id: int, exc_type: type | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(exc_type) if exc_type else None)


def _timeout_type(seconds: float) -> type[CellTimeout]:
    message = f"the cell ran past its time limit of {seconds:g} s (--cell-timeout)"

    class CellTimeoutInThread(CellTimeout):
        def __init__(self, *args):
            super().__init__(*(args or (message,)))

    CellTimeoutInThread.__name__ = CellTimeoutInThread.__qualname__ = "CellTimeout"
    return CellTimeoutInThread


@contextmanager
def thread_time_limit(seconds: float | None) -> Iterator[None]:
    """Raise ``CellTimeout`` in the calling thread once the block has run for ``seconds`` (None or 0:
    no limit). Once the block is left, no ``CellTimeout`` is raised: a pending one is cancelled."""
    if not seconds:
        yield
        return
    target = threading.get_ident()
    exc_type = _timeout_type(seconds)
    lock = threading.Lock()
    inside = True

    def expire() -> None:
        with lock:
            if inside:
                _set_async_exc(target, exc_type)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        with lock:
            inside = False
            _set_async_exc(target, None)


def cell_time_limit(seconds: float | None):
    """``time_limit`` in the main thread of a POSIX process, ``thread_time_limit`` elsewhere."""
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        return time_limit(seconds)
    return thread_time_limit(seconds)
