"""The quadratic-energy family (thesis 4.3, 4.7) and its data term."""
import math

import pytest
import torch

from l2obench.cache import Cache
from l2obench.contracts import Instances
from l2obench.data import make_splits
from l2obench.datafits import QuadraticEnergy, build
from l2obench.energies import SpectralEnergy, compose, random_rotations
from l2obench.errors import SuiteFileError
from l2obench.registry import Registry
from l2obench.suites import plan
from l2obench_problems import QUADRATIC

TINY = dict(d=5, m=10, n_train=20, n_val=10, n_test=30, pool=200)
REGISTRY = Registry()


def family(**settings):
    return QUADRATIC.build(**{**TINY, **settings})


def draw(n=50, seed=0, split="test", **settings):
    fam = family(**settings)
    return fam, fam.draw(n, torch.Generator().manual_seed(seed), {}, split)


def test_registered_with_documented_settings(cli):
    assert REGISTRY.problem("quadratic") == QUADRATIC
    assert all(p.help for p in QUADRATIC.params.values())
    code, out, _ = cli("list")
    assert code == 0 and "quadratic " in out and "mode='hybrid'" in out


def test_generation_is_deterministic_given_the_seed():
    _, a = draw(seed=3)
    _, b = draw(seed=3)
    _, c = draw(seed=4)
    for key, value in a.tensors().items():
        assert torch.equal(value, b.tensors()[key]), key
        assert value.dtype == torch.float32
    assert not torch.equal(a.observed["x"], c.observed["x"])


