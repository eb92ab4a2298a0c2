"""G-ISTA, covariance-selection ADMM and the GLASSO wrapper against scikit-learn's graphical lasso,
and the batched building blocks of ``l2obench.precision`` against direct numpy computations."""
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.covariance import graphical_lasso

from l2obench.contracts import FitContext, Instances
from l2obench.precision import (cholesky_logdet, glasso_duality_gap, glasso_objective, is_positive_definite,
                                offdiag_soft_threshold, symmetrize)
from l2obench.registry import Registry
from l2obench.testing import check_solver
from l2obench.tuning import grid_points
from l2obench_plugins.covsel_admm import CovselADMM, _x_update
from l2obench_plugins.gista import GISTA
from l2obench_plugins.glasso import GLASSO, graphical_lasso_batch

SOLVERS = {"gista": (GISTA, {"shrink": 0.5, "max_backtrack": 40}),
           "covsel_admm": (CovselADMM, {"rho": 0.1, "relax": 1.6})}


def spe_instances(N=4, d=10, M=30, p=0.3, seed=0, dtype=torch.float64):
    """Sample covariances of ``M`` Gaussian samples from sparse precision matrices with smallest eigenvalue 1."""
    g = torch.Generator().manual_seed(seed)
    edges = torch.triu(torch.rand(N, d, d, generator=g, dtype=torch.float64) < p, 1)
    weights = (0.1 + 0.9 * torch.rand(N, d, d, generator=g, dtype=torch.float64)) * \
        torch.where(torch.rand(N, d, d, generator=g, dtype=torch.float64) < 0.5, -1.0, 1.0)
    B = weights * edges
    B = B + B.transpose(1, 2)
    shift = 1 - torch.linalg.eigvalsh(B)[:, 0]
    Theta = B + shift.view(-1, 1, 1) * torch.eye(d, dtype=torch.float64)
    X = torch.randn(N, M, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(
        torch.linalg.inv(Theta)).transpose(1, 2)
    return (X.transpose(1, 2) @ X / M).to(dtype), Theta.to(dtype)


def sklearn_precision(S, alpha):
    """scikit-learn's graphical lasso run to a tight tolerance, per instance."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.from_numpy(np.stack([graphical_lasso(S[i].numpy(), alpha, tol=1e-10, enet_tol=1e-10,
                                                          max_iter=2000)[1] for i in range(S.shape[0])]))


def numpy_objective(Theta, S, alpha):
    sign, logdet = np.linalg.slogdet(Theta)
    if sign <= 0:
        return np.inf
    return -logdet + np.trace(S @ Theta) + alpha * (np.abs(Theta).sum() - np.abs(np.diag(Theta)).sum())


def test_glasso_objective_matches_numpy_per_instance():
    S, Theta = spe_instances(N=5, d=9)
    Theta[3] = Theta[3] - 2.0 * torch.eye(9, dtype=Theta.dtype)  # smallest eigenvalue -1: not PD
    alpha = torch.tensor([0.0, 0.05, 0.1, 0.2, 0.3], dtype=torch.float64)
    ours = glasso_objective(Theta, S, alpha)
    direct = [numpy_objective(Theta[i].numpy(), S[i].numpy(), float(alpha[i])) for i in range(5)]
    assert np.isinf(direct[3]) and torch.isinf(ours[3])
    assert np.allclose(ours.numpy(), direct, rtol=1e-12)
    ours32 = glasso_objective(Theta.float(), S.float(), 0.1)
    direct = [numpy_objective(Theta[i].numpy(), S[i].numpy(), 0.1) for i in range(5)]
    assert ours32.dtype == torch.float32 and np.allclose(ours32.numpy(), direct, rtol=1e-5)
    assert is_positive_definite(Theta).tolist() == [True, True, True, False, True]
    _, logdet, pd = cholesky_logdet(Theta)
    assert torch.allclose(logdet[pd], torch.linalg.slogdet(Theta[pd])[1])


def test_offdiag_soft_threshold_per_instance():
    X = torch.randn(3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.0, 0.5, 10.0], dtype=torch.float64)
    Y = offdiag_soft_threshold(X, t)
    for i in range(3):
        expected = np.sign(X[i].numpy()) * np.maximum(np.abs(X[i].numpy()) - float(t[i]), 0)
        np.fill_diagonal(expected, np.diag(X[i].numpy()))
        assert np.array_equal(Y[i].numpy(), expected)
    assert torch.equal(offdiag_soft_threshold(X, 0.5)[1], Y[1])
    assert torch.equal(symmetrize(X), symmetrize(X).transpose(1, 2))


def test_per_instance_alpha_equals_solving_with_each_scalar():
    S, _ = spe_instances(N=3, d=7, seed=37)
    Theta = torch.linalg.inv(S + 0.2 * torch.eye(7, dtype=S.dtype))
    alpha = torch.tensor([0.02, 0.1, 0.3], dtype=S.dtype)
    gap = glasso_duality_gap(Theta, S, alpha)
    assert all(torch.allclose(gap[i], glasso_duality_gap(Theta[i:i + 1], S[i:i + 1], float(alpha[i]))[0])
               for i in range(3))


def test_duality_gap_bounds_the_suboptimality_and_vanishes_at_the_optimum():
    S, _ = spe_instances(N=4, d=8, seed=3)
    alpha = 0.1
    optimum = sklearn_precision(S, alpha)
    p_star = glasso_objective(optimum, S, alpha)
    assert glasso_duality_gap(optimum, S, alpha).abs().max() < 1e-7
    # Any PD point: gap >= P(point) - P* >= 0 (weak duality).
    point = torch.linalg.inv(S + 0.3 * torch.eye(8, dtype=S.dtype))
    gap = glasso_duality_gap(point, S, alpha)
    assert (gap >= glasso_objective(point, S, alpha) - p_star - 1e-10).all() and (gap > 1e-3).all()


@pytest.mark.parametrize("name", SOLVERS)
@pytest.mark.parametrize("alpha", [0.03, 0.1, 0.3])
def test_reaches_sklearn_objective(name, alpha):
    S, _ = spe_instances(N=4, d=10, seed=int(alpha * 100))
    cls, extra = SOLVERS[name]
    solution = cls(alpha=alpha, max_iter=5000, tol=1e-10, **extra).solve({"S": S})
    reference = sklearn_precision(S, alpha)
    p, p_sk = glasso_objective(solution.estimate, S, alpha), glasso_objective(reference, S, alpha)
    assert ((p - p_sk) / p_sk.abs()).max() < 1e-7
    assert (solution.estimate - reference).abs().max() < 1e-4
    assert (solution.iterations < 5000).all()


@pytest.mark.parametrize("name", SOLVERS)
def test_float32_with_default_tolerance(name):
    S, _ = spe_instances(N=6, d=12, M=40, seed=5)
    cls, extra = SOLVERS[name]
    solution = cls(alpha=0.1, max_iter=1000, tol=1e-4, **extra).solve({"S": S.float()})
    assert solution.estimate.dtype == torch.float32 and (solution.iterations < 1000).all()
    p = glasso_objective(solution.estimate.double(), S, 0.1)
    p_sk = glasso_objective(sklearn_precision(S, 0.1), S, 0.1)
    assert (p - p_sk).max() < 1e-4  # the default stopping rule: duality gap (or residuals) at most 1e-4


@pytest.mark.parametrize("name", SOLVERS)
@pytest.mark.parametrize("max_iter", [2, 1000])
def test_estimates_are_symmetric_and_positive_definite(name, max_iter):
    S, _ = spe_instances(N=5, d=10, seed=7)
    cls, extra = SOLVERS[name]
    for dtype in (torch.float64, torch.float32):
        estimate = cls(alpha=0.05, max_iter=max_iter, tol=1e-6, **extra).solve({"S": S.to(dtype)}).estimate
        assert torch.equal(estimate, estimate.transpose(1, 2))
        assert is_positive_definite(estimate).all()


@pytest.mark.parametrize("name", SOLVERS)
def test_batch_matches_solving_one_instance_at_a_time(name):
    S, _ = spe_instances(N=5, d=10, seed=11)
    S = S * torch.tensor([0.2, 1.0, 5.0, 1.0, 0.5], dtype=S.dtype).view(-1, 1, 1)  # different curvatures and steps
    cls, extra = SOLVERS[name]
    solver = cls(alpha=0.05, max_iter=3000, tol=1e-9, **extra)
    batched = solver.solve({"S": S})
    looped = [solver.solve({"S": S[i:i + 1]}) for i in range(5)]
    assert torch.allclose(batched.estimate, torch.cat([s.estimate for s in looped]), rtol=0, atol=1e-10)
    assert batched.iterations.tolist() == [int(s.iterations) for s in looped]
    assert len(set(batched.iterations.tolist())) > 1


@pytest.mark.parametrize("name", SOLVERS)
def test_fixed_iterations_and_trajectories(name):
    S, _ = spe_instances(N=4, d=8, seed=13)
    cls, extra = SOLVERS[name]
    fixed = cls(alpha=0.05, max_iter=7, tol=0.0, **extra).solve({"S": S}, trajectory=True)
    assert (fixed.iterations == 7).all() and len(fixed.trajectory) == 7
    assert torch.equal(fixed.trajectory[-1], fixed.estimate)
    early = cls(alpha=0.05, max_iter=3000, tol=1e-8, **extra).solve({"S": S}, trajectory=True)
    assert len(early.trajectory) == int(early.iterations.max())
    assert torch.equal(early.trajectory[-1], early.estimate)
    plain = cls(alpha=0.05, max_iter=3000, tol=1e-8, **extra).solve({"S": S})
    assert torch.equal(plain.estimate, early.estimate)
    # an instance's trajectory stays at its estimate once it has stopped
    first = int(early.iterations.argmin())
    stop = int(early.iterations[first])
    assert all(torch.equal(point[first], early.estimate[first]) for point in early.trajectory[stop - 1:])


def test_gista_stops_with_a_certified_gap():
    S, _ = spe_instances(N=6, d=10, seed=17)
    solution = GISTA(alpha=0.07, max_iter=2000, tol=1e-6, shrink=0.5, max_backtrack=40).solve({"S": S})
    assert (solution.iterations < 2000).all()
    assert (glasso_duality_gap(solution.estimate, S, 0.07) <= 1e-6).all()


def test_admm_x_update_solves_its_optimality_condition():
    V = symmetrize(torch.randn(3, 7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(2)))
    rho = 0.3
    X = _x_update(V, rho)
    assert is_positive_definite(X).all()
    assert torch.allclose(rho * X - torch.linalg.inv(X), V, atol=1e-10)


def test_glasso_wrapper_equals_sklearn_per_instance():
    S, _ = spe_instances(N=4, d=10, seed=19)
    solver = GLASSO(alpha=0.1, mode="cd", tol=1e-4, enet_tol=1e-4, max_iter=100, n_jobs=1)
    solution = solver.solve({"S": S.float()})
    assert solution.estimate.dtype == torch.float32 and solution.trajectory is None
    for i in range(4):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, expected, n_iter = graphical_lasso(S[i].float().double().numpy(), 0.1, return_n_iter=True)
        assert np.array_equal(solution.estimate[i].numpy(), expected.astype(np.float32))
        assert int(solution.iterations[i]) == n_iter


def test_glasso_chunks_over_a_pool_give_the_same_answer():
    from joblib import parallel_config

    S, _ = spe_instances(N=5, d=8, seed=23)
    alone = graphical_lasso_batch(S, 0.1, n_jobs=1)
    with parallel_config(backend="threading"):  # the chunking logic, without spawning processes in a unit test
        pooled = graphical_lasso_batch(S, 0.1, n_jobs=2)
    assert len(alone) == 4 and all(torch.equal(a, b) for a, b in zip(alone, pooled))


def test_a_failing_instance_does_not_crash_the_glasso_batch():
    S, _ = spe_instances(N=3, d=8, seed=29)
    rank3 = torch.randn(3, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    S[1] = rank3.T @ rank3 / 3  # three samples in dimension 8: scikit-learn raises at a tiny alpha
    with pytest.raises(FloatingPointError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graphical_lasso(S[1].numpy(), 1e-4)
    solver = GLASSO(alpha=1e-4, mode="cd", tol=1e-4, enet_tol=1e-4, max_iter=100, n_jobs=1)
    solution = solver.solve({"S": S})
    assert solver.failures_.tolist() == [False, True, False]
    assert torch.equal(solution.estimate[1], torch.diag(1 / torch.diagonal(S[1])))
    assert int(solution.iterations[1]) == 0 and torch.isfinite(solution.estimate).all()


class _FrobeniusFamily:
    """The minimal problem interface the tuner uses: a per-instance loss."""

    @staticmethod
    def loss(estimate, target):
        return ((estimate - target["Theta"]) ** 2).sum((-1, -2))


def _context(grid, N=6, d=8, M=3, seed=31):
    S, Theta = spe_instances(N=N, d=d, M=M, seed=seed)
    val = Instances(observed={"S": S.float(), "M": torch.full((N,), float(M))}, target={"Theta": Theta.float()})
    return FitContext(problem=_FrobeniusFamily(), train=val, val=val, tune={"alpha": grid}), val


@pytest.mark.parametrize("name", ["gista", "covsel_admm", "glasso"])
def test_tuning_picks_the_best_finite_alpha(name):
    grid = [1e-4, 0.05, 0.3]  # with M = 3 < d = 8, alpha = 1e-4 is nearly singular (scikit-learn fails)
    context, val = _context(grid)
    if name == "glasso":
        make = lambda **p: GLASSO(mode="cd", tol=1e-4, enet_tol=1e-4, max_iter=100, n_jobs=1, **p)  # noqa: E731
    else:
        cls, extra = SOLVERS[name]
        make = lambda **p: cls(max_iter=100, tol=1e-4, **extra, **p)  # noqa: E731
    solver = make(alpha=0.1).fit(context)
    brute = {p["alpha"]: float(_FrobeniusFamily.loss(make(**p).solve(val.observation()).estimate,
                                                       val.target).sum()) for p in grid_points(context.tune)}
    finite = {a: v for a, v in brute.items() if np.isfinite(v)}
    assert solver.alpha == min(finite, key=finite.get) and np.isfinite(brute[solver.alpha])
    assert [row["alpha"] for row in context.log["tuning"]] == grid
    if name == "glasso":
        failures = {row["alpha"]: row["failures"] for row in context.log["glasso_failures"]}
        assert failures[1e-4] > 0 and failures[0.3] == 0


@pytest.mark.parametrize("name", ["gista", "covsel_admm", "glasso"])
def test_solver_contract_on_the_spe_family(name):
    settings = {"d": 8, "M": 40, "n_train": 4, "n_val": 4, "n_test": 6}
    solution = check_solver(Registry(), name, "spe", settings)
    assert is_positive_definite(solution.estimate).all()


def test_spe_vs_sklearn_script_meets_the_objective_criterion(capsys):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "spe_vs_sklearn.py"
    spec = importlib.util.spec_from_file_location("spe_vs_sklearn", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    threads = torch.get_num_threads()
    try:
        code = script.main(["--instances", "8", "--d", "8", "--M", "40", "--alphas", "0.05", "0.2", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("on 100.0% of instances") == 4 and out.count(", ratio ") == 4
