"""GLAD (thesis ch. 6, Algorithm 4): the AM Theta update, gradients, training, state."""
import io
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.linalg import sqrtm
from sklearn.covariance import graphical_lasso

from l2obench.contracts import Budget, FitContext, Instances
from l2obench_plugins.glad import GLAD, GLADNetwork, am_theta_update, glad_loss
from l2obench_plugins.lista import layer_weights

PARAMS = dict(n_layers=10, hidden=3, t_init=0.1, lambda_init=1.0, threshold_diagonal=True, lr=0.03, gamma=0.9,
              fresh_samples=True)


def sparse_precision_instances(n, d, M, seed, p=0.15):
    """Erdos-Renyi precision matrices (off-diagonal weights U(-1, 1) on the edges, diagonal
    shifted to a smallest eigenvalue of 1) and sample covariances of M Gaussian samples."""
    gen = torch.Generator().manual_seed(seed)
    edges = torch.triu((torch.rand(n, d, d, generator=gen) < p).double(), 1)
    weights = torch.rand(n, d, d, generator=gen, dtype=torch.float64) * 2 - 1
    off = edges * weights
    off = off + off.transpose(1, 2)
    eye = torch.eye(d, dtype=torch.float64)
    Theta = off + (1 - torch.linalg.eigvalsh(off)[:, :1]).unsqueeze(-1) * eye
    X = torch.randn(n, M, d, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(
        torch.linalg.inv(Theta)).transpose(1, 2)
    S = X.transpose(1, 2) @ X / M
    return Instances(observed={"S": S.float(), "M": torch.full((n,), float(M))}, target={"Theta": Theta.float()})


def context_for(d, M, budget, seed=0, n_val=64):
    stream = iter(range(10_000, 10**9))
    return FitContext(problem=None, train=sparse_precision_instances(64, d, M, seed + 1),
                      val=sparse_precision_instances(n_val, d, M, seed + 2), budget=budget, seed=seed,
                      draw_train=lambda n: sparse_precision_instances(n, d, M, next(stream)))


def nmse_db(estimate, target):
    return 10 * math.log10(float(((estimate - target) ** 2).sum() / (target**2).sum()))


def tuned_glasso_db(val, test, alphas=(0.05, 0.1, 0.2, 0.4, 0.8)):
    """scikit-learn's graphical lasso at the alpha best on ``val``: NMSE (dB) on ``test``."""
    def solve(S, alpha):
        out = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for s in S.double().numpy():
                try:
                    out.append(graphical_lasso(s, alpha=alpha, max_iter=200)[1])
                except (FloatingPointError, ValueError):
                    out.append(np.full_like(s, np.inf))
        return torch.tensor(np.array(out)).float()

    scores = {a: nmse_db(solve(val.observed["S"], a), val.target["Theta"]) for a in alphas}
    best = min(alphas, key=lambda a: scores[a] if math.isfinite(scores[a]) else math.inf)
    return nmse_db(solve(test.observed["S"], best), test.target["Theta"])


def random_spd(n, d, gen, dtype=torch.float64):
    X = torch.randn(n, d, d, generator=gen, dtype=dtype)
    return X @ X.transpose(1, 2) / d + 0.1 * torch.eye(d, dtype=dtype)


def test_every_layer_is_symmetric_positive_definite():
    torch.manual_seed(0)
    net = GLADNetwork(n_layers=6, hidden=4)
    data = sparse_precision_instances(16, 8, 4, seed=3)  # M < d: S is singular
    layers = net(data.observed["S"])
    assert len(layers) == 6
    for Theta in layers:
        assert Theta.shape == (16, 8, 8)
        assert torch.equal(Theta, Theta.transpose(1, 2))
        assert (torch.linalg.eigvalsh(Theta.double()) > 0).all()
    assert torch.equal(net(data.observed["S"], keep_all=False)[-1], layers[-1])


def test_theta_update_is_the_minimiser_of_its_am_objective():
    """Thesis eq. 6.3 against the closed form with scipy's matrix square root, the
    first-order condition -Theta^{-1} + S + lam (Theta - Z) = 0, and random perturbations."""
    gen = torch.Generator().manual_seed(1)
    S = random_spd(3, 6, gen)
    Z = torch.randn(3, 6, 6, generator=gen, dtype=torch.float64)
    Z = Z + Z.transpose(1, 2)
    lam = torch.tensor([0.3, 1.0, 5.0], dtype=torch.float64)
    Theta = am_theta_update(S, Z, lam)
    for i in range(3):
        Y = (S[i] / lam[i] - Z[i]).numpy()
        closed = 0.5 * (-Y + sqrtm(Y.T @ Y + 4 / float(lam[i]) * np.eye(6)).real)
        np.testing.assert_allclose(Theta[i].numpy(), closed, atol=1e-9)
    residual = -torch.linalg.inv(Theta) + S + lam.reshape(-1, 1, 1) * (Theta - Z)
    assert residual.abs().max() < 1e-9

    def objective(T):
        return (-torch.logdet(T) + (S * T).sum((-1, -2)) + lam / 2 * ((Z - T) ** 2).sum((-1, -2)))

    base = objective(Theta)
    # Perturbations small enough to stay positive definite.
    scale = 0.1 * torch.linalg.eigvalsh(Theta)[:, :1].unsqueeze(-1)
    for _ in range(20):
        E = torch.randn(3, 6, 6, generator=gen, dtype=torch.float64) * scale / 6
        assert (objective(Theta + E + E.transpose(1, 2)) > base).all()


def test_theta_update_gradient_matches_finite_differences_even_with_repeated_eigenvalues():
    gen = torch.Generator().manual_seed(2)
    S = random_spd(2, 5, gen).requires_grad_()
    Z = torch.randn(2, 5, 5, generator=gen, dtype=torch.float64)
    Z = (Z + Z.transpose(1, 2)).requires_grad_()
    lam = torch.tensor([0.5, 2.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(am_theta_update, (S, Z, lam))
    # Y = S / lam - Z = 2 I: every eigenvalue repeated, where eigh's own backward divides by zero.
    S_rep = (2 * torch.eye(4, dtype=torch.float64)).expand(2, 4, 4).clone().requires_grad_()
    Z_rep = torch.zeros(2, 4, 4, dtype=torch.float64, requires_grad=True)
    lam_rep = torch.ones(2, dtype=torch.float64, requires_grad=True)
    W = torch.randn(2, 4, 4, generator=gen, dtype=torch.float64)
    (am_theta_update(S_rep, Z_rep, lam_rep) * W).sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (S_rep, Z_rep, lam_rep))
    assert torch.autograd.gradcheck(am_theta_update, (S_rep, Z_rep, lam_rep))


def test_loss_gradient_in_the_parameters_matches_finite_differences():
    """Eq. 6.5 through three GLAD cells, in float64, against finite differences."""
    torch.manual_seed(3)
    net = GLADNetwork(n_layers=3, hidden=3).double()
    data = sparse_precision_instances(3, 5, 8, seed=4)
    S, target = data.observed["S"].double(), data.target["Theta"].double()
    weights = layer_weights(3, 0.8, target)
    names = [name for name, _ in net.named_parameters()]
    values = tuple(p.detach().clone().requires_grad_() for p in net.parameters())

    def loss(*params):
        outputs = torch.func.functional_call(net, dict(zip(names, params)), (S,))
        return glad_loss(outputs, target, weights)

    assert torch.autograd.gradcheck(loss, values)
    loss(*values).backward()
    assert all(torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0 for v in values)


def test_short_training_beats_the_untrained_network_and_tuned_glasso():
    budget = Budget(steps=60, batch_size=32, eval_every=20, patience=5)
    context = context_for(d=8, M=8, budget=budget, n_val=32)
    model = GLAD(**{**PARAMS, "n_layers": 6}).fit(context)
    history = context.log["training"]
    assert history[0]["step"] == 0
    assert min(h["val_metric"] for h in history[1:]) < history[0]["val_metric"] - 0.5, history
    test = sparse_precision_instances(32, 8, 8, seed=99)
    glad_db = nmse_db(model.solve(test.observation()).estimate, test.target["Theta"])
    glasso_db = tuned_glasso_db(context.val, test)
    assert glad_db < glasso_db, (glad_db, glasso_db)


@pytest.mark.slow
def test_training_at_d20_beats_tuned_glasso():
    budget = Budget(steps=600, batch_size=32, eval_every=50, patience=6)
    context = context_for(d=20, M=20, budget=budget, seed=5)
    model = GLAD(**{**PARAMS, "n_layers": 15}).fit(context)
    test = sparse_precision_instances(100, 20, 20, seed=98)
    glad_db = nmse_db(model.solve(test.observation()).estimate, test.target["Theta"])
    glasso_db = tuned_glasso_db(context.val, test)
    assert glad_db < glasso_db - 1.0, (glad_db, glasso_db)


def test_state_dict_round_trip_with_weights_only_load():
    context = context_for(d=6, M=10, budget=Budget(steps=5, batch_size=16, eval_every=5))
    model = GLAD(**{**PARAMS, "n_layers": 4}).fit(context)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    clone = GLAD(**{**PARAMS, "n_layers": 1, "hidden": 7}).load_state_dict(torch.load(buffer, weights_only=True))
    assert clone.get_params() == model.get_params()
    observation = context.val.observation()
    solution = clone.solve(observation, trajectory=True)
    assert torch.equal(solution.estimate, model.solve(observation).estimate)
    assert len(solution.trajectory) == 4 and torch.equal(solution.trajectory[-1], solution.estimate)
    assert (solution.iterations == 4).all()
