"""ISTA, FISTA and ADMM against scikit-learn's Lasso, closed forms and brute force."""
import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso as SkLasso

from l2obench.contracts import FitContext
from l2obench.hashing import generator_for
from l2obench.ops import lasso_objective
from l2obench.tuning import grid_points
from l2obench_plugins.admm import ADMM
from l2obench_plugins.proximal_gradient import FISTA, ISTA, normalized_duality_gap
from l2obench_problems.lasso import Lasso

SOLVERS = {"ista": (ISTA, {"step": 1.0}), "fista": (FISTA, {"restart": True}), "admm": (ADMM, {"rho": 1.0})}


def problem(m=30, n=60, count=12, seed=0, dtype=torch.float64):
    family = Lasso(m=m, n=n, p=0.1, snr=[20, 30, 40], condition_number=None, n_train=count, n_val=count,
                   n_test=count)
    shared = family.draw_shared(generator_for("classical-test", seed, "shared"))
    data = family.draw(count, generator_for("classical-test", seed, "test"), shared, "test")
    return family, shared["A"].to(dtype), data.observed["b"].to(dtype)


def sklearn_objective(A, b, lam):
    m = A.shape[0]
    model = SkLasso(alpha=lam / m, fit_intercept=False, tol=1e-12, max_iter=200_000)
    x = np.stack([model.fit(A.numpy(), b[i].numpy()).coef_.copy() for i in range(b.shape[0])])
    return lasso_objective(A, b, torch.from_numpy(x), lam)


@pytest.mark.parametrize("name", SOLVERS)
@pytest.mark.parametrize("lam", [0.02, 0.2])
def test_reaches_sklearn_objective_float64(name, lam):
    _, A, b = problem()
    cls, extra = SOLVERS[name]
    solution = cls(lam=lam, max_iter=50_000, tol=1e-12, **extra).solve({"A": A, "b": b})
    excess = (lasso_objective(A, b, solution.estimate, lam) - sklearn_objective(A, b, lam)) / sklearn_objective(A, b, lam)
    assert excess.max() < 1e-8


@pytest.mark.parametrize("name", SOLVERS)
def test_float32_with_default_tolerance_within_1e_4(name):
    _, A, b = problem(m=50, n=100, count=20, seed=1)
    cls, extra = SOLVERS[name]
    solution = cls(lam=0.05, max_iter=20_000, tol=1e-4, **extra).solve({"A": A.float(), "b": b.float()})
    assert solution.estimate.dtype == torch.float32
    p = lasso_objective(A, b, solution.estimate.double(), 0.05)
    assert ((p - sklearn_objective(A, b, 0.05)) / p).max() < 1e-4
    assert (solution.iterations < 20_000).all()  # every instance met the stopping test


@pytest.mark.parametrize("name", SOLVERS)
def test_per_instance_designs_match_looping_over_instances(name):
    _, A, b = problem(count=6)
    designs = torch.stack([A * (1 + 0.1 * i) for i in range(6)])  # a different design per instance
    cls, extra = SOLVERS[name]
    solver = cls(lam=0.05, max_iter=3000, tol=1e-10, **extra)
    batched = solver.solve({"A": designs, "b": b}).estimate
    looped = torch.cat([solver.solve({"A": designs[i], "b": b[i:i + 1]}).estimate for i in range(6)])
    assert torch.allclose(batched, looped, atol=1e-8)


@pytest.mark.parametrize("name", SOLVERS)
def test_fixed_iterations_and_trajectories(name):
    _, A, b = problem()
    cls, extra = SOLVERS[name]
    fixed = cls(lam=0.05, max_iter=17, tol=0.0, **extra).solve({"A": A, "b": b}, trajectory=True)
    assert (fixed.iterations == 17).all() and len(fixed.trajectory) == 17
    assert torch.equal(fixed.trajectory[-1], fixed.estimate)
    early = cls(lam=0.05, max_iter=5000, tol=1e-6, **extra).solve({"A": A, "b": b}, trajectory=True)
    assert len(set(early.iterations.tolist())) > 1  # instances stop at their own iteration
    assert torch.equal(early.trajectory[-1], early.estimate)
    plain = cls(lam=0.05, max_iter=5000, tol=1e-6, **extra).solve({"A": A, "b": b})
    assert torch.equal(plain.estimate, early.estimate)


def test_ista_matches_its_closed_form_step():
    _, A, b = problem(count=3)
    L = torch.linalg.matrix_norm(A, ord=2) ** 2
    x = torch.zeros(3, A.shape[1], dtype=A.dtype)
    for _ in range(5):
        z = x - 1.5 / L * (x @ A.T - b) @ A
        x = torch.sign(z) * torch.clamp(z.abs() - 1.5 / L * 0.1, min=0)
    ours = ISTA(lam=0.1, step=1.5, max_iter=5, tol=0.0).solve({"A": A, "b": b}).estimate
    assert torch.allclose(ours, x, atol=1e-12)


def test_duality_gap_is_a_certificate():
    _, A, b = problem()
    x = torch.randn(b.shape[0], A.shape[1], dtype=A.dtype, generator=torch.Generator().manual_seed(0))
    lam = 0.1
    r = b - x @ A.T
    s = torch.clamp(lam / (r @ A).abs().amax(-1), max=1.0).unsqueeze(-1)
    textbook = lasso_objective(A, b, x, lam) - ((b * r * s).sum(-1) - 0.5 * ((r * s) ** 2).sum(-1))
    assert torch.allclose(normalized_duality_gap(A, b, x, lam) * (b * b).sum(-1), textbook)
    p_star = sklearn_objective(A, b, lam)
    assert (lasso_objective(A, b, x, lam) - p_star <= textbook + 1e-9).all()  # weak duality


def test_tuning_picks_the_best_grid_point_on_validation():
    family, A, b = problem(count=40)
    data = family.draw(40, generator_for("tuning", "val"), {"A": A.float()}, "val")
    context = FitContext(problem=family, train=data, val=data, tune={"lam": [0.005, 0.05, 0.3], "step": [1.0, 1.9]})
    solver = ISTA(lam=0.1, step=1.0, max_iter=20, tol=0.0).fit(context)
    brute = {}
    for point in grid_points(context.tune):
        estimate = ISTA(max_iter=20, tol=0.0, **point).solve(data.observation()).estimate
        brute[tuple(point.values())] = float(family.loss(estimate, data.target).sum())
    best = min(brute, key=brute.get)
    assert (solver.lam, solver.step) == best and len(solver.tuning_) == 6
    assert context.log["tuning"][0]["val_loss"] == pytest.approx(brute[(0.005, 1.0)])
