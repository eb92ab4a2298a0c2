"""ALISTA and LISTA-CPSS: analytic weight, support selection, training and state."""
import io
import math
import types

import pytest
import torch

import l2obench
from l2obench.contracts import Budget, FitContext
from l2obench.learned import mean_loss
from l2obench.ops import soft_threshold
from l2obench.registry import Registry
from l2obench.testing import check_solver, registered, smoke_context
from l2obench_plugins.alista import (ALISTA, LISTACPSS, ALISTANetwork, LISTACPSSNetwork, analytic_design,
                                     analytic_step_scale, analytic_weight, analytic_weight_pgd, support_percentages,
                                     support_selection)
from l2obench_plugins.proximal_gradient import ISTA

REGISTRY = Registry()
TINY = {"m": 20, "n": 40, "n_train": 384, "n_val": 96, "n_test": 96}
BUDGET = Budget(steps=300, batch_size=64, eval_every=50, patience=4)  # the smoke suite's budget
PARAMS = {"n_layers": 16, "gamma": 0.9, "lam_init": 0.1, "support_p": 1.2, "support_max": 13.0, "fresh_samples": True}
LR = {ALISTA: 5e-3, LISTACPSS: 5e-3}


def nmse_db(estimate, target):
    return 10 * math.log10(float(((estimate - target) ** 2).sum() / (target**2).sum()))


def off_diagonal_norm(M):
    return float((M - torch.diag(torch.diagonal(M))).norm())


def sensing_matrix():
    _, test = smoke_context(REGISTRY, "lasso", TINY)
    return test.shared["A"]


def alista_network(percents, A, lam=0.1, step=None, theta=None, fixed=True):
    """An ALISTA network on ``A`` (m, n): untrained (``step = 1``, ``theta = lam``), or with the given
    per-layer ``step`` and ``theta``; ``fixed``: ``A`` is its fixed design, else it reads per-instance designs."""
    network = ALISTANetwork(percents, A.shape[-2], A.shape[-1], fixed_design=fixed)
    with torch.no_grad():
        network.set_initial(lam)
        if fixed:
            network.set_design(A)
        for k in range(len(percents)):
            if step is not None:
                network.step[k].fill_(float(step[k]))
            if theta is not None:
                network.theta[k].fill_(float(theta[k]))
    return network


def cpss_network(percents, A, lam=0.1):
    """The untrained LISTA-CPSS network: ISTA's weights in every layer."""
    network = LISTACPSSNetwork(percents, A.shape[0], A.shape[1])
    with torch.no_grad():
        network.set_ista(A, lam)
    return network


# --------------------------------------------------------------------------- analytic weight

def test_analytic_weight_closed_form_matches_projected_gradient():
    A = sensing_matrix().double()
    W = analytic_weight(A)
    W_pgd = analytic_weight_pgd(A, steps=5000)
    assert W.shape == A.shape and W.dtype == torch.float64
    assert torch.allclose(W_pgd, W, rtol=0, atol=1e-8), float((W_pgd - W).abs().max())
    G = W.T @ A
    assert torch.allclose(torch.diagonal(G), torch.ones(A.shape[1], dtype=A.dtype), atol=1e-12)
    # W = A is feasible (unit-norm columns): the natural competitor, and PGD's start.
    assert off_diagonal_norm(G) < 0.8 * off_diagonal_norm(A.T @ A)
    # Optimality: no feasible perturbation lowers ||W^T A||_F.
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        D = 1e-2 * torch.randn(A.shape, generator=generator, dtype=A.dtype)
        D -= A * (A * D).sum(0)  # keep a_i^T (w_i + d_i) = 1
        assert float(((W + D).T @ A).norm()) > float(G.norm())
    # Few PGD steps from A have not converged yet: the comparison above is not vacuous.
    assert float((analytic_weight_pgd(A, steps=20) - W).abs().max()) > 1e-3


def test_analytic_weight_keeps_dtype_and_rejects_zero_columns():
    A = sensing_matrix()
    W = analytic_weight(A)
    assert W.dtype == torch.float32
    assert torch.allclose(torch.diagonal(W.T @ A), torch.ones(A.shape[1]), atol=1e-5)
    A[:, 3] = 0
    with pytest.raises(ValueError, match="column of A is zero"):
        analytic_weight(A)


# --------------------------------------------------------------------------- support selection

