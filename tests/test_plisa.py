"""PLISA (thesis Algorithms 5-6): reductions to ISTA and to the modified proximal step,
gradients, training, positive definiteness on SPE, state round trips."""
import io
import math

import numpy as np
import pytest
import torch
from sklearn.covariance import graphical_lasso

from l2obench.contracts import Budget, FitContext, Instances, ProblemFamily
from l2obench.precision import is_positive_definite, offdiag_mask, offdiag_soft_threshold
from l2obench.registry import Registry
from l2obench.testing import check_solver
from l2obench_plugins.plisa import PLISA, PLISANetwork, PLISAPrecisionNetwork, concave_gradient
from l2obench_plugins.proximal_gradient import FISTA, ISTA

SPEC = Registry().solver("plisa")
# lam_init: the spec's default for each family (SLR: absolute; SPE: in units of sqrt(log d / M)).
PARAMS = {family: SPEC.resolve({"n_blocks": 5, "n_layers": 2, "lr": 3e-2}, family=family) for family in ("slr", "spe")}
LAMBDA_GRID = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3)


# --------------------------------------------------------------------------- tiny families

class TinySLR(ProblemFamily):
    """Sparse regression with one Gaussian design per instance, ``n`` samples in
    ``[n_min, n_max]``, zero-padded, unit-norm columns (the ``slr`` conventions)."""

    data_term = "least_squares"  # PLISA builds its regression network for this data term

    def __init__(self, d=32, n_min=16, n_max=24, s=3, snr=30.0):
        super().__init__(d=d, n_min=n_min, n_max=n_max, s=s, snr=snr)

    def draw(self, N, generator, dtype=torch.float32):
        d, rows = self.d, self.n_max
        n = torch.randint(self.n_min, self.n_max + 1, (N,), generator=generator)
        real = (torch.arange(rows)[None, :] < n[:, None]).to(dtype)
        X = torch.randn(N, rows, d, generator=generator, dtype=dtype) * real[..., None]
        A = X / X.norm(dim=1, keepdim=True)
        support = torch.rand(N, d, generator=generator).argsort(-1)[:, :self.s]
        x = torch.zeros(N, d, dtype=dtype).scatter_(1, support, torch.randn(N, self.s, generator=generator,
                                                                             dtype=dtype))
        clean = torch.bmm(A, x.unsqueeze(-1)).squeeze(-1)
        sigma = (clean.pow(2).sum(-1) / n).sqrt() * 10 ** (-self.snr / 20)
        b = clean + torch.randn(N, rows, generator=generator, dtype=dtype) * sigma[:, None] * real
        return Instances({"A": A, "b": b, "n_samples": n}, {"x": x})

    def loss(self, estimate, target):
        return ((estimate - target["x"]) ** 2).sum(-1)


class TinyHeldOutSLR(TinySLR):
    """``TinySLR`` without ``beta*`` in the target: ``h`` held-out samples of the same model
    (rows scaled by the observed columns' norms) and the held-out least squares loss (thesis 7.6)."""

    def __init__(self, h=16, **settings):
        super().__init__(**settings)
        self.h = h

    def draw(self, N, generator, dtype=torch.float32):
        full = TinySLR(d=self.d, n_min=self.n_min + self.h, n_max=self.n_max + self.h, s=self.s, snr=self.snr)
        data = full.draw(N, generator, dtype)
        # Undo the column normalisation, then split the first h rows off as held-out samples.
        n = data.observed["n_samples"]
        A, b = data.observed["A"], data.observed["b"]
        keep = torch.arange(A.shape[1])[None, :] >= self.h
        obs_rows = keep & (torch.arange(A.shape[1])[None, :] < n[:, None])
        norms = (A * obs_rows[..., None]).norm(dim=1, keepdim=True)
        A_obs, A_out = A[:, self.h:] / norms, A[:, :self.h] / norms
        x = data.target["x"] * norms.squeeze(1)
        self.last_x = x  # for the test's own check; never in the target
        return Instances({"A": A_obs, "b": b[:, self.h:], "n_samples": n - self.h},
                         {"A_holdout": A_out, "b_holdout": b[:, :self.h]})

    def loss(self, estimate, target):
        residual = torch.bmm(target["A_holdout"], estimate.unsqueeze(-1)).squeeze(-1) - target["b_holdout"]
        return 0.5 * (residual**2).sum(-1)


