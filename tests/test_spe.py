import math

import pytest
import torch

from l2obench.contracts import Instances
from l2obench.registry import Registry
from l2obench_problems import SPE
from l2obench_problems.spe import SparsePrecisionEstimation, grid_adjacency

TINY = dict(d=12, M=30, n_train=8, n_val=4, n_test=4)


def draw(n=40, seed=0, split="test", **settings):
    family = SPE.build(**{**TINY, **settings})
    return family, family.draw(n, torch.Generator().manual_seed(seed), family.draw_shared(None), split)


def offdiag_upper(X):
    i, j = torch.triu_indices(X.shape[-1], X.shape[-1], offset=1)
    return X[..., i, j]


def test_registered_with_documented_settings(cli):
    assert Registry().problem("spe") == SPE
    assert all(p.help for p in SPE.params.values())
    code, out, _ = cli("list")
    assert code == 0 and "spe " in out and "graph='er'" in out


def test_generation_is_deterministic_given_the_seed():
    _, a = draw(seed=5, M=[10, 40])
    _, b = draw(seed=5, M=[10, 40])
    _, c = draw(seed=6, M=[10, 40])
    for key, value in a.tensors().items():
        assert torch.equal(value, b.tensors()[key]), key
    assert not torch.equal(a.observed["S"], c.observed["S"])
    assert a.observed["S"].dtype == a.target["Theta"].dtype == a.observed["M"].dtype == torch.float32
    assert set(a.observed) == {"S", "M"} and set(a.target) == {"Theta"}


@pytest.mark.parametrize("graph", ["er", "grid"])
def test_precision_is_symmetric_with_smallest_eigenvalue_one(graph):
    _, inst = draw(n=50, d=16, graph=graph)
    theta, S = inst.target["Theta"], inst.observed["S"]
    assert theta.shape == S.shape == (50, 16, 16)
    assert torch.equal(theta, theta.transpose(1, 2)) and torch.equal(S, S.transpose(1, 2))
    eig = torch.linalg.eigvalsh(theta.double())
    assert float((eig[:, 0] - 1).abs().max()) < 1e-4
    weights = offdiag_upper(theta)
    edges = weights[weights != 0].abs()
    assert float(edges.min()) >= 0.5 - 1e-6 and float(edges.max()) <= 1.0 + 1e-6
    assert (weights > 0).any() and (weights < 0).any()


@pytest.mark.parametrize("d", [25, 22])
def test_grid_graph_has_exactly_the_grid_edges(d):
    # Reference: nodes at (k // w, k % w), w = ceil(sqrt(d)); neighbours at Manhattan distance 1.
    w = math.ceil(math.sqrt(d))
    k = torch.arange(d)
    row, col = k // w, k % w
    reference = ((row[:, None] - row[None]).abs() + (col[:, None] - col[None]).abs()) == 1
    assert torch.equal(grid_adjacency(d) | grid_adjacency(d).T, reference)
    if d == 25:
        assert int(reference.sum()) // 2 == 2 * 5 * 4
    _, inst = draw(n=20, d=d, graph="grid")
    assert ((inst.target["Theta"] != 0) == (reference | torch.eye(d, dtype=torch.bool))).all()


def test_erdos_renyi_edge_frequency_matches_the_probability():
    pairs = 20 * 19 // 2
    _, inst = draw(n=400, d=20, edge_prob=0.1)
    fraction = (offdiag_upper(inst.target["Theta"]) != 0).double().mean(1)
    se = math.sqrt(0.1 * 0.9 / (400 * pairs))
    assert abs(float(fraction.mean()) - 0.1) < 4 * se
    # With a range, p is drawn per instance: mean (lo + hi) / 2 and more spread than one binomial.
    _, inst = draw(n=400, d=20, edge_prob=[0.05, 0.25])
    fraction = (offdiag_upper(inst.target["Theta"]) != 0).double().mean(1)
    assert abs(float(fraction.mean()) - 0.15) < 0.01
    binomial_var = 0.15 * 0.85 / pairs
    assert float(fraction.var()) > 3 * binomial_var  # var(p) = 0.2^2 / 12 = 5.2 binomial variances


def test_sample_covariance_converges_to_the_inverse_precision():
    # E ||S - Sigma||_F^2 = (1/M) sum_ij (Sigma_ij^2 + Sigma_ii Sigma_jj) for S = X^T X / M, x ~ N(0, Sigma).
    for M in (20, 200, 2000):
        _, inst = draw(n=200, d=6, M=M, edge_prob=0.4)
        sigma = torch.linalg.inv(inst.target["Theta"].double())
        S = inst.observed["S"].double()
        expected = ((sigma**2).sum((1, 2)) + sigma.diagonal(dim1=1, dim2=2).sum(1) ** 2) / M
        ratio = float(((S - sigma) ** 2).sum((1, 2)).mean() / expected.mean())
        assert 0.8 < ratio < 1.2, (M, ratio)
        assert (inst.observed["M"] == M).all()
    # Sampling with Theta as the covariance (a wrong sampler) misses by far more than the noise.
    wrong = ((S - inst.target["Theta"].double()) ** 2).sum((1, 2)).mean()
    assert float(wrong) > 100 * float(expected.mean())


