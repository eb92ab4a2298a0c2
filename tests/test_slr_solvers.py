"""The LASSO solvers on per-instance designs (the ``slr`` family): ISTA, FISTA, ADMM, ALISTA, RNN, RNN-l1."""
import math

import pytest
import torch
from sklearn.linear_model import Lasso as SklearnLasso

from l2obench.contracts import Budget, FitContext
from l2obench.ops import lasso_objective
from l2obench.registry import Registry
from l2obench.testing import check_solver, smoke_context
from l2obench_plugins.alista import ALISTA
from l2obench_plugins.proximal_gradient import FISTA

REGISTRY = Registry()
TINY = {"d": 32, "s": 3, "n_samples": [20, 28], "snr": 30, "n_train": 256, "n_val": 64, "n_test": 64}
BUDGET = Budget(steps=150, batch_size=32, eval_every=50, patience=3)


def nmse_db(estimate, target):
    return 10 * math.log10(float(((estimate - target) ** 2).sum() / (target**2).sum()))


@pytest.mark.parametrize("name", ["fista", "ista", "admm"])
def test_classical_solvers_reach_sklearn_on_each_instance_design(name):
    _, test = smoke_context(REGISTRY, "slr", TINY)
    part = test.subset(slice(0, 4))
    observation = part.observation()
    lam = 0.05
    model = REGISTRY.solver(name).build(lam=lam, max_iter=5000, tol=1e-8)
    ours = model.solve(observation).estimate.double()
    A, b = observation["A"].double(), observation["b"].double()
    for i, n in enumerate(observation["n_samples"].tolist()):
        # sklearn minimises ||b - A x||^2 / (2 n) + alpha ||x||_1 on the instance's real rows.
        reference = SklearnLasso(alpha=lam / n, fit_intercept=False, tol=1e-12, max_iter=100000)
        reference.fit(A[i, :n].numpy(), b[i, :n].numpy())
        x_ref = torch.from_numpy(reference.coef_).unsqueeze(0)
        f_ours = lasso_objective(A[i:i + 1], b[i:i + 1], ours[i:i + 1], lam)
        f_ref = lasso_objective(A[i:i + 1], b[i:i + 1], x_ref, lam)
        assert float(f_ours) <= float(f_ref) * (1 + 1e-4), (i, float(f_ours), float(f_ref))


@pytest.mark.parametrize("name,params", [("alista", {"n_layers": 6}), ("rnn", {"n_steps": 5}),
                                         ("rnn_l1", {"n_steps": 5}), ("fista", {"max_iter": 10, "tol": 0.0})])
def test_solver_contract_on_per_instance_designs(name, params):
    check_solver(REGISTRY, name, "slr", TINY, params=params, budget=Budget(steps=6, batch_size=16, eval_every=3))


def test_alista_on_per_instance_designs_beats_tuned_fista_at_equal_iterations():
    context, test = smoke_context(REGISTRY, "slr", TINY, budget=BUDGET)
    fista = FISTA(lam=0.1, restart=True, max_iter=8, tol=0.0)
    fista.fit(FitContext(problem=context.problem, train=context.train, val=context.val,
                         tune={"lam": [0.005, 0.01, 0.02, 0.05, 0.1, 0.2]}))
    fista_db = nmse_db(fista.solve(test.observation()).estimate, test.target["x"])
    model = ALISTA(n_layers=8, gamma=0.9, lr=5e-3, lam_init=0.1, support_p=1.2, support_max=13.0,
                   fresh_samples=True).fit(context)
    assert not model.network_.fixed_design and sum(p.numel() for p in model.network_.parameters()) == 16
    learned_db = nmse_db(model.solve(test.observation()).estimate, test.target["x"])
    assert learned_db < fista_db - 1.0, (learned_db, fista_db)