def test_support_selection_passes_exactly_the_top_entries():
    z = torch.tensor([[3.0, -0.5, 2.0, 0.2, -4.0, 1.0, 0.05, -1.5, 0.7, 0.3],
                      [0.1, -2.5, 0.6, 5.0, -0.9, 0.0, 1.2, -0.45, 2.0, -3.0],
                      [0.1, -0.3, 0.2, 0.0, 0.05, -0.1, 0.0, 0.15, 0.0, 0.25]])
    theta = 0.4
    # 30 % of 10 entries: the three largest magnitudes of each row pass unchanged ...
    expected = torch.tensor([[3.0, -0.1, 2.0, 0.0, -4.0, 0.6, 0.0, -1.1, 0.3, 0.0],
                             [0.0, -2.5, 0.2, 5.0, -0.5, 0.0, 0.8, -0.05, 1.6, -3.0],
                             # ... unless they are below theta, where eta_ss is soft thresholding (zero).
                             [0.0] * 10])
    assert torch.allclose(support_selection(z, theta, 30.0), expected, atol=1e-6)
    assert torch.allclose(support_selection(z, torch.tensor(theta), 30.0), expected, atol=1e-6)
    # 25 % of 10 is 2.5 entries: floor, two pass.
    two = support_selection(z, theta, 25.0)
    assert two[0, 2] == pytest.approx(1.6) and two[1, 3] == 5.0 and two[1, 9] == -3.0
    for percent in (0.0, 5.0):  # fewer than one entry: plain soft thresholding
        assert torch.equal(support_selection(z, theta, percent), soft_threshold(z, torch.tensor(theta)))
    x = torch.randn(64, 40, generator=torch.Generator().manual_seed(0))
    assert torch.equal(support_selection(x, torch.tensor(0.3), 0.0), soft_threshold(x, torch.tensor(0.3)))


def test_support_selection_gradient_bypasses_selected_entries():
    z = torch.tensor([[3.0, -0.5, 2.0, 0.2, -4.0]], requires_grad=True)
    theta = torch.tensor(0.4, requires_grad=True)
    weights = torch.tensor([1.0, 1.0, 2.0, 1.0, 1.0])
    (weights * support_selection(z, theta, 40.0)).sum().backward()  # 3.0 and -4.0 pass
    assert z.grad.tolist() == [[1.0, 1.0, 2.0, 0.0, 1.0]]
    assert float(theta.grad) == pytest.approx(1.0 - 2.0)  # -0.5 -> -0.1 and 2.0 -> 1.6 are shrunk


def test_support_percentages_grow_and_saturate():
    assert support_percentages(16, 1.2, 13.0) == pytest.approx([1.2 * k for k in range(1, 11)] + [13.0] * 6)
    assert support_percentages(3, 0.0, 13.0) == [0.0, 0.0, 0.0]


# --------------------------------------------------------------------------- untrained networks

def test_untrained_alista_without_support_selection_is_analytic_ista():
    context, test = smoke_context(REGISTRY, "lasso", TINY)
    A, b = test.shared["A"], test.observed["b"]
    layers = alista_network([0.0] * 3, A, lam=0.1)(b)
    # The solver's initialisation is this network; depth runs the first layers only.
    model = ALISTA(**{**PARAMS, "n_layers": 3, "support_p": 0.0}, lr=LR[ALISTA]).initialize(context)
    for ours, reference in zip(model.forward(test.observation()), layers):
        assert torch.equal(ours, reference)
    assert len(model.forward(test.observation(), depth=2)) == 2
    assert torch.equal(model.forward(test.observation(), keep_all=False, depth=2)[-1], layers[1])
    W = analytic_weight(A)
    step = 1.0 / float(torch.linalg.matrix_norm((W.T @ A).double(), ord=2))
    x = torch.zeros(b.shape[0], A.shape[1])
    for layer in layers:
        z = x - step * ((x @ A.T - b) @ W)  # x - gamma W^T (A x - b), row-wise
        x = torch.sign(z) * torch.clamp(z.abs() - 0.1 * step, min=0)
        assert torch.allclose(layer, x, atol=1e-5)
    assert len(layers) == 3


def test_untrained_alista_reduces_the_error_layer_by_layer():
    _, test = smoke_context(REGISTRY, "lasso", TINY)
    A, b, x = test.shared["A"], test.observed["b"], test.target["x"]
    network = alista_network(support_percentages(16, 1.2, 13.0), A, lam=0.1)
    with torch.no_grad():
        errors = [nmse_db(layer, x) for layer in network(b)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] < -5.0


