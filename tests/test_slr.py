import math

import numpy as np
import pytest
import torch

from l2obench.contracts import Instances
from l2obench.registry import Registry
from l2obench_problems import SLR
from l2obench_problems.slr import SparseLinearRegression

TINY = dict(d=16, s=3, n_samples=[6, 12], n_train=8, n_val=4, n_test=4)


def draw(n=40, seed=0, split="test", **settings):
    family = SLR.build(**{**TINY, **settings})
    return family, family.draw(n, torch.Generator().manual_seed(seed), family.draw_shared(None), split)


def test_registered_with_documented_settings(cli):
    spec = Registry().problem("slr")
    assert spec == SLR
    assert all(p.help for p in SLR.params.values())
    code, out, _ = cli("list")
    assert code == 0 and "slr " in out and "n_samples=[96, 160]" in out


def test_generation_is_deterministic_given_the_seed():
    _, a = draw(seed=3, holdout=0.25)
    _, b = draw(seed=3, holdout=0.25)
    _, c = draw(seed=4, holdout=0.25)
    for key, value in a.tensors().items():
        assert torch.equal(value, b.tensors()[key]), key
    assert not torch.equal(a.observed["A"], c.observed["A"])
    assert a.observed["A"].dtype == torch.float32 and a.target["x"].dtype == torch.float32


def test_shapes_padding_and_unit_norm_columns():
    family, inst = draw(n=60)
    A, b, n = inst.observed["A"], inst.observed["b"], inst.observed["n_samples"]
    assert A.shape == (60, 12, 16) and b.shape == (60, 12) and n.dtype == torch.int64
    assert 6 <= int(n.min()) and int(n.max()) <= 12 and len(set(n.tolist())) > 3
    real = torch.arange(12) < n[:, None]
    assert (A[~real] == 0).all() and (b[~real] == 0).all()
    torch.testing.assert_close(A.norm(dim=1), torch.ones(60, 16))
    x = inst.target["x"]
    assert ((x != 0).sum(1) == 3).all()
    assert (x[x != 0].abs() >= 0.5).all() and (x.abs() <= 1.5).all()
    assert (x > 0).any() and (x < 0).any()


def test_noise_level_follows_the_snr():
    _, inst = draw(n=400, d=32, s=4, n_samples=[40, 60], snr=[10, 30])
    A, b, x = inst.observed["A"], inst.observed["b"], inst.target["x"]
    clean = torch.bmm(A, x.unsqueeze(-1)).squeeze(-1)
    ratio_db = 10 * torch.log10((clean**2).sum(1) / ((b - clean) ** 2).sum(1))
    snr = inst.groups["snr"]
    assert (snr == 10).sum() == (snr == 30).sum() == 200
    # Per-instance empirical SNR scatters around its level (chi-square with ~50 dof: a few dB).
    for level in (10, 30):
        assert abs(float(ratio_db[snr == level].mean()) - level) < 0.5
    _, noiseless = draw(n=5, snr=None)
    A, b, x = noiseless.observed["A"], noiseless.observed["b"], noiseless.target["x"]
    torch.testing.assert_close(torch.bmm(A, x.unsqueeze(-1)).squeeze(-1), b)


def test_design_has_toeplitz_correlation():
    # Unit-norm columns: <A_j, A_k> is the (uncentred) sample correlation, rho^|j-k| in expectation.
    _, inst = draw(n=300, d=8, s=1, n_samples=60, rho=0.6)
    G = inst.observed["A"].transpose(1, 2) @ inst.observed["A"]
    mean = G.mean(0)
    for lag in (1, 2, 3):
        assert abs(float(mean.diagonal(lag).mean()) - 0.6**lag) < 0.03
    _, white = draw(n=300, d=8, s=1, n_samples=60, rho=0.0)
    G = white.observed["A"].transpose(1, 2) @ white.observed["A"]
    assert float(G.mean(0).diagonal(1).abs().max()) < 0.04


def test_metrics_on_hand_computed_example():
    family = SLR.build(**TINY)
    x = torch.tensor([[1.0, 0.0, -2.0, 0.0], [0.0, 0.5, 0.0, 0.0]])
    inst = Instances(observed={"A": torch.zeros(2, 1, 4)}, target={"x": x},
                     groups={"snr": torch.tensor([20.0, 20.0], dtype=torch.float64)})
    values = {m.metric: m.value for m in family.evaluate(x.clone(), inst)}
    assert values["nmse"] == 0 and values["nmse_db"] == -math.inf and values["l2_error"] == 0
    assert values["support_precision"] == values["support_recall"] == values["support_f1"] == 1
    # One miss (x_12), one false positive (0.3), one entry under support_tol (0.005): not a non-zero.
    estimate = torch.tensor([[0.9, 0.3, -2.0, 0.005], [0.0, 0.0, 0.0, 0.0]])
    values = {m.metric: m.value for m in family.evaluate(estimate, inst)}
    err = 0.01 + 0.09 + 0.000025 + 0.25
    assert values["nmse"] == pytest.approx(err / 5.25)
    assert values["nmse_db"] == pytest.approx(10 * math.log10(err / 5.25))
    assert values["l2_error"] == pytest.approx((math.sqrt(0.100025) + 0.5) / 2)
    assert values["support_precision"] == pytest.approx(2 / 3)
    assert values["support_recall"] == pytest.approx(2 / 3)
    assert values["support_f1"] == pytest.approx(2 / 3)
    torch.testing.assert_close(family.loss(estimate, inst.target), torch.tensor([0.100025, 0.25]))