def _instances(theta):
    n = theta.shape[0]
    return Instances(observed={"S": theta, "M": torch.full((n,), 10.0)}, target={"Theta": theta},
                     groups={"M": torch.full((n,), 10)})


def test_metrics_on_hand_computed_example():
    family = SPE.build(**{**TINY, "d": 3})
    theta = torch.tensor([[[2.0, -0.5, 0.0], [-0.5, 2.0, 0.6], [0.0, 0.6, 2.0]],
                          [[1.0, 0.0, 0.0], [0.0, 1.0, 0.7], [0.0, 0.7, 1.0]]])
    inst = _instances(theta)
    values = {m.metric: m.value for m in family.evaluate(theta.clone(), inst)}
    assert values["success"] == 1 and values["exact_recovery"] == 1
    assert values["tpr"] == 1 and values["fpr"] == 0 and values["fdr"] == 0
    assert values["nmse"] == 0 and values["nmse_db"] == -math.inf and values["frobenius_sq"] == 0

    estimate = theta.clone()
    estimate[0, 0, 1] = estimate[0, 1, 0] = 0.5       # flipped sign: still an edge, not a success
    estimate[0, 0, 2] = estimate[0, 2, 0] = 0.005     # under edge_tol: not an edge
    estimate[1, 0, 1] = estimate[1, 1, 0] = 0.2       # a false edge
    values = {m.metric: m.value for m in family.evaluate(estimate, inst)}
    # Instance 0 has a sign flipped; instance 1 finds its edge but adds a false one: the
    # thesis' PS counts instance 1 as a success, exact recovery does not.
    assert values["success"] == 0.5 and values["exact_recovery"] == 0
    assert values["tpr"] == 1                          # 3 true edges, all found
    assert values["fpr"] == pytest.approx(1 / 3)       # 3 true non-edges, one estimated
    assert values["fdr"] == pytest.approx(1 / 4)
    err = torch.tensor([2 * 1.0**2 + 2 * 0.005**2, 2 * 0.2**2])
    torch.testing.assert_close(family.loss(estimate, inst.target), err)
    assert values["frobenius_sq"] == pytest.approx(float(err.mean()))
    assert values["nmse"] == pytest.approx(float(err.sum() / (theta**2).sum()))

    estimate = theta.clone()
    estimate[1, 0, 1] = estimate[1, 1, 0] = 0.2       # only the second instance has a false edge
    values = {m.metric: m.value for m in family.evaluate(estimate, inst)}
    assert values["success"] == 1 and values["exact_recovery"] == 0.5
    estimate[1, 1, 2] = estimate[1, 2, 1] = 0.0        # ... and now misses its true edge
    assert {m.metric: m.value for m in family.evaluate(estimate, inst)}["success"] == 0.5
    empty = {m.metric: m.value for m in family.evaluate(torch.eye(3).expand(2, 3, 3), inst)}
    assert empty["tpr"] == 0 and empty["fpr"] == 0 and empty["fdr"] == 0
    assert empty["success"] == 0 and empty["exact_recovery"] == 0


def test_every_metric_per_sample_size_level():
    family, inst = draw(n=31, M=[10, 100, 1000])
    M = inst.groups["M"]
    assert [int((M == m).sum()) for m in (10, 100, 1000)] == [11, 10, 10]
    assert torch.equal(inst.observed["M"], M.float())
    # More samples, better S^{-1}: the plug-in estimate improves with M.
    estimate = torch.linalg.inv(inst.observed["S"].double() + 0.05 * torch.eye(12, dtype=torch.float64)).float()
    values = family.evaluate(estimate, inst)
    subsets = {m.subset for m in values}
    assert subsets == {"all", "M=10", "M=100", "M=1000"}
    names = {m.metric for m in values if m.subset == "all"}
    assert names == set(family.metrics)
    for subset in subsets:
        assert {m.metric for m in values if m.subset == subset} == names
    nmse = {m.subset: m.value for m in values if m.metric == "nmse_db"}
    assert nmse["M=10"] > nmse["M=100"] > nmse["M=1000"]
    mask = M == 100
    alone = {m.metric: m.value for m in family.evaluate(estimate[mask], inst.subset(mask))}
    assert {m.metric: m.value for m in values if m.subset == "M=100"} == alone


@pytest.mark.parametrize("settings, match", [
    ({"d": 1}, "d must be"),
    ({"graph": "tree"}, "graph must be one of er, grid"),
    ({"edge_prob": [0.3, 0.1]}, "edge_prob"),
    ({"edge_prob": 1.5}, "edge_prob"),
    ({"weights": [1.0, 0.5]}, "weights"),
    ({"M": 0}, "M must be"),
    ({"M": [10, 2.5]}, "M must be"),
    ({"M": []}, "M needs at least one level"),
    ({"edge_tol": -0.1}, "edge_tol"),
])
def test_invalid_settings_raise_clear_errors(settings, match):
    with pytest.raises(ValueError, match=match):
        SPE.build(**{**TINY, **settings})


def test_family_class_is_the_registered_factory():
    assert isinstance(SPE.build(**TINY), SparsePrecisionEstimation)
