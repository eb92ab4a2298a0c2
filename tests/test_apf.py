"""APF (approximate path following, thesis 7.3.1) against scikit-learn, first-order conditions and brute facts."""
import warnings

import numpy as np
import pytest
import torch
from sklearn.covariance import graphical_lasso
from sklearn.linear_model import Lasso as SkLasso

from l2obench.contracts import FitContext
from l2obench.ops import lasso_objective
from l2obench.penalties import penalty
from l2obench.precision import glasso_duality_gap, glasso_objective, is_positive_definite
from l2obench.registry import Registry
from l2obench_plugins import APF as APF_SPEC
from l2obench_plugins.apf import APF
from l2obench_problems import SLR, SPE
from l2obench_problems.slr import precision_recall_f1, support_counts

SLR_TINY = dict(d=30, s=4, n_samples=[15, 40], snr=20, n_train=4, n_val=4, n_test=4)


def slr(n=5, seed=0, dtype=torch.float64, **settings):
    family = SLR.build(**{**SLR_TINY, **settings})
    data = family.draw(n, torch.Generator().manual_seed(seed), {}, "test")
    obs = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in data.observed.items()}
    return family, data, obs


def spe(n=3, seed=0, d=8, M=40):
    family = SPE.build(d=d, M=M, n_train=4, n_val=4, n_test=4)
    data = family.draw(n, torch.Generator().manual_seed(seed), {}, "test")
    return family, data, data.observed["S"].double()


def solver(lam, pen="mcp", eta=0.9, tol=1e-4, max_iter=3000, term="least_squares"):
    """An APF that solves ``term`` without fitting (``fit`` would name the family's data term)."""
    return APF(lam=lam, penalty=pen, eta=eta, tol=tol, max_iter=max_iter).with_data_term(term)


def objective(obs, x, lam, pen):
    """``0.5 ||A x - b||^2 + sum_j p(x_j; lam)`` per instance."""
    return lasso_objective(obs["A"], obs["b"], x, 0.0) + penalty(pen)(x, lam).sum(-1)


def test_registered_for_slr_and_spe():
    spec = Registry().solver("apf")
    assert spec == APF_SPEC and set(spec.families) == {"slr", "spe"} and not spec.learned
    assert all(p.help for p in spec.params.values())
    assert set(spec.params["penalty"].grid) == {"mcp", "scad", "l1"}


@pytest.mark.parametrize("eta", [1e-9, 0.9])  # one stage at the target, or the whole path
def test_l1_reaches_sklearn_lasso_objective(eta):
    _, data, obs = slr()
    lam = 0.05
    estimate = solver(lam, "l1", eta=eta, tol=1e-9, max_iter=20_000).solve(obs).estimate
    reference = []
    for i, n in enumerate(obs["n_samples"].tolist()):  # sklearn: (1 / 2n) ||y - X w||^2 + alpha ||w||_1
        model = SkLasso(alpha=lam / n, fit_intercept=False, tol=1e-12, max_iter=100_000)
        reference.append(model.fit(obs["A"][i, :n].numpy(), obs["b"][i, :n].numpy()).coef_.copy())
    reference = torch.from_numpy(np.stack(reference))
    ours, theirs = (lasso_objective(obs["A"], obs["b"], x, lam) for x in (estimate, reference))
    assert len(set(obs["n_samples"].tolist())) > 1
    assert ((ours - theirs) / theirs).abs().max() < 1e-6


def test_float32_default_tolerance_within_1e_4_of_the_lasso():
    _, _, obs64 = slr(n=6, seed=3)
    obs32 = {k: (v.float() if v.is_floating_point() else v) for k, v in obs64.items()}
    lam = 0.05
    fast = solver(lam, "l1").solve(obs32)
    assert fast.estimate.dtype == torch.float32 and (fast.iterations < 3000).all()
    exact = solver(lam, "l1", tol=1e-10, max_iter=20_000).solve(obs64).estimate
    p, p_star = (lasso_objective(obs64["A"], obs64["b"], x, lam) for x in (fast.estimate.double(), exact))
    assert ((p - p_star) / p_star).max() < 1e-4


