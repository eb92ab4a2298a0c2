"""Errors that the command line turns into a clear message and an exit code."""
from __future__ import annotations


class L2OBenchError(Exception):
    """Base class of the errors l2obench reports without a traceback.

    Attributes
    ----------
    exit_code : int
        Process exit code used by the command line (2: bad input).
    """

    exit_code = 1


class UsageError(L2OBenchError):
    """Bad input detected before any computation: exit code 2."""

    exit_code = 2


class UnknownNameError(UsageError):
    """A suite, problem, solver or parameter name that is not registered."""

    def __init__(self, kind: str, name: str, valid):
        valid = sorted(valid)
        listing = ", ".join(valid) if valid else "(none registered)"
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s: {listing}")
        self.kind, self.name, self.valid = kind, name, valid


class SuiteFileError(UsageError):
    """A malformed suite file; the message names the file and the key."""


class PluginError(L2OBenchError):
    """A plugin failed to import or its hook raised (in strict mode)."""


class DivergedError(L2OBenchError):
    """A solver produced NaN or inf; the runner records the cell as diverged."""


class InvalidEstimateError(L2OBenchError):
    """A solver's estimate is not shaped or typed as its problem family expects (``check_estimate``)."""
