"""The unrolled quadratic-energy denoiser (NeurIPS 2020 section 7.2)."""
import pytest
import torch

from l2obench.contracts import Budget
from l2obench.registry import Registry
from l2obench.testing import check_solver, smoke_context
from l2obench_plugins.energy_denoiser import QuadraticEnergyModel
from l2obench_problems.denoising import psnr

REGISTRY = Registry()
TINY = {"crop": 16, "n_train": 32, "n_val": 8, "n_test": 10, "n_ood": 4}
BUDGET = Budget(steps=30, batch_size=8, eval_every=10, patience=3)


def model(algorithm="gd", k=5, **kwargs):
    torch.manual_seed(0)
    net = QuadraticEnergyModel(algorithm, k, 4, 3, kwargs.pop("g_layers", 4), 3, 2.0, 1.0, **kwargs)
    with torch.no_grad():  # random (non-zero) f and g
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return net.eval()


def test_gradient_is_that_of_the_energy_and_the_minimizer_is_closed_form():
    net = model()
    noisy = torch.rand(3, 1, 10, 10)
    y = torch.rand(3, 1, 10, 10, requires_grad=True)
    (gradient,) = torch.autograd.grad(net.energy(noisy, y).sum(), y)
    with torch.no_grad():
        target = noisy - net.g(noisy)
        torch.testing.assert_close(gradient, (1 + net.coefficients(noisy) ** 2) * y - target)
        star = net.minimizer(noisy)
    star.requires_grad_(True)
    (at_star,) = torch.autograd.grad(net.energy(noisy, star).sum(), star)
    assert at_star.abs().max() < 1e-5
    assert net.g is not None and model(g_layers=0).g is None
    c = net.coefficients(noisy)
    assert c.min() > 0 and c.max() < 2.0


@pytest.mark.parametrize("algorithm", ["gd", "nag"])
def test_unrolled_iterates_converge_to_the_minimizer_within_the_stable_region(algorithm):
    noisy = torch.rand(2, 1, 8, 8)
    errors = []
    for k in (1, 4, 16, 64):
        net = model(algorithm, k)
        with torch.no_grad():
            errors.append(float((net(noisy, keep_all=False)[-1] - net.minimizer(noisy)).abs().max()))
    assert errors[0] > errors[1] > errors[2] > errors[3] and errors[3] < 1e-4
    net = model(algorithm, 3)
    with torch.no_grad():
        net.r.fill_(10.0)  # however training moves r, phi stays below phi_max
    assert 0 < float(net.step.detach()) < net.phi_max
    assert net.phi_max == pytest.approx(2 / 6 if algorithm == "gd" else 4 / 16)  # mu = 1, L = 1 + 2^2
    assert len(net(noisy)) == 3
    with pytest.raises(ValueError, match="stable region"):
        QuadraticEnergyModel(algorithm, 3, 4, 3, 4, 3, 2.0, 5.0)


def test_training_lowers_validation_mse_and_beats_the_noisy_input_at_sigma_25():
    settings = {"crop": 32, "n_train": 64, "n_val": 16, "n_test": 16, "test_sigma": [25.0], "ood_sigma": []}
    context, test = smoke_context(REGISTRY, "denoising", settings,
                                  budget=Budget(steps=60, batch_size=16, eval_every=20, patience=3))
    solver = REGISTRY.solver("energy_denoiser").build("denoising", k=4, f_width=4, g_width=8, patch=16, lr=1e-2,
                                                      lr_decays=[])
    solver.fit(context)
    history = context.log["training"]
    assert min(h["val_metric"] for h in history) < 0.7 * history[0]["val_metric"]
    obs, clean = test.observation(), test.target["clean"]
    assert psnr(solver.solve(obs).estimate, clean).mean() > psnr(obs["noisy"], clean).mean() + 1.0
    assert len(solver.solve(obs, trajectory=True).trajectory) == 4


@pytest.mark.parametrize("algorithm", ["gd", "nag"])
def test_registered_energy_denoiser_meets_the_solver_contract(algorithm):
    check_solver(REGISTRY, "energy_denoiser", "denoising", TINY,
                 params={"algorithm": algorithm, "k": 3, "patch": 8}, budget=BUDGET)