@pytest.mark.parametrize("pen", ["mcp", "scad"])
def test_nonconvex_output_is_a_stationary_point(pen):
    # First-order condition of 0.5||Ax - b||^2 + sum_j p(x_j): the derivative of the whole
    # penalty (by autograd of its value, not APF's q_grad) cancels the gradient on the
    # support, and |grad_j| <= lam (p's subdifferential at 0) off it.
    _, _, obs = slr(n=5, seed=1)
    lam = 0.1
    x = solver(lam, pen, tol=1e-10, max_iter=20_000).solve(obs).estimate
    residual = torch.bmm(obs["A"], x.unsqueeze(-1)) - obs["b"].unsqueeze(-1)
    grad = torch.bmm(obs["A"].transpose(1, 2), residual).squeeze(-1)
    xr = x.clone().requires_grad_(True)
    (dp,) = torch.autograd.grad(penalty(pen)(xr, lam).sum(), xr)
    on = x != 0
    assert on.any() and (~on).any()
    assert float((grad + dp)[on].abs().max()) < 1e-8
    assert float(grad[~on].abs().max()) <= lam + 1e-8
    # The concave part matters: the LASSO's solution is not stationary for this objective.
    lasso = solver(lam, "l1", tol=1e-10, max_iter=20_000).solve(obs).estimate
    assert float((lasso - x).abs().max()) > 1e-3


@pytest.mark.parametrize("pen", ["l1", "mcp", "scad"])
def test_objective_never_increases_at_a_fixed_lambda(pen):
    _, _, obs = slr(n=4, seed=2)
    lam = 0.05
    sol = solver(lam, pen, eta=1e-9, tol=1e-8, max_iter=2000).solve(obs, trajectory=True)
    values = torch.stack([objective(obs, x, lam, pen) for x in sol.trajectory])  # (T, N)
    start = objective(obs, torch.zeros_like(sol.estimate), lam, pen)
    values = torch.cat([start.unsqueeze(0), values])
    assert float((values[1:] - values[:-1]).max()) <= 1e-12 * float(values.abs().max())
    assert float((values[0] - values[-1]).min()) > 0
    # One trajectory point per proximal step; finished instances repeat their final value.
    assert len(sol.trajectory) == int(sol.iterations.max())
    assert torch.equal(sol.trajectory[-1], sol.estimate)
    i = int(sol.iterations.argmin())
    assert torch.equal(sol.trajectory[int(sol.iterations[i]) - 1][i], sol.estimate[i])


def test_batch_equals_one_instance_at_a_time():
    # Batched matrix products round differently from single ones (1e-16 here), which can move
    # an instance's stopping test by a step or two near the tolerance: the estimates agree to
    # far below the tolerance's effect and the step counts to within 3.
    _, _, obs = slr(n=5, seed=4)
    apf = solver(0.1, "mcp", tol=1e-8)
    batched = apf.solve(obs)
    for i in range(5):
        alone = apf.solve({k: v[i:i + 1] for k, v in obs.items()})
        assert torch.allclose(alone.estimate[0], batched.estimate[i], atol=1e-7, rtol=0)
        assert abs(int(alone.iterations[0]) - int(batched.iterations[i])) <= 3
    assert len(set(batched.iterations.tolist())) > 1  # instances stop at different times

    _, _, S = spe(n=3, seed=5)
    apf = solver(0.1, "scad", tol=1e-6, term="logdet")
    batched = apf.solve({"S": S})
    for i in range(3):
        alone = apf.solve({"S": S[i:i + 1]})
        assert torch.allclose(alone.estimate[0], batched.estimate[i], atol=1e-6, rtol=0)
        assert abs(int(alone.iterations[0]) - int(batched.iterations[i])) <= 3


def test_spe_l1_reaches_sklearn_graphical_lasso_and_stays_positive_definite():
    _, _, S = spe(n=3, seed=6)
    lam = 0.05
    sol = solver(lam, "l1", tol=1e-8, max_iter=5000, term="logdet").solve({"S": S}, trajectory=True)
    theta = sol.estimate
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's own gap test is noisy at tol 1e-10
        reference = torch.stack([torch.from_numpy(graphical_lasso(S[i].numpy(), alpha=lam, mode="cd", tol=1e-10,
                                                                  enet_tol=1e-12, max_iter=1000)[1])
                                 for i in range(S.shape[0])])
    ours, theirs = glasso_objective(theta, S, lam), glasso_objective(reference, S, lam)
    assert ((ours - theirs) / theirs.abs()).abs().max() < 1e-6
    assert float(glasso_duality_gap(theta, S, lam).max()) < 1e-7
    assert all(bool(is_positive_definite(t).all()) for t in sol.trajectory)
    assert all(torch.equal(t, t.transpose(1, 2)) for t in sol.trajectory)
    assert (sol.iterations < 5000).all()