def test_energies_are_spd_with_eigenvalues_spanning_mu_to_l_and_labels_are_the_minimizers():
    fam, inst = draw(n=400, mu=0.2, L=3.0)
    Q, b, y = inst.target["Q"].double(), inst.observed["b"].double(), inst.target["y"].double()
    torch.testing.assert_close(Q, Q.transpose(-1, -2))
    eigenvalues = torch.linalg.eigvalsh(Q)
    torch.testing.assert_close(eigenvalues[:, 0], torch.full((400,), 0.2, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(eigenvalues[:, -1], torch.full((400,), 3.0, dtype=torch.float64), atol=1e-5, rtol=0)
    middle = eigenvalues[:, 1:-1]
    assert middle.std() > 0.05  # the eigenvalues computed from x vary
    # y* = -Q^{-1} b: the gradient Q y* + b vanishes (float32 storage).
    assert (torch.bmm(Q, y.unsqueeze(-1)).squeeze(-1) + b).abs().max() < 1e-4 * b.abs().max() / 0.2
    R = inst.observed["R"].double()
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(5, dtype=torch.float64).expand(400, 5, 5),
                               atol=1e-6, rtol=0)
    # Q* = R diag(e*(x)) R^T with the family's fixed network.
    torch.testing.assert_close(fam.energy(inst.observed["x"].double(), R), Q, atol=1e-5, rtol=0)


def test_b_is_bounded_with_covariance_sigma_b_squared_identity():
    _, inst = draw(n=20000, sigma_b=2.0, d=4)
    b = inst.observed["b"].double()
    assert b.abs().max() <= math.sqrt(3) * 2.0
    covariance = b.T @ b / len(b)
    torch.testing.assert_close(covariance, 4.0 * torch.eye(4, dtype=torch.float64), atol=0.15, rtol=0)


def test_q_star_depends_on_x_and_on_the_energy_seed_only():
    fam = family()
    x = torch.rand(2, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 10 - 5
    R = torch.eye(5, dtype=torch.float64).expand(2, 5, 5)
    Q = fam.energy(x, R)
    assert not torch.allclose(Q[0], Q[1])
    assert torch.equal(family(n_test=7).energy(x, R), Q)  # one network per setting, whatever the sizes
    assert not torch.allclose(family(energy_seed=1).energy(x, R), Q)
    assert not torch.allclose(family(energy_hidden=8).energy(x, R), Q)


def test_modes_split_observation_and_target():
    _, hybrid = draw(n=6)
    assert set(hybrid.observed) == {"x", "R", "b"} and set(hybrid.target) == {"y", "Q"}
    _, given = draw(n=6, mode="given")
    assert set(given.observed) == {"Q", "b"} and set(given.target) == {"y"}
    # the same draw in both modes: given shows the hidden Q* of hybrid
    torch.testing.assert_close(given.observed["Q"], hybrid.target["Q"])
    torch.testing.assert_close(given.target["y"], hybrid.target["y"])


def test_training_sets_are_nested_along_n_train_and_other_splits_identical():
    spec = REGISTRY.problem("quadratic")
    small, large = (make_splits(spec, spec.resolve({**TINY, "n_train": n}), 0, Cache(enabled=False))
                    for n in (20, 60))
    assert small.key != large.key  # cached apart
    torch.testing.assert_close(large.splits["train"].observed["x"][:20], small.splits["train"].observed["x"])
    for split in ("val", "test"):
        assert torch.equal(small.splits[split].observed["x"], large.splits[split].observed["x"])
    other_seed = make_splits(spec, spec.resolve({**TINY, "n_train": 20}), 1, Cache(enabled=False))
    assert not torch.equal(other_seed.splits["test"].observed["x"], small.splits["test"].observed["x"])


def test_loss_evaluate_and_module_errors():
    fam, inst = draw(n=40)
    y = inst.target["y"]
    torch.testing.assert_close(fam.loss(y + 3.0, inst.target), torch.full((40,), 3.0 * math.sqrt(5)))
    values = {m.metric: m.value for m in fam.evaluate(y + 3.0, inst)}
    assert values["l2_error"] == pytest.approx(3.0 * math.sqrt(5), rel=1e-6)
    assert values["nmse"] == pytest.approx(45.0 / float((y.double() ** 2).sum(1).mean()), rel=1e-5)
    assert values["nmse_db"] == pytest.approx(10 * math.log10(values["nmse"]))
    Q = inst.target["Q"]
    assert fam.evaluate_extras({}, inst) == []
    exact = {m.metric: m.value for m in fam.evaluate_extras({"Q": Q}, inst)}
    assert exact == {"module_error": 0.0, "module_error_spectral": 0.0}
    shifted = {m.metric: m.value for m in fam.evaluate_extras({"Q": Q + 0.5 * torch.eye(5)}, inst)}
    assert shifted["module_error"] == pytest.approx(5 * 0.25) and shifted["module_error_spectral"] == pytest.approx(0.5)
    _, given = draw(n=5, mode="given")
    assert fam.evaluate_extras({"Q": given.observed["Q"]}, given) == []  # no hidden Q* to compare with


@pytest.mark.parametrize("settings, match", [
    ({"mu": 1.0, "L": 0.5}, "need 0 < mu < L"),
    ({"d": 2}, r"settings.d: must be an int >= 3"),
    ({"pool": 10, "n_train": 20}, r"pool \(10\) must hold at least n_train \(20\)"),
    ({"mode": "both"}, "settings.mode: must be one of hybrid, given"),
])
def test_invalid_settings_name_the_entry_and_setting(settings, match):
    suite = {"problems": [{"family": "quadratic", "settings": settings}], "solvers": []}
    with pytest.raises(SuiteFileError, match=r"quad\.problems\[0\].*" + match):
        plan(REGISTRY, "quad", suite, scale="smoke")


def test_spectral_energy_architecture():
    net = SpectralEnergy(m=4, d=6, hidden=0, mu=0.5, L=2.0)
    assert [type(layer).__name__ for layer in net.eigen_net] == ["Linear"]  # hidden 0: linear
    assert [type(layer).__name__ for layer in SpectralEnergy(4, 6, 7, 0.5, 2.0).eigen_net] == ["Linear", "ReLU",
                                                                                                "Linear"]
    e = net.eigenvalues(torch.randn(3, 4))
    assert (e[:, 0] == 2.0).all() and (e[:, -1] == 0.5).all() and ((e >= 0.5) & (e <= 2.0)).all()
    # the middle eigenvalues are mu + (L - mu) times a probability vector
    torch.testing.assert_close((e[:, 1:-1] - 0.5).sum(1), torch.full((3,), 1.5))
    with pytest.raises(ValueError, match="d >= 3"):
        SpectralEnergy(4, 2, 3, 0.5, 2.0)
    R = random_rotations(3, 6, torch.Generator().manual_seed(0))
    torch.testing.assert_close(torch.linalg.eigvalsh(compose(R, e.double())), e.double().sort(-1).values)


def test_quadratic_data_term_gradient_minimizer_and_bounds():
    _, inst = draw(n=8, mode="given")
    term = build("quadratic", inst.observation(), needs=("gradient", "lipschitz", "strong_convexity"))
    assert isinstance(term, QuadraticEnergy)
    Q, b = inst.observed["Q"].double(), inst.observed["b"].double()
    term64 = QuadraticEnergy(Q, b)
    y = torch.randn(8, 5, dtype=torch.float64)
    direction = torch.randn(8, 5, dtype=torch.float64)
    eps = 1e-6
    numeric = (term64.value(y + eps * direction) - term64.value(y - eps * direction)) / (2 * eps)
    torch.testing.assert_close(numeric, (term64.gradient(y) * direction).sum(-1), rtol=1e-6, atol=1e-6)
    y_star = term64.minimizer()
    torch.testing.assert_close(term64.gradient(y_star), torch.zeros_like(y_star), atol=1e-10, rtol=0)
    torch.testing.assert_close(term64.value(y_star), -0.5 * (b * torch.linalg.solve(Q, b)).sum(-1))
    torch.testing.assert_close(term.lipschitz(), torch.ones(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(term.strong_convexity(), torch.full((8,), 0.1), atol=1e-5, rtol=0)
    assert term.start().abs().sum() == 0 and term.finish(y).dtype == torch.float32
    with pytest.raises(ValueError, match="quadratic data term needs the observation's 'Q'"):
        build("quadratic", {"x": y, "b": y})
    with pytest.raises(ValueError, match=r"Q \(N, d, d\)"):
        QuadraticEnergy(Q[0], b)


def test_instances_round_trip_through_tensors():
    _, inst = draw(n=4)
    back = Instances.from_tensors(inst.tensors())
    assert set(back.observed) == {"x", "R", "b"} and set(back.target) == {"y", "Q"}


def test_quadratic_suite_plans_the_thesis_figures_at_each_scale():
    definition = REGISTRY.suite("quadratic").definition
    small = plan(REGISTRY, "quadratic", definition, scale="small")
    layers = ("gd_layer", "nag_layer", "rnn_layer")
    ks = (1, 2, 4, 8, 16, 32)
    hybrid = {(c.solver, c.params["k"], c.params["hidden"]) for c in small if c.problem_label == "quad-hybrid"}
    assert hybrid == {(s, k, h) for s in layers for k in ks for h in (0, 16, 32)}  # Figs. 4.3-4.5
    given = {(c.solver, c.params["k"]) for c in small if c.problem_label == "quad-given"}
    assert given == {(s, k) for s in layers + ("gd", "nag") for k in ks}  # NeurIPS Fig. 6
    assert len(small) == 3 * 6 * 3 + 5 * 6 and {c.seed for c in small} == {0}
    assert {(c.settings["n_train"], c.settings["d"], c.settings["m"]) for c in small} == {(100, 5, 10)}
    assert {str(c.params["lr"]) for c in small if c.learned} == {"[0.01, 0.001]"}
    assert {c.budget.steps for c in small if c.learned} == {1500}
    paper = plan(REGISTRY, "quadratic", definition, scale="paper")
    assert {c.seed for c in paper} == set(range(20)) and max(c.params["k"] for c in paper) == 30
    assert {c.settings["n_train"] for c in paper if c.problem_label == "quad-hybrid-n"} == {30, 300, 1000, 3000}
    assert len(plan(REGISTRY, "quadratic", definition, scale="smoke")) == 22


def test_pool_null_draws_training_pairs_directly_as_documented():
    definition = {"problems": [{"family": "quadratic", "label": "direct",
                                "settings": {"pool": None, "n_train": 20, "n_val": 10, "n_test": 10}}],
                  "solvers": [{"solver": "gd"}]}
    cell = plan(REGISTRY, "direct", definition, scale="small")[0]
    assert cell.settings["pool"] is None
    splits = make_splits(QUADRATIC, cell.settings, 0, Cache(enabled=False))
    assert len(splits.splits["train"]) == 20
    pooled = make_splits(QUADRATIC, {**cell.settings, "pool": 20}, 0, Cache(enabled=False))
    assert not torch.equal(splits.splits["train"].observed["b"], pooled.splits["train"].observed["b"])
