"""GLAD (thesis ch. 6, Algorithm 4): the AM Theta update, gradients, training, state."""
import io
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.linalg import sqrtm
from sklearn.covariance import graphical_lasso

from l2obench.contracts import Budget
from l2obench.learned import layer_weights, mean_loss, weighted_layer_loss
from l2obench.registry import Registry
from l2obench.testing import check_solver, smoke_context
from l2obench_plugins.glad import GLAD, GLADNetwork, am_theta_update

REGISTRY = Registry()

PARAMS = dict(n_layers=10, hidden=3, t_init=0.1, lambda_init=1.0, threshold_diagonal=True, output="z", lr=0.03,
              gamma=0.9, fresh_samples=True)


def spe(d, M, budget=None, seed=0, n_val=32, n_test=32):
    """A small ``spe`` fitting context (fresh training draws) and test split."""
    settings = {"d": d, "M": M, "edge_prob": [0.1, 0.3], "n_train": 64, "n_val": n_val, "n_test": n_test}
    return smoke_context(REGISTRY, "spe", settings, budget=budget, seed=seed)


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


def test_every_layer_is_symmetric_and_every_theta_positive_definite():
    torch.manual_seed(0)
    _, data = spe(d=8, M=4, n_test=16)  # M < d: S is singular
    S = data.observed["S"]
    thetas = GLADNetwork(n_layers=6, hidden=4, output="theta")
    zs = GLADNetwork(n_layers=6, hidden=4, output="z")
    zs.load_state_dict(thetas.state_dict())
    theta_layers, z_layers = thetas(S), zs(S)
    assert len(theta_layers) == len(z_layers) == 6
    for Theta, Z in zip(theta_layers, z_layers):
        assert Theta.shape == Z.shape == (16, 8, 8)
        assert torch.equal(Theta, Theta.transpose(1, 2)) and torch.equal(Z, Z.transpose(1, 2))
        assert (torch.linalg.eigvalsh(Theta.double()) > 0).all()
        # Z is Theta soft-thresholded entry-wise (eq. 6.4): same signs, smaller magnitudes.
        assert ((Z == 0) | (torch.sign(Z) == torch.sign(Theta))).all() and (Z.abs() <= Theta.abs()).all()
    assert (z_layers[-1] == 0).any()
    assert torch.equal(thetas(S, keep_all=False)[-1], theta_layers[-1])
    assert torch.equal(zs(S, keep_all=False)[-1], z_layers[-1])


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


@pytest.mark.parametrize("output", ["theta", "z"])
def test_loss_gradient_in_the_parameters_matches_finite_differences(output):
    """Eq. 6.5 through three GLAD cells, in float64, against finite differences."""
    torch.manual_seed(3)
    net = GLADNetwork(n_layers=3, hidden=3, output=output).double()
    context, data = spe(d=5, M=8, n_test=3)
    S, target = data.observed["S"].double(), {"Theta": data.target["Theta"].double()}
    weights = layer_weights(3, 0.8, S)
    names = [name for name, _ in net.named_parameters()]
    values = tuple(p.detach().clone().requires_grad_() for p in net.parameters())

    def loss(*params):
        outputs = torch.func.functional_call(net, dict(zip(names, params)), (S,))
        return weighted_layer_loss(context.problem, outputs, target, weights)

    # Eq. 6.5 with the family's loss: sum_k gamma^(K-k) mean_i ||out_k - Theta*||_F^2.
    outputs = net(S)
    by_hand = sum(0.8 ** (3 - k) * ((out - target["Theta"]) ** 2).sum((-1, -2)).mean()
                  for k, out in enumerate(outputs, 1))
    torch.testing.assert_close(loss(*values), by_hand)

    assert torch.autograd.gradcheck(loss, values)
    loss(*values).backward()
    assert all(torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0 for v in values)


def test_short_training_beats_the_untrained_network_and_tuned_glasso():
    context, test = spe(d=8, M=8, budget=Budget(steps=40, batch_size=32, eval_every=20, patience=5))
    model = GLAD(**{**PARAMS, "n_layers": 6}).fit(context)
    history = context.log["training"]
    assert history[0]["step"] == 0
    # Validation is the family's mean loss ||Z_K - Theta*||_F^2: step 0 is the untrained network's.
    untrained = GLAD(**{**PARAMS, "n_layers": 6}).initialize(context)
    before = mean_loss(context.problem, lambda obs: untrained.forward(obs, keep_all=False)[-1], context.val)
    after = mean_loss(context.problem, lambda obs: model.solve(obs).estimate, context.val)
    assert history[0]["val_metric"] == pytest.approx(before, rel=1e-5)
    assert min(h["val_metric"] for h in history) == pytest.approx(after, rel=1e-5)
    assert after < 0.7 * before, (after, before)
    glad_db = nmse_db(model.solve(test.observation()).estimate, test.target["Theta"])
    glasso_db = tuned_glasso_db(context.val, test)
    assert glad_db < glasso_db, (glad_db, glasso_db)


@pytest.mark.slow
@pytest.mark.parametrize("output", ["z", "theta"])
def test_training_at_d20_m20_beats_tuned_glasso(output):
    """The small scale's setting: GLAD ahead of the graphical lasso in NMSE at M = d = 20."""
    context, test = spe(d=20, M=20, budget=Budget(steps=600, batch_size=32, eval_every=50, patience=6), seed=5,
                        n_val=100, n_test=100)
    model = GLAD(**{**PARAMS, "n_layers": 15, "output": output}).fit(context)
    glad_db = nmse_db(model.solve(test.observation()).estimate, test.target["Theta"])
    glasso_db = tuned_glasso_db(context.val, test)
    assert glad_db < glasso_db - 1.0, (glad_db, glasso_db)


def test_state_dict_round_trip_with_weights_only_load():
    context, test = spe(d=6, M=10, budget=Budget(steps=5, batch_size=16, eval_every=5))
    model = GLAD(**{**PARAMS, "n_layers": 4}).fit(context)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    clone = GLAD(**{**PARAMS, "n_layers": 1, "hidden": 7}).load_state_dict(torch.load(buffer, weights_only=True))
    assert clone.get_params() == model.get_params()
    observation = test.observation()
    solution = clone.solve(observation, trajectory=True)
    assert torch.equal(solution.estimate, model.solve(observation).estimate)
    assert len(solution.trajectory) == 4 and torch.equal(solution.trajectory[-1], solution.estimate)
    assert (solution.iterations == 4).all()


def test_solver_contract():
    check_solver(REGISTRY, "glad", "spe", {"d": 6, "M": 10, "n_train": 32, "n_val": 16, "n_test": 16},
                 params={"n_layers": 3}, budget=Budget(steps=4, batch_size=16, eval_every=2))
