"""The example package's own tests: found through its entry point, conformant, correct, and run on a suite."""
import os
import subprocess
import sys

import pytest
import torch

from l2obench.registry import Registry
from l2obench.results import read_results
from l2obench.testing import check_solver, smoke_context

REGISTRY = Registry()  # the installed plugins: l2obench's built-ins and this package, by its entry point
SOLVERS = ("example_bt_ista", "example_lfista")


def test_the_entry_point_registers_both_solvers():
    for name in SOLVERS:
        record = REGISTRY.solvers[name].plugin
        assert record.ok and record.origin.startswith("package l2obench") and record.origin.endswith(" 0.1.0")


@pytest.mark.parametrize("solver", SOLVERS)
def test_solver_contract_on_every_family_it_claims(solver):
    solutions = check_solver(REGISTRY, solver)
    assert set(solutions) == {"lasso", "slr"}


def test_backtracking_ista_solves_the_lasso_as_converged_fista_does():
    context, test = smoke_context(REGISTRY, "lasso")
    observation, lam = test.observation(), 0.05
    ours = REGISTRY.solver("example_bt_ista").build("lasso", lam=lam, max_iter=2000, tol=1e-6).fit(context)
    fista = REGISTRY.solver("fista").build("lasso", lam=lam, max_iter=5000, tol=1e-7).fit(context)
    solution = ours.solve(observation)
    A, b = observation["A"].double(), observation["b"].double()

    def objective(x):
        return 0.5 * ((x.double() @ A.T - b) ** 2).sum(-1) + lam * x.double().abs().sum(-1)

    reference = objective(fista.solve(observation).estimate)
    excess = objective(solution.estimate) - reference
    assert bool(solution.converged.all())
    assert bool((excess <= 1e-4 * reference.clamp(min=1e-3)).all()), float(excess.max())


def test_learned_fista_trains_below_the_fista_it_starts_from():
    context, test = smoke_context(REGISTRY, "lasso")
    spec = REGISTRY.solver("example_lfista")
    untrained = spec.build("lasso").initialize(context)
    trained = spec.build("lasso").fit(context)
    loss = lambda model: float(context.problem.loss(model.solve(test.observation()).estimate, test.target).mean())
    assert loss(trained) < 0.9 * loss(untrained)
    assert torch.equal(trained.solve(test.observation()).iterations, torch.full((len(test),), 10))


def test_the_smoke_suite_runs_both_solvers(tmp_path):
    results = tmp_path / "run"
    env = {**os.environ, "L2OBENCH_CACHE": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-m", "l2obench.cli", "run", "--suite", "smoke", "--scale", "smoke",
                          "--solvers", ",".join(SOLVERS), "--results", str(results), "--no-progress"],
                         cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = read_results([results])
    assert set(zip(rows["problem"], rows["solver"])) == {(p, s) for p in ("cs-tiny", "slr-tiny") for s in SOLVERS}
    assert set(rows["status"]) == {"ok"}
