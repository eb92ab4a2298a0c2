"""Data terms (``l2obench.datafits``): values, gradients and excesses against direct formulas, and how solvers get them."""
import io
import subprocess
import sys

import pytest
import torch

from l2obench.contracts import FitContext, Instances, ProblemFamily
from l2obench.datafits import DATA_TERMS, LeastSquares, LogDet, build, data_term, require
from l2obench_plugins.apf import APF
from l2obench_plugins.proximal_gradient import ISTA
from l2obench_problems import LASSO, SLR, SPE

N, M_ROWS, N_COLS, D = 4, 6, 9, 5


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def regression(seed=0, shared=False):
    g = generator(seed)
    A = torch.randn(M_ROWS, N_COLS, generator=g, dtype=torch.float64)
    A = A if shared else torch.randn(N, M_ROWS, N_COLS, generator=g, dtype=torch.float64)
    b = torch.randn(N, M_ROWS, generator=g, dtype=torch.float64)
    x = torch.randn(N, N_COLS, generator=g, dtype=torch.float64)
    return A, b, x


def precision(seed=0):
    """Sample covariances ``S`` (M = 12 samples), a positive-definite ``Theta`` and a symmetric direction."""
    g = generator(seed)
    X = torch.randn(N, 12, D, generator=g, dtype=torch.float64)
    S = X.transpose(1, 2) @ X / 12
    B = torch.randn(N, D, D, generator=g, dtype=torch.float64)
    theta = B @ B.transpose(1, 2) / D + torch.eye(D, dtype=torch.float64)
    C = torch.randn(N, D, D, generator=g, dtype=torch.float64)
    return S, theta, (C + C.transpose(1, 2)) / 2


def autograd(f, x):
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(x).sum(), x)
    return grad


# --------------------------------------------------------------------------- least squares

