"""One contract test per registered (solver, family) pair, on the smoke suite's tiny problems.

Every solver that a plugin registers, built-in or not, runs through
``l2obench.testing.check_solver`` on each family it declares, with the smoke
suite's settings and parameters for that pair and a tiny training budget, so
that no solver escapes the contract (fit, solve without the target, finite
estimates, trajectories that end at the estimate, a state that survives a
weights-only save and load).
"""
import pytest

from l2obench.contracts import Budget
from l2obench.registry import Registry
from l2obench.suites import plan
from l2obench.testing import check_solver

REGISTRY = Registry()
TINY_BUDGET = Budget(steps=12, batch_size=16, eval_every=6, patience=2)


def _smoke_cells() -> dict:
    """(solver, family) -> the smoke suite's first cell for that pair."""
    cells = {}
    for cell in plan(REGISTRY, "smoke", REGISTRY.suite("smoke").definition, scale="smoke"):
        cells.setdefault((cell.solver, cell.family), cell)
    return cells


CELLS = _smoke_cells()
FAMILY_SETTINGS = {family: cell.settings for (_, family), cell in CELLS.items()}
PAIRS = sorted((name, family) for name, entry in REGISTRY.solvers.items() for family in entry.spec.families
               if family in REGISTRY.problems)


def test_every_registered_pair_is_checked_on_a_smoke_problem():
    families = {family for _, family in PAIRS}
    assert families <= set(FAMILY_SETTINGS), "a family without a problem in the smoke suite"
    assert {name for name, _ in PAIRS} == set(REGISTRY.solvers)


@pytest.mark.parametrize("solver,family", PAIRS, ids=[f"{s}-{f}" for s, f in PAIRS])
def test_solver_contract(solver, family):
    cell = CELLS.get((solver, family))
    settings = dict(cell.settings if cell else FAMILY_SETTINGS[family])
    params = {key: cell.params[key] for key in cell.fixed_params} if cell else {}
    solution = check_solver(REGISTRY, solver, family, settings, params=params, budget=TINY_BUDGET)
    assert solution.estimate.shape[0] == settings["n_test"]


def test_check_estimate_refuses_what_would_broadcast_or_is_not_a_float():
    from l2obench.contracts import check_estimate
    from l2obench.errors import InvalidEstimateError
    from l2obench.testing import smoke_context

    context, test = smoke_context(REGISTRY, "lasso", {"m": 10, "n": 20, "n_test": 8})
    x = test.target["x"]
    check_estimate(context.problem, x.clone(), test)
    one = test.subset(slice(0, 1))
    for bad, instances, match in (
            (x.unsqueeze(1), test, r"shape \(8, 1, 20\).*not one value per instance \(8,\)"),
            (x.unsqueeze(1)[:1], one, r"loss has shape \(1, 1\)"),  # no broadcast with one instance either
            (x[:1], test, "one row per instance"), (x[:, :5], test, "does not match"),
            (x.long(), test, "floating-point")):
        with pytest.raises(InvalidEstimateError, match=match):
            check_estimate(context.problem, bad, instances)