@pytest.mark.parametrize("pen", ["mcp", "scad"])
def test_spe_nonconvex_iterates_stay_positive_definite_and_float32_in_float32_out(pen):
    _, data, S = spe(n=4, seed=7, d=10, M=30)
    sol = solver(0.05, pen, term="logdet").solve({"S": data.observed["S"], "M": data.observed["M"]}, trajectory=True)
    assert sol.estimate.dtype == torch.float32
    assert all(bool(is_positive_definite(t.double()).all()) for t in sol.trajectory)
    # Off-diagonal stationarity at the returned point (diagonal: the exact gradient is zero).
    theta = sol.estimate.double()
    grad = S - torch.cholesky_inverse(torch.linalg.cholesky(theta))
    assert float(torch.diagonal(grad, dim1=-2, dim2=-1).abs().max()) < 1e-3


def test_tuning_picks_a_finite_grid_point():
    family, _, _ = slr()
    val = family.draw(6, torch.Generator().manual_seed(9), {}, "val")
    apf = solver(0.5, "scad", max_iter=500)
    tune = {"lam": [0.02, 0.1, 0.5], "penalty": ["mcp", "scad"]}
    apf.fit(FitContext(problem=family, train=val, val=val, tune=tune))
    assert apf.lam in tune["lam"] and apf.penalty in tune["penalty"]
    losses = [row["val_loss"] for row in apf.tuning_]
    assert len(losses) == 6 and all(np.isfinite(losses))
    best = min(apf.tuning_, key=lambda row: row["val_loss"])
    assert (best["lam"], best["penalty"]) == (apf.lam, apf.penalty)


def test_mcp_recovers_strong_signals_better_than_the_lasso():
    # Wang et al. (2014) and thesis 7.4: with non-zeros well above the noise, the
    # non-convex penalty removes the LASSO's shrinkage bias and its false positives on a
    # correlated design. Each penalty's lambda is tuned on validation instances.
    settings = dict(d=64, s=6, n_samples=[40, 60], rho=0.5, beta_min=1.0, beta_max=2.0, snr=20)
    family, _, _ = slr(**settings)
    val = family.draw(16, torch.Generator().manual_seed(10), {}, "val")
    test = family.draw(16, torch.Generator().manual_seed(11), {}, "test")
    results = {}
    for pen in ("l1", "mcp"):
        apf = solver(0.1, pen, max_iter=300).fit(
            FitContext(problem=family, train=val, val=val, tune={"lam": [0.03, 0.1, 0.3]}))
        x = apf.solve(test.observation()).estimate
        error = float(((x - test.target["x"]) ** 2).sum() / (test.target["x"] ** 2).sum())
        f1 = precision_recall_f1(*support_counts(x, test.target["x"], family.support_tol))[2]
        results[pen] = (error, f1)
    # Measured: MCP -28.2 dB, F1 1.0; LASSO -20.7 dB, F1 0.45.
    assert results["mcp"][0] < 0.5 * results["l1"][0]  # at least 3 dB lower NMSE
    assert results["mcp"][1] > results["l1"][1]


def test_bad_parameters_are_refused():
    _, _, obs = slr(n=2)
    with pytest.raises(ValueError, match="eta"):
        solver(0.1, eta=1.0).solve(obs)
    with pytest.raises(ValueError, match="lambda"):
        solver(0.0).solve(obs)
    with pytest.raises(ValueError, match="penalty"):
        solver(0.1, "lasso").solve(obs)


def test_solve_needs_the_data_term_from_fit_or_by_name():
    _, _, obs = slr(n=2)
    with pytest.raises(RuntimeError, match="fit"):
        APF(lam=0.1, penalty="l1", eta=0.9, tol=1e-4, max_iter=10).solve(obs)
    with pytest.raises(ValueError, match="unknown data term 'ridge'"):
        solver(0.1, term="ridge")
    with pytest.raises(ValueError, match="'S'"):  # the log-det data term on a regression observation
        solver(0.1, term="logdet").solve(obs)
    family, data, _ = slr(n=4)
    fitted = solver(0.1, term="logdet").fit(FitContext(problem=family, train=data, val=data))
    assert fitted.data_term_ == "least_squares" and fitted.state_dict()["data_term"] == "least_squares"
