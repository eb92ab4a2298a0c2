"""Hook specifications of l2obench.

A plugin is a module (or object) with functions marked ``@l2obench.hookimpl``
whose names are among the specifications below. Each hook receives a
``register`` callback and calls it once per thing it provides. Hooks are called
with keyword arguments, so a specification can grow without breaking plugins.
"""
from __future__ import annotations

import pluggy

PROJECT = "l2obench"
ENTRY_POINT_GROUP = "l2obench"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def l2obench_register_problems(register):
    """Register problem families.

    Parameters
    ----------
    register : callable
        Call ``register(ProblemSpec(...))`` once per problem family.
    """


@hookspec
def l2obench_register_solvers(register):
    """Register solvers.

    Parameters
    ----------
    register : callable
        Call ``register(SolverSpec(...))`` once per solver.
    """


@hookspec
def l2obench_register_suites(register):
    """Register benchmark suites.

    Parameters
    ----------
    register : callable
        Call ``register(SuiteSpec(...))`` once per suite.
    """