def test_every_metric_per_snr_level():
    family, inst = draw(n=30, snr=[10, 40])
    estimate = inst.target["x"] + 0.1 * torch.randn(30, 16, generator=torch.Generator().manual_seed(1))
    values = family.evaluate(estimate, inst)
    subsets = {m.subset for m in values}
    assert subsets == {"all", "snr=10", "snr=40"}
    names = {m.metric for m in values if m.subset == "all"}
    assert names == {m.metric for m in values if m.subset == "snr=10"} == {m.metric for m in values if m.subset == "snr=40"}
    mask = inst.groups["snr"] == 40
    alone = {m.metric: m.value for m in family.evaluate(estimate[mask], inst.subset(mask))}
    assert {m.metric: m.value for m in values if m.subset == "snr=40"} == alone
    assert {m.subset for m in family.evaluate(estimate, inst, per_subset=False)} == {"all"}


@pytest.mark.parametrize("holdout", [3, 0.3])
def test_unsupervised_loss_is_held_out_least_squares(holdout):
    family, inst = draw(n=25, holdout=holdout, supervised=False, n_samples=[10, 14])
    n_obs, n_hold = inst.observed["n_samples"], inst.target["n_holdout"]
    n_total = n_obs + n_hold
    assert 10 <= int(n_total.min()) and int(n_total.max()) <= 14
    expected_hold = torch.full_like(n_total, 3) if holdout == 3 else torch.round(0.3 * n_total.double()).long()
    assert torch.equal(n_hold, expected_hold)
    A_h, b_h = inst.target["A_holdout"], inst.target["b_holdout"]
    assert A_h.shape[1] == int(n_hold.max()) and inst.observed["A"].shape[1] == 14 - int(expected_hold.max())
    torch.testing.assert_close(inst.observed["A"].norm(dim=1), torch.ones(25, 16))
    beta = torch.randn(25, 16, generator=torch.Generator().manual_seed(2))
    expected = torch.stack([0.5 * ((A_h[i, :h] @ beta[i] - b_h[i, :h]) ** 2).sum()
                            for i, h in enumerate(n_hold.tolist())])
    torch.testing.assert_close(family.loss(beta, inst.target), expected)
    assert (A_h[torch.arange(A_h.shape[1]) >= n_hold[:, None]] == 0).all()
    values = {m.metric: m.value for m in family.evaluate(beta, inst)}
    assert values["holdout_mse"] == pytest.approx(float(2 * expected.sum() / n_hold.sum()), rel=1e-5)
    assert "nmse_db" in values
    # The held-out rows follow the same model: noiseless, beta* fits them exactly.
    family, inst = draw(n=5, holdout=holdout, supervised=False, snr=None)
    assert float(family.loss(inst.target["x"], inst.target).abs().max()) < 1e-10
    # The supervised loss ignores the held-out samples.
    family, inst = draw(n=5, holdout=holdout)
    torch.testing.assert_close(family.loss(beta[:5], inst.target), ((beta[:5] - inst.target["x"]) ** 2).sum(1))


def test_lasso_recovers_the_default_support_better_than_chance():
    """The default (paper-scale) setting is neither trivial nor hopeless for the LASSO.

    scikit-learn minimises (1 / 2n) ||A x - b||^2 + alpha ||x||_1, so alpha = lam / n
    gives 0.5 ||A x - b||^2 + lam ||x||_1 on each instance's n real rows.
    """
    from sklearn.linear_model import Lasso

    family = SLR.build()
    inst = family.draw(4, torch.Generator().manual_seed(0), {}, "test")
    estimate = []
    for A, b, n in zip(inst.observed["A"], inst.observed["b"], inst.observed["n_samples"].tolist()):
        model = Lasso(alpha=0.1 / n, fit_intercept=False, max_iter=10000, tol=1e-8)
        estimate.append(model.fit(A[:n].double().numpy(), b[:n].double().numpy()).coef_)
    values = {m.metric: m.value for m in family.evaluate(torch.tensor(np.array(estimate)).float(), inst)}
    chance = family.s / family.d  # precision of a support guessed at random
    assert values["support_precision"] > 5 * chance and values["support_recall"] > 0.8
    assert values["support_f1"] < 1.0 and -30 < values["nmse_db"] < -5


@pytest.mark.parametrize("settings, match", [
    ({"s": 20}, "s .* must be an integer in"),
    ({"n_samples": [12, 6]}, "n_samples must be"),
    ({"rho": 1.0}, "rho"),
    ({"beta_min": 2.0, "beta_max": 1.0}, "beta_min <= beta_max"),
    ({"supervised": False}, "supervised = false needs holdout"),
    ({"holdout": 6}, "must leave at least one"),
    ({"holdout": 1.5}, "holdout must be"),
    ({"support_tol": -1}, "support_tol"),
    ({"snr": []}, "snr needs at least one level"),
])
def test_invalid_settings_raise_clear_errors(settings, match):
    with pytest.raises(ValueError, match=match):
        SLR.build(**{**TINY, **settings})


def test_family_class_is_the_registered_factory():
    assert isinstance(SLR.build(**TINY), SparseLinearRegression)