@pytest.mark.parametrize("shared", [False, True])
def test_least_squares_value_and_gradient(shared):
    A, b, x = regression(shared=shared)
    term = LeastSquares(A, b)
    designs = A.expand(N, -1, -1) if shared else A
    direct = torch.stack([0.5 * ((designs[i] @ x[i] - b[i]) ** 2).sum() for i in range(N)])
    assert torch.allclose(term.value(x), direct, rtol=1e-14, atol=0)
    grad = term.gradient(x)
    assert torch.allclose(grad, autograd(term.value, x), rtol=1e-12, atol=1e-12)
    assert torch.equal(grad, term.gradient(x, term.state(x)))
    # Central differences along a random direction (exact for a quadratic up to rounding).
    d, eps = torch.randn(x.shape, generator=generator(1), dtype=x.dtype), 1e-3
    fd = (term.value(x + eps * d) - term.value(x - eps * d)) / (2 * eps)
    assert torch.allclose(fd, (grad * d).sum(-1), rtol=1e-9, atol=1e-9)
    assert torch.allclose(term.Atb(), -term.gradient(term.start()), rtol=1e-14, atol=1e-14)
    G = term.gram()  # A^T A x = grad + A^T b
    Gx = x @ G if shared else (G @ x.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(Gx, grad + term.Atb(), rtol=1e-12, atol=1e-12)


def test_least_squares_shared_design_equals_the_per_instance_copy():
    A, b, x = regression(shared=True)
    shared, copies = LeastSquares(A, b), LeastSquares(A.expand(N, -1, -1).contiguous(), b)
    assert shared.shared and not copies.shared
    for f in ("value", "gradient"):
        assert torch.allclose(getattr(shared, f)(x), getattr(copies, f)(x), rtol=1e-13, atol=1e-13)
    for f in ("Atb", "curvature_scale", "start"):
        assert torch.allclose(getattr(shared, f)(), getattr(copies, f)(), rtol=1e-13, atol=1e-13)
    assert shared.lipschitz().dim() == 0 and copies.lipschitz().shape == (N,)
    assert torch.allclose(shared.lipschitz().expand(N), copies.lipschitz(), rtol=1e-12)
    assert torch.allclose(shared.gram().expand(N, -1, -1), copies.gram(), rtol=1e-13)
    delta = torch.randn(x.shape, generator=generator(2), dtype=x.dtype)
    rows = torch.tensor([1, 3])
    one = shared.trial(x[rows], delta[rows], {"r": shared.residual(x)[rows]}, rows)
    two = copies.trial(x[rows], delta[rows], {"r": copies.residual(x)[rows]}, rows)
    assert torch.allclose(one[0], two[0], rtol=1e-13) and torch.allclose(one[2]["r"], two[2]["r"], rtol=1e-13)
    assert torch.allclose(shared.subset(rows).value(x[rows]), copies.subset(rows).value(x[rows]), rtol=1e-13)
    assert torch.equal(shared.prox_l1(x, torch.full((N,), 0.5)), copies.prox_l1(x, 0.5))


@pytest.mark.parametrize("shared", [False, True])
def test_least_squares_trial_is_the_bregman_excess(shared):
    A, b, x = regression(shared=shared)
    term = LeastSquares(A, b)
    delta = torch.randn(x.shape, generator=generator(3), dtype=x.dtype)
    excess, feasible, state = term.trial(x, delta, term.state(x))
    direct = term.value(x + delta) - term.value(x) - (term.gradient(x) * delta).sum(-1)
    assert torch.allclose(excess, direct, rtol=1e-10) and feasible.all()
    assert torch.allclose(state["r"], term.residual(x + delta), rtol=1e-12, atol=1e-12)
    # Zero-padded rows change nothing (the slr layout).
    if not shared:
        padded = LeastSquares(torch.cat([A, torch.zeros_like(A[:, :2])], 1), torch.cat([b, torch.zeros_like(b[:, :2])], 1))
        assert torch.allclose(padded.value(x), term.value(x)) and torch.allclose(padded.gradient(x), term.gradient(x))


# --------------------------------------------------------------------------- log-det

def test_logdet_value_and_gradient():
    S, theta, direction = precision()
    term = LogDet(S)
    direct = -torch.logdet(theta) + torch.einsum("nij,nji->n", S, theta)
    assert torch.allclose(term.value(theta), direct, rtol=1e-13)
    grad = term.gradient(theta)
    reference = autograd(lambda t: -torch.logdet(t) + torch.einsum("nij,nji->n", S, t), theta)
    assert torch.allclose(grad, reference, rtol=1e-10, atol=1e-12)
    assert torch.allclose(grad, term.gradient(theta, term.state(theta)), rtol=1e-12, atol=1e-12)
    eps = 1e-5
    fd = (term.value(theta + eps * direction) - term.value(theta - eps * direction)) / (2 * eps)
    assert torch.allclose(fd, (grad * direction).sum((-1, -2)), rtol=1e-7, atol=1e-8)
    # Off the positive-definite cone the value is +inf.
    assert torch.isinf(term.value(-theta)).all()


def test_logdet_trial_is_the_bregman_excess_in_both_branches():
    S, theta, direction = precision(seed=1)
    term = LogDet(S)
    state = term.state(theta)
    assert torch.allclose(state["logdet"], torch.logdet(theta), rtol=1e-13)
    for scale in (0.3, 1e-5):  # the log-det difference and, below SERIES_BELOW, the series
        delta = scale * direction / direction.norm(dim=(-1, -2), keepdim=True)
        excess, feasible, new = term.trial(theta, delta, state)
        # The exact excess from the eigenvalues mu of theta^{-1/2} delta theta^{-1/2}: sum(mu - log(1 + mu)).
        root = torch.linalg.cholesky(theta)
        mu = torch.linalg.eigvalsh(torch.linalg.solve_triangular(
            root, torch.linalg.solve_triangular(root, delta, upper=False).transpose(1, 2), upper=False))
        exact = (mu - torch.log1p(mu)).sum(-1)
        assert feasible.all() and torch.allclose(excess, exact, rtol=1e-5, atol=0)
        accepted = term.accept(new)
        assert torch.allclose(accepted["W"], torch.linalg.inv(theta + delta), rtol=1e-10, atol=1e-12)
    excess, feasible, _ = term.trial(theta, -2 * theta, state)  # -theta: not positive definite
    assert not feasible.any() and torch.isinf(excess).all()


def test_logdet_start_points_and_prox():
    S, theta, _ = precision(seed=2)
    term = LogDet(S)
    assert torch.equal(term.start(), torch.diag_embed(1 / torch.diagonal(S, dim1=-2, dim2=-1)))
    rho = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    ridge = term.start(ridge=rho)
    eye = torch.eye(D, dtype=torch.float64)
    assert torch.allclose(ridge, torch.linalg.inv(S + 0.7 * eye), rtol=1e-10)
    (drho,) = torch.autograd.grad(ridge.sum(), rho)  # d/drho (S + rho I)^{-1} = -(S + rho I)^{-2}
    assert torch.allclose(drho, -(torch.linalg.inv(S + 0.7 * eye) @ torch.linalg.inv(S + 0.7 * eye)).sum(), rtol=1e-8)
    prox = term.prox_l1(theta, torch.full((N,), 0.1, dtype=torch.float64))
    assert torch.equal(torch.diagonal(prox, dim1=-2, dim2=-1), torch.diagonal(theta, dim1=-2, dim2=-1))
    off = ~torch.eye(D, dtype=torch.bool)
    assert torch.allclose(prox[:, off], torch.sign(theta[:, off]) * (theta[:, off].abs() - 0.1).clamp_min(0))
    assert torch.equal(term.penalised, off.double())


def test_logdet_computes_in_the_requested_dtype_and_returns_the_observation_s():
    S, theta, _ = precision()
    term = LogDet.from_observation({"S": S.float(), "M": torch.full((N,), 12.0)}, dtype=torch.float64)
    assert term.S.dtype == torch.float64 and term.finish(theta).dtype == torch.float32
    assert term.subset(torch.tensor([0, 2])).M.tolist() == [12.0, 12.0]
    assert LogDet.from_observation({"S": S.float()}).S.dtype == torch.float32


# --------------------------------------------------------------------------- names, errors, families

def test_lookup_by_name_and_errors_that_name_what_is_missing():
    assert data_term("least_squares") is LeastSquares and data_term("logdet") is LogDet
    assert set(DATA_TERMS) == {"least_squares", "logdet", "quadratic"}
    with pytest.raises(ValueError, match="unknown data term 'cubic'; known: least_squares, logdet, quadratic"):
        data_term("cubic")
    S, _, _ = precision()
    with pytest.raises(ValueError, match=r"least_squares data term needs the observation's 'A', 'b'; it has 'M', 'S'"):
        LeastSquares.from_observation({"S": S, "M": torch.ones(N)})
    with pytest.raises(ValueError, match="'b'"):
        build("least_squares", {"A": S})
    with pytest.raises(ValueError, match="logdet data term needs the observation's 'S'"):
        LogDet.from_observation({"A": S, "b": S[:, 0]})
    with pytest.raises(ValueError, match=r"\(N, d, d\)"):
        LogDet.from_observation({"S": S[0]})
    with pytest.raises(ValueError, match="b \\(N, m\\)"):
        LeastSquares(S[0], S[:, 0, :3])
    # A solver states what it needs; a data term without it fails naming it.
    require(LeastSquares, ("gram", "Atb", "lipschitz", "gradient"), "PLISA")
    with pytest.raises(NotImplementedError, match=r"PLISA needs the data term's gram, lipschitz, which LogDet \('logdet'\)"):
        require(LogDet, ("gram", "gradient", "lipschitz"), "PLISA")
    with pytest.raises(NotImplementedError, match="lipschitz"):
        build("logdet", {"S": S}, needs=("lipschitz",), solver="FISTA")


def test_contracts_still_import_no_numerical_library():
    code = "import sys, l2obench.contracts as c; assert 'torch' not in sys.modules; print(c.ProblemFamily.data_term)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "None"


@pytest.mark.parametrize("spec, name, settings", [
    (LASSO, "least_squares", dict(m=6, n=10, n_train=4, n_val=4, n_test=4)),
    (SLR, "least_squares", dict(d=10, s=2, n_samples=[5, 8], n_train=4, n_val=4, n_test=4)),
    (SPE, "logdet", dict(d=5, M=20, n_train=4, n_val=4, n_test=4)),
])
def test_each_family_names_a_data_term_that_builds_from_its_observations(spec, name, settings):
    family = spec.build(**settings)
    assert family.data_term == name
    shared = family.draw_shared(generator())
    data = family.draw(3, generator(), shared, "test")
    term = build(family.data_term, data.observation())
    assert term.name == name
    x = term.start()
    assert term.value(x).shape == (3,) and term.gradient(x).shape == x.shape


# --------------------------------------------------------------------------- solvers

class _Unnamed(ProblemFamily):
    """A family that names no data term."""

    @staticmethod
    def loss(estimate, target):
        return ((estimate - target["x"]) ** 2).sum(-1)


def _apf(**params):
    return APF(**{"lam": 0.1, "penalty": "mcp", "eta": 0.9, "tol": 1e-6, "max_iter": 500, **params})


@pytest.mark.parametrize("spec, settings", [
    (SLR, dict(d=12, s=2, n_samples=[8, 14], snr=20, n_train=4, n_val=4, n_test=4)),
    (SPE, dict(d=6, M=30, n_train=4, n_val=4, n_test=4)),
])
def test_fitted_apf_state_round_trips_with_its_data_term(spec, settings):
    family = spec.build(**settings)
    val = family.draw(4, generator(5), {}, "val")
    test = family.draw(3, generator(6), {}, "test").observation()
    fitted = _apf().fit(FitContext(problem=family, train=val, val=val, tune={"penalty": ["mcp", "l1"]}))
    assert fitted.data_term_ == family.data_term
    buffer = io.BytesIO()
    torch.save(fitted.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert state["data_term"] == family.data_term
    loaded = _apf(penalty="scad").load_state_dict(state)
    assert loaded.data_term_ == family.data_term and loaded.penalty == fitted.penalty
    assert loaded.data_term_for(test).name == family.data_term
    ours, theirs = fitted.solve(test), loaded.solve(test)
    assert torch.equal(ours.estimate, theirs.estimate) and torch.equal(ours.iterations, theirs.iterations)
    with pytest.raises(RuntimeError, match=r"fit\(context\) or load_state_dict\(state\)"):
        _apf().solve(test)


def test_solvers_without_a_data_term_and_families_without_one():
    A, b, _ = regression()
    obs = {"A": A.float(), "b": b.float()}
    # ISTA reads its observation through LeastSquares and needs no name; its state carries none.
    assert ISTA(lam=0.1, step=1.0, max_iter=5, tol=0.0).solve(obs).estimate.shape == (N, N_COLS)
    with pytest.raises(ValueError, match="'A', 'b'"):
        ISTA(lam=0.1, step=1.0, max_iter=5, tol=0.0).solve({"S": A})
    data = Instances(observed=obs, target={"x": torch.zeros(N, N_COLS)})
    ista = ISTA(lam=0.1, step=1.0, max_iter=5, tol=0.0).fit(FitContext(problem=_Unnamed(), train=data, val=data))
    assert ista.data_term_ is None and ista.state_dict()["data_term"] == ""
    assert ISTA(lam=1, step=1, max_iter=1, tol=0).load_state_dict(ista.state_dict()).data_term_ is None
    # APF solves through a data term: a family without one is refused at fit, and a state without one at solve.
    with pytest.raises(ValueError, match="names none"):
        _apf().fit(FitContext(problem=_Unnamed(), train=data, val=data))
    with pytest.raises(RuntimeError, match="fit it again"):
        _apf().load_state_dict({"params": _apf().get_params()}).solve(obs)