def test_untrained_lista_cpss_without_support_selection_is_ista():
    context, test = smoke_context(REGISTRY, "lasso", TINY)
    A, b = test.shared["A"], test.observed["b"]
    layers = cpss_network([0.0] * 7, A, lam=0.1)(b)
    ista = ISTA(lam=0.1, step=1.0, max_iter=7, tol=0.0).solve({"A": A, "b": b}, trajectory=True)
    assert len(layers) == len(ista.trajectory) == 7
    for ours, reference in zip(layers, ista.trajectory):
        assert torch.allclose(ours, reference, atol=1e-5)
    model = LISTACPSS(**{**PARAMS, "n_layers": 7, "support_p": 0.0}, lr=LR[LISTACPSS]).initialize(context)
    for ours, reference in zip(model.forward(test.observation()), layers):
        assert torch.equal(ours, reference)
    assert torch.equal(model.forward(test.observation(), keep_all=False, depth=4)[-1], layers[3])


# --------------------------------------------------------------------------- training

@pytest.fixture(scope="module")
def tuned_ista_db():
    """NMSE (dB) on the test split of ISTA with 16 iterations, lam and step tuned on validation."""
    context, test = smoke_context(REGISTRY, "lasso", TINY, budget=BUDGET)
    ista = ISTA(lam=0.1, step=1.0, max_iter=PARAMS["n_layers"], tol=0.0)
    ista.fit(FitContext(problem=context.problem, train=context.train, val=context.val,
                        tune={"lam": [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3], "step": [1.0, 1.5, 1.9]}))
    return nmse_db(ista.solve(test.observation()).estimate, test.target["x"])


@pytest.mark.parametrize("schedule", ["progressive", "joint"])
@pytest.mark.parametrize("cls", [ALISTA, LISTACPSS], ids=["alista", "lista_cpss"])
def test_trained_solver_beats_tuned_ista_at_equal_iterations(cls, schedule, tuned_ista_db):
    context, test = smoke_context(REGISTRY, "lasso", TINY, budget=BUDGET)
    untrained = cls(**PARAMS, lr=LR[cls], schedule=schedule).initialize(context)
    model = cls(**PARAMS, lr=LR[cls], schedule=schedule).fit(context)
    solution = model.solve(test.observation(), trajectory=True)
    learned_db = nmse_db(solution.estimate, test.target["x"])
    print(f"{cls.__name__} ({schedule}): {learned_db:.2f} dB, tuned ISTA: {tuned_ista_db:.2f} dB")
    assert learned_db < tuned_ista_db - 1.0, (learned_db, tuned_ista_db)
    assert len(solution.trajectory) == 16 and torch.equal(solution.trajectory[-1], solution.estimate)
    assert (solution.iterations == 16).all()
    # Validation is the family's mean loss: training at least halved it, and the history holds it.
    history = context.log["training"]
    assert history[0]["step"] == 0
    val_before = mean_loss(context.problem, lambda obs: untrained.forward(obs, keep_all=False)[-1], context.val)
    val_after = mean_loss(context.problem, lambda obs: model.forward(obs, keep_all=False)[-1], context.val)
    assert val_after < 0.5 * val_before, (val_after, val_before)
    last = [h["val_metric"] for h in history if h.get("layer", 16) == 16]
    assert min(last) == pytest.approx(val_after, rel=1e-5)
    if schedule == "progressive":
        assert sorted({h["layer"] for h in history}) == list(range(1, 17))
    else:
        assert history[0]["val_metric"] == pytest.approx(val_before, rel=1e-5)


def test_alista_trains_only_step_sizes_and_thresholds():
    context, _ = smoke_context(REGISTRY, "lasso", TINY, budget=Budget(steps=5, batch_size=32, eval_every=5))
    model = ALISTA(**{**PARAMS, "n_layers": 4}, lr=LR[ALISTA]).fit(context)
    assert sum(p.numel() for p in model.network_.parameters()) == 2 * 4
    assert torch.equal(model.network_.W, analytic_weight(context.train.shared["A"]))


# --------------------------------------------------------------------------- state and contract

@pytest.mark.parametrize("cls", [ALISTA, LISTACPSS], ids=["alista", "lista_cpss"])
def test_state_dict_round_trip_with_weights_only_load(cls):
    context, test = smoke_context(REGISTRY, "lasso", TINY, budget=Budget(steps=10, batch_size=32, eval_every=5))
    params = {**PARAMS, "n_layers": 5, "support_p": 10.0, "fresh_samples": False, "lr": 1e-2, "schedule": "joint"}
    model = cls(**params).fit(context)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    clone = cls(n_layers=1, gamma=0.0, lr=0.0, lam_init=0.0, support_p=0.0, support_max=0.0, fresh_samples=True,
                schedule="progressive")
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    assert clone.get_params() == model.get_params()
    solution = clone.solve(test.observation(), trajectory=True)
    assert torch.equal(solution.estimate, model.solve(test.observation()).estimate)
    assert len(solution.trajectory) == 5 and torch.equal(solution.trajectory[-1], solution.estimate)
    assert (solution.iterations == 5).all()


