"""Progress bars, and other output that does not break them.

Bars are drawn on stderr, only when it is a terminal (tqdm's ``disable=None``, so
logs stay clean) and progress is on (``l2obench run --no-progress`` turns them
off). While bars are drawn, the runner's lines (``above_bars``), Python
warnings, a plugin's included (``warnings_above_bars``), and what ``-j`` workers
wrote to stderr while computing a cell (``stderr_above_bars``, when the cell comes
back) are written above them, and the bars are drawn again below.
"""
from __future__ import annotations

import contextlib
import sys
import warnings
from typing import Callable, Iterator

from tqdm.auto import tqdm


def bar(total: int, desc: str, enabled: bool = True, leave: bool = False, **options) -> tqdm:
    """A progress bar on stderr, shown only on a terminal and when ``enabled``.

    Parameters
    ----------
    total : int
        Steps to count.
    desc : str
        Label in front of the bar.
    enabled : bool
        False hides it everywhere.
    leave : bool
        Keep the bar's final state on screen when it closes.
    **options
        Further ``tqdm`` options (``unit``, ``initial``, ...).
    """
    return tqdm(total=total, desc=desc, leave=leave, disable=None if enabled else True, file=sys.stderr,
                dynamic_ncols=True, **options)


def above_bars(echo: Callable[[str], None]) -> Callable[[str], None]:
    """``echo`` that clears the bars on screen before it prints, and draws them again after."""
    def write(line: str) -> None:
        with tqdm.external_write_mode(file=sys.stdout):
            echo(line)
    return write


def stderr_above_bars(text: str) -> None:
    """Write ``text`` to stderr, above the bars (which are cleared first and drawn again after)."""
    with tqdm.external_write_mode(file=sys.stderr):
        sys.stderr.write(text if text.endswith("\n") else text + "\n")


@contextlib.contextmanager
def warnings_above_bars(shown: tqdm) -> Iterator[None]:
    """Show Python warnings above the progress bars (``tqdm.write``) while the block runs, if the
    bar ``shown`` is drawn (else warnings are left alone, e.g. to ``warnings.catch_warnings(record=True)``)."""
    if shown.disable:
        yield
        return
    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if file is not None:  # a caller's own destination
            return original(message, category, filename, lineno, file, line)
        text = warnings.formatwarning(message, category, filename, lineno, line)
        tqdm.write(text.rstrip("\n"), file=sys.stderr)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original