class TinySPE(ProblemFamily):
    """Sparse precision matrices ``B + delta I`` (random sparse symmetric ``B``, smallest
    eigenvalue 0.2) and sample covariances of ``M`` Gaussian samples (the ``spe`` conventions)."""

    data_term = "logdet"  # PLISA builds its precision network for this data term

    def __init__(self, d=8, M=10, p=0.2):
        super().__init__(d=d, M=M, p=p)

    def draw(self, N, generator, dtype=torch.float32):
        d = self.d
        edges = torch.triu((torch.rand(N, d, d, generator=generator) < self.p).double(), 1)
        signs = torch.where(torch.rand(N, d, d, generator=generator) < 0.5, -1.0, 1.0).double()
        B = edges * signs * (0.2 + 0.6 * torch.rand(N, d, d, generator=generator, dtype=torch.float64))
        B = B + B.transpose(-1, -2)
        low = torch.linalg.eigvalsh(B)[:, 0]
        Theta = B + ((-low).clamp_min(0) + 0.2)[:, None, None] * torch.eye(d, dtype=torch.float64)
        L = torch.linalg.cholesky(torch.linalg.inv(Theta))
        Z = torch.randn(N, self.M, d, generator=generator, dtype=torch.float64) @ L.transpose(-1, -2)
        S = Z.transpose(-1, -2) @ Z / self.M
        return Instances({"S": S.to(dtype), "M": torch.full((N,), float(self.M), dtype=dtype)},
                         {"Theta": Theta.to(dtype)})

    def loss(self, estimate, target):
        T = target["Theta"]
        return ((estimate - T) ** 2).sum((-1, -2)) / (T**2).sum((-1, -2))


def make_context(family, n_train, n_val, budget, seed=0):
    generator = torch.Generator().manual_seed(seed)
    train, val = family.draw(n_train, generator), family.draw(n_val, generator)
    stream = torch.Generator().manual_seed(seed + 1)
    return FitContext(problem=family, train=train, val=val, budget=budget, seed=seed,
                      draw_train=lambda n: family.draw(n, stream))


def nmse_db(estimate, target):
    return 10 * math.log10(float(((estimate - target) ** 2).sum() / (target**2).sum()))


def fixed_slr_network(d, n_blocks, n_layers, lam, weights, step=1.0, decay_logit=-50.0, dtype=torch.float32):
    """A PLISA network with given weights; ``decay_logit = -50`` keeps lambda_t at lambda* (sigmoid ~ 0)."""
    full = lambda n, v: torch.full((n,), float(v), dtype=dtype)  # noqa: E731
    return PLISANetwork(full(d, decay_logit), full(d, math.log(lam)), torch.tensor(weights, dtype=dtype),
                        PLISANetwork.step_logits(step, 2.0, n_blocks, dtype=dtype), n_layers, "max", 2.0)


def spectral_lipschitz(A):
    return torch.linalg.matrix_norm(A.double(), ord=2) ** 2


# --------------------------------------------------------------------------- reductions