@pytest.mark.parametrize("cls", [ALISTA, LISTACPSS], ids=["alista", "lista_cpss"])
def test_solvers_need_a_shared_sensing_matrix(cls):
    context, _ = smoke_context(REGISTRY, "lasso", TINY)
    context.train.shared = {}
    with pytest.raises(ValueError, match="shared by all instances"):
        cls(**PARAMS, lr=1e-3).fit(context)


def test_solver_contract_through_a_registered_spec():
    plugin = types.SimpleNamespace()
    params = {name: l2obench.Param(value) for name, value in {**PARAMS, "lr": 1e-3, "schedule": "progressive"}.items()}

    @l2obench.hookimpl
    def l2obench_register_solvers(register):
        for name, factory in (("test_alista", "ALISTA"), ("test_lista_cpss", "LISTACPSS")):
            register(l2obench.SolverSpec(name=name, factory=f"l2obench_plugins.alista:{factory}", families=("lasso",),
                                         learned=True, params=params))

    plugin.l2obench_register_solvers = l2obench_register_solvers
    with registered(plugin, name="test-alista") as registry:
        for name in ("test_alista", "test_lista_cpss"):
            check_solver(registry, name, "lasso", TINY, params={"n_layers": 4},
                         budget=Budget(steps=24, batch_size=32, eval_every=5))


# --------------------------------------------------------------------------- per-instance designs

def _padded_designs(N=5, rows=(12, 16), n=24, seed=0):
    """Per-instance designs (N, max rows, n) with unit-norm columns and zero rows beyond each instance's count."""
    generator = torch.Generator().manual_seed(seed)
    A = torch.zeros(N, rows[1], n, dtype=torch.float64)
    counts = torch.randint(rows[0], rows[1] + 1, (N,), generator=generator)
    for i, m in enumerate(counts.tolist()):
        block = torch.randn(m, n, generator=generator, dtype=torch.float64)
        A[i, :m] = block / block.norm(dim=0)
    return A, counts


def test_batched_analytic_weight_is_the_per_instance_one_and_ignores_padding():
    A, counts = _padded_designs()
    W = analytic_weight(A)
    for i, m in enumerate(counts.tolist()):
        torch.testing.assert_close(W[i, :m], analytic_weight(A[i, :m]), rtol=0, atol=1e-9)
        assert W[i, m:].abs().max() == 0 if m < A.shape[1] else True
        torch.testing.assert_close(torch.diagonal(W[i].T @ A[i]), torch.ones(A.shape[-1], dtype=A.dtype))
    scale = analytic_design(A)[1]
    assert scale.shape == (len(A),)
    torch.testing.assert_close(scale, analytic_step_scale(A, W))  # the SVD reference
    torch.testing.assert_close(scale[0], analytic_step_scale(A[0, :counts[0]], W[0, :counts[0]]))
    wide = _padded_designs(N=3, rows=(30, 36), n=24)[0]  # m > n: C is singular
    torch.testing.assert_close(analytic_design(wide)[1], analytic_step_scale(wide, analytic_weight(wide)))


def test_alista_on_per_instance_designs_matches_the_fixed_design_network():
    _, test = smoke_context(REGISTRY, "lasso", TINY)
    A, b = test.shared["A"], test.observed["b"][:6]
    percents = support_percentages(6, 5.0, 13.0)
    step, theta = torch.linspace(0.8, 1.2, 6), torch.linspace(0.05, 0.15, 6)
    fixed = alista_network(percents, A, step=step, theta=theta)
    free = alista_network(percents, A, step=step, theta=theta, fixed=False)
    with torch.no_grad():
        expected = fixed(b)
        got = free(b, A=A.expand(len(b), -1, -1))
    for ours, reference in zip(got, expected):
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in free.parameters()) == 12 and not list(free.buffers())
    with pytest.raises(ValueError, match="designs A"):
        free(b)


def test_alista_on_per_instance_designs_meets_the_solver_contract():
    """The ``slr`` family: zero-padded per-instance designs, one W per instance at every call."""
    settings = {"d": 16, "s": 2, "n_samples": [8, 12], "n_train": 64, "n_val": 32, "n_test": 32}
    solution = check_solver(REGISTRY, "alista", "slr", settings, params={"n_layers": 4},
                            budget=Budget(steps=24, batch_size=16, eval_every=4))
    assert solution.estimate.shape == (32, 16)