def test_l1_only_fixed_lambda_unit_step_is_ista():
    data = TinySLR(d=16, n_min=8, n_max=12).draw(6, torch.Generator().manual_seed(0))
    n_blocks, n_layers, lam = 3, 2, 0.05
    network = fixed_slr_network(16, n_blocks, n_layers, lam, [50.0, 0.0, 0.0])
    with torch.no_grad():
        layers = network(data.observation(), keep="layers")
    ista = ISTA(lam=lam, step=1.0, max_iter=n_blocks * n_layers, tol=0.0).solve(data.observation(), trajectory=True)
    assert len(layers) == len(ista.trajectory) == n_blocks * n_layers
    for ours, reference in zip(layers, ista.trajectory):
        assert torch.allclose(ours, reference, atol=1e-6), float((ours - reference).abs().max())
    assert (layers[-1] != 0).any() and (layers[-1] == 0).any()  # neither trivial nor dense


@pytest.mark.parametrize("which", ["mcp", "scad"])
def test_nonconvex_only_layer_is_the_modified_proximal_step(which):
    data = TinySLR(d=16, n_min=10, n_max=14, s=4).draw(5, torch.Generator().manual_seed(1), dtype=torch.float64)
    A, b = data.observed["A"], data.observed["b"]
    lam_star, decay, step = 0.05, 0.2, 1.5
    weights = [-50.0, 50.0, -50.0] if which == "mcp" else [-50.0, -50.0, 50.0]
    network = fixed_slr_network(16, 2, 3, lam_star, weights, step=step, decay_logit=math.log(decay / (1 - decay)),
                                dtype=torch.float64)
    with torch.no_grad():
        layers = network(data.observation(), keep="layers")
    # Hand-written Algorithms 5-6 for one instance after the other.
    gamma, a = 3.0, 3.7
    hits = set()
    for i in range(A.shape[0]):
        Ai, bi = A[i], b[i]
        alpha = step / spectral_lipschitz(Ai)
        lam = (Ai.T @ bi).abs().max() * torch.ones(16, dtype=torch.float64)
        beta = torch.zeros(16, dtype=torch.float64)
        expected = []
        for _ in range(2):
            lam = torch.maximum(decay * lam, torch.full_like(lam, lam_star))
            for _ in range(3):
                grad = Ai.T @ (Ai @ beta - bi)
                v = beta.abs()
                if which == "mcp":
                    q = torch.where(v <= gamma * lam, -beta / gamma, -lam * torch.sign(beta))
                    hits.update(["inner"] if ((v > 0) & (v <= gamma * lam)).any() else [])
                    hits.update(["outer"] if (v > gamma * lam).any() else [])
                else:
                    q = torch.where(v <= lam, 0 * beta,
                                    torch.where(v <= a * lam, -(v - lam) * torch.sign(beta) / (a - 1),
                                                -lam * torch.sign(beta)))
                    hits.update(["inner"] if ((v > lam) & (v <= a * lam)).any() else [])
                    hits.update(["outer"] if (v > a * lam).any() else [])
                z = beta - alpha * (grad + q)
                beta = torch.sign(z) * torch.clamp(z.abs() - alpha * lam, min=0)
                expected.append(beta)
        for ours, reference in zip(layers, expected):
            assert torch.allclose(ours[i], reference, atol=1e-12)
    assert hits == {"inner", "outer"}  # both branches of the penalty's derivative were exercised


def test_literal_lambda0_shrinks_without_selecting():
    # lam0 = "abs" (Algorithm 5 read literally): lambda_1 = sigmoid(eta) |A^T b|, so the first
    # layer from beta = 0 is (1 - sigmoid(eta)) alpha A^T b: every coordinate survives.
    data = TinySLR(d=16, n_min=10, n_max=14).draw(4, torch.Generator().manual_seed(2), dtype=torch.float64)
    network = PLISANetwork.initial(16, 1, 1, lam_init=1e-8, decay_init=0.3, lam0="abs", dtype=torch.float64)
    with torch.no_grad():
        out = network(data.observation(), keep="last")[-1]
    A, b = data.observed["A"], data.observed["b"]
    alpha = 1 / spectral_lipschitz(A)
    expected = 0.7 * alpha[:, None] * torch.bmm(b.unsqueeze(1), A).squeeze(1)
    assert torch.allclose(out, expected, atol=1e-12)
    maximal = PLISANetwork.initial(16, 1, 1, lam_init=1e-8, decay_init=0.3, lam0="max", dtype=torch.float64)
    with torch.no_grad():
        assert ((maximal(data.observation(), keep="last")[-1] == 0).sum(-1) > 0).all()


# --------------------------------------------------------------------------- gradients

def _gradcheck(network, observation, target):
    names = [name for name, _ in network.named_parameters()]
    values = tuple(p.detach().clone().requires_grad_(True) for p in network.parameters())

    def run(*params):
        out = torch.func.functional_call(network, dict(zip(names, params)), (observation,), {"keep": "blocks"})
        return torch.stack([((x - target) ** 2).sum() for x in out])

    assert torch.autograd.gradcheck(run, values, eps=1e-6, atol=1e-5, rtol=1e-4)
    grads = torch.autograd.grad(run(*values).sum(), values)
    assert all(torch.isfinite(g).all() for g in grads)
    assert all(g.abs().sum() > 0 for g in grads)  # every parameter influences the output


def test_slr_gradients_match_finite_differences():
    data = TinySLR(d=6, n_min=4, n_max=5, s=2).draw(3, torch.Generator().manual_seed(3), dtype=torch.float64)
    network = PLISANetwork.initial(6, 2, 2, lam_init=0.4, decay_init=0.5, dtype=torch.float64)
    with torch.no_grad():  # some coordinates reach lambda* in the second block, others not
        network.eta.copy_(torch.tensor([-2.0, 1.5, -1.0, 2.0, 0.5, -0.5]))
        network.w.copy_(torch.tensor([0.3, -0.2, 0.1]))
        network.step_logit.copy_(torch.tensor([0.3, -0.2]))
    _gradcheck(network, data.observation(), data.target["x"])


def test_spe_gradients_match_finite_differences():
    data = TinySPE(d=4, M=8, p=0.4).draw(2, torch.Generator().manual_seed(4), dtype=torch.float64)
    network = PLISAPrecisionNetwork.initial(4, 2, 2, lam_init=1.0, decay_init=0.5, dtype=torch.float64)
    with torch.no_grad():
        network.w.copy_(torch.tensor([0.3, -0.2, 0.1]))
        network.eta.add_(0.1 * torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    _gradcheck(network, data.observation(), data.target["Theta"])


# --------------------------------------------------------------------------- training

def tuned_classical(cls, context, iterations, **kw):
    def score(lam):
        return float(context.problem.loss(cls(lam=lam, max_iter=iterations, tol=0.0, **kw)
                                          .solve(context.val.observation()).estimate, context.val.target).sum())
    return min(LAMBDA_GRID, key=score)


def test_training_beats_untrained_network_and_tuned_ista_fista_at_equal_iterations():
    torch.manual_seed(0)
    context = make_context(TinySLR(), 256, 128, Budget(steps=150, batch_size=64, eval_every=25, patience=6))
    untrained = PLISA(**PARAMS["slr"]).initialize(context)
    assert isinstance(untrained.network_, PLISANetwork)
    with torch.no_grad():
        before = nmse_db(untrained.forward(context.val.observation(), keep_all=False)[-1], context.val.target["x"])
    model = PLISA(**PARAMS["slr"]).fit(context)
    history = context.log["training"]
    after = nmse_db(model.solve(context.val.observation()).estimate, context.val.target["x"])
    iterations = PARAMS["slr"]["n_blocks"] * PARAMS["slr"]["n_layers"]
    observation, x = context.val.observation(), context.val.target["x"]
    ista = ISTA(lam=tuned_classical(ISTA, context, iterations, step=1.0), step=1.0, max_iter=iterations, tol=0.0)
    fista = FISTA(lam=tuned_classical(FISTA, context, iterations, restart=True), restart=True,
                  max_iter=iterations, tol=0.0)
    ista_db, fista_db = nmse_db(ista.solve(observation).estimate, x), nmse_db(fista.solve(observation).estimate, x)
    assert min(h["val_metric"] for h in history[1:]) < history[0]["val_metric"]
    assert after < before - 3.0, (before, after)
    assert after < fista_db - 2.0 and after < ista_db - 2.0, (after, ista_db, fista_db)


def test_unsupervised_training_on_held_out_least_squares():
    # Thesis 7.6: the target holds held-out samples only; the loss of eq. 7.7 uses the family's loss.
    torch.manual_seed(0)
    family = TinyHeldOutSLR()
    context = make_context(family, 256, 128, Budget(steps=150, batch_size=64, eval_every=25, patience=6))
    generator = torch.Generator().manual_seed(0)  # make_context's draws again, to know beta* of val
    family.draw(256, generator)
    val = family.draw(128, generator)
    x = family.last_x
    assert torch.equal(val.observed["b"], context.val.observed["b"]) and "x" not in context.val.target
    with torch.no_grad():
        first = PLISA(**PARAMS["slr"]).initialize(context).solve(context.val.observation()).estimate
    model = PLISA(**PARAMS["slr"]).fit(context)
    estimate = model.solve(context.val.observation()).estimate
    assert family.loss(estimate, context.val.target).mean() < family.loss(first, context.val.target).mean()
    assert nmse_db(estimate, x) < nmse_db(first, x) - 3.0


def test_spe_training_improves_and_beats_tuned_graphical_lasso():
    torch.manual_seed(0)
    family = TinySPE(d=8, M=10)
    context = make_context(family, 256, 32, Budget(steps=40, batch_size=32, eval_every=10, patience=3))
    model = PLISA(**PARAMS["spe"])
    model.fit(context)
    assert isinstance(model.network_, PLISAPrecisionNetwork)
    history = context.log["training"]
    assert min(h["val_metric"] for h in history[1:]) < history[0]["val_metric"]
    ours = float(family.loss(model.solve(context.val.observation()).estimate, context.val.target).mean())
    # Validation is the family's mean loss of the last layer: the best entry is the fitted model's.
    assert min(h["val_metric"] for h in history) == pytest.approx(ours, rel=1e-5)

    def glasso(alpha):
        S = context.val.observed["S"].double().numpy()
        try:
            est = torch.tensor(np.array([graphical_lasso(s, alpha, max_iter=200)[1] for s in S])).float()
        except FloatingPointError:  # scikit-learn gives up on ill-conditioned instances at small alpha
            return math.inf
        return float(family.loss(est, context.val.target).mean())

    # Tuned on the same split (generous); at large alpha the estimate tends to diag(1 / S_ii).
    best = min(glasso(alpha) for alpha in (0.1, 0.2, 0.5, 1.0))
    assert math.isfinite(best)
    assert ours < best, (ours, best)


# --------------------------------------------------------------------------- SPE safeguard

@pytest.mark.parametrize("step", [1.0, 30.0])
def test_spe_every_layer_is_symmetric_positive_definite(step):
    data = TinySPE(d=8, M=6).draw(16, torch.Generator().manual_seed(5))
    network = PLISAPrecisionNetwork.initial(8, 3, 3, lam_init=0.2, decay_init=0.5, step_init=step, max_step=2 * step)
    with torch.no_grad():
        network.w.copy_(torch.tensor([-5.0, 5.0, 0.0]))  # mostly MCP: the non-convex case
        layers = network(data.observation(), keep="layers")
    assert len(layers) == 9
    for Theta in layers:
        assert torch.equal(Theta, Theta.transpose(-1, -2))
        assert is_positive_definite(Theta).all()
    if step > 1:
        # The safeguard was needed: from the first layer's output, the unguarded step is indefinite somewhere.
        S, Theta = data.observed["S"], layers[0]
        lam, weights = 0.05 * offdiag_mask(8, dtype=S.dtype), torch.softmax(torch.tensor([-5.0, 5.0, 0.0]), 0)
        grad = S - torch.linalg.inv(Theta) + concave_gradient(Theta, lam, weights)
        alpha = step * (torch.linalg.eigvalsh(Theta)[:, 0] ** 2)[:, None, None]
        raw = offdiag_soft_threshold(Theta - alpha * grad, alpha * lam)
        assert not is_positive_definite(raw).all()
        guarded = PLISAPrecisionNetwork.layer(Theta, S, lam, weights, torch.tensor(step), torch.eye(8))
        assert is_positive_definite(guarded).all() and torch.equal(guarded, guarded.transpose(-1, -2))


# --------------------------------------------------------------------------- state

@pytest.mark.parametrize("family", [TinySLR(d=16, n_min=8, n_max=12), TinySPE(d=6, M=8)])
def test_state_dict_round_trip_reproduces_estimates(family):
    context = make_context(family, 64, 32, Budget(steps=3, batch_size=16, eval_every=1, patience=5))
    params = PARAMS["spe" if family.data_term == "logdet" else "slr"]
    model = PLISA(**params).fit(context)
    observation = context.val.observation()
    solution = model.solve(observation, trajectory=True)
    assert len(solution.trajectory) == params["n_blocks"] * params["n_layers"]
    assert torch.equal(solution.trajectory[-1], solution.estimate)
    assert torch.equal(model.solve(observation).estimate, solution.estimate)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    clone = PLISA(**params).load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(clone.solve(observation).estimate, solution.estimate)
    assert int(solution.iterations[0]) == params["n_blocks"] * params["n_layers"]


def test_registered_for_slr_and_spe():
    assert SPEC.learned and set(SPEC.families) == {"slr", "spe"}
    sizes = ("lam_init", "n_blocks", "n_layers")
    assert {k: SPEC.build("slr").get_params()[k] for k in sizes} == {"lam_init": 0.05, "n_blocks": 20, "n_layers": 5}
    assert {k: SPEC.build("spe").get_params()[k] for k in sizes} == {"lam_init": 0.5, "n_blocks": 5, "n_layers": 4}
    assert SPEC.build("spe", n_layers=3).n_layers == 3


@pytest.mark.parametrize("family, settings", [
    ("slr", {"d": 16, "s": 2, "n_samples": [8, 12], "n_train": 64, "n_val": 32, "n_test": 32}),
    ("slr", {"d": 16, "s": 2, "n_samples": [12, 16], "supervised": False, "holdout": 4, "n_train": 64,
             "n_val": 32, "n_test": 32}),
    ("spe", {"d": 6, "M": 10, "n_train": 64, "n_val": 32, "n_test": 32}),
])
def test_solver_contract_on_the_registered_families(family, settings):
    solution = check_solver(Registry(), "plisa", family, settings, params={"n_blocks": 2},  # K: the default
                            budget=Budget(steps=5, batch_size=16, eval_every=5, patience=1))
    if family == "spe":
        assert is_positive_definite(solution.estimate).all()


def test_network_kind_follows_the_data_term():
    class NoDataTerm(TinySLR):
        data_term = None

    budget = Budget(steps=1, batch_size=8, eval_every=1)
    with pytest.raises(ValueError, match="least-squares or log-det data term"):
        PLISA(**PARAMS["slr"]).initialize(make_context(NoDataTerm(d=8, n_min=4, n_max=6), 16, 8, budget))
    # The kind is stored with the state and rebuilds the right network.
    spe = PLISA(**PARAMS["spe"]).initialize(make_context(TinySPE(d=5, M=8), 16, 8, budget))
    assert spe.state_dict()["config"] == {"kind": "spe", "d": 5}
    assert isinstance(PLISA(**PARAMS["spe"]).load_state_dict(spe.state_dict()).network_, PLISAPrecisionNetwork)
