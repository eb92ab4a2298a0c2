"""The recurrent learned optimizers RNN and RNN-l1 (plugins/rnn_optimizer.py)."""
import dataclasses
import functools
import io
import math

import pytest
import torch

from l2obench.contracts import Budget, FitContext, Instances
from l2obench.registry import Registry
from l2obench.testing import smoke_context
from l2obench_plugins.proximal_gradient import ISTA
from l2obench_plugins.rnn_optimizer import RNN, RNNL1, lasso_subgradient, preprocess_gradient, smooth_gradient

REGISTRY = Registry()
TINY = {"m": 20, "n": 40, "n_train": 384, "n_val": 96, "n_test": 96}
# The smoke budget's steps with a smaller batch: a 2-layer LSTM over 64 x 40
# coordinates and 20 steps costs about 0.1 s a step on one CPU core.
BUDGET = Budget(steps=300, batch_size=16, eval_every=50, patience=4)


def nmse_db(estimate, target):
    return 10 * math.log10(float(((estimate - target) ** 2).sum() / (target**2).sum()))


def make(cls, **overrides):
    params = dict(n_steps=20, hidden=20, preprocess=True, out_scale=0.1, gamma=0.9, lr=1e-3, fresh_samples=True)
    params.update(lam_init=0.1) if cls is RNNL1 else params.update(lam=0.1)
    params.update(overrides)
    return cls(**params)


@functools.lru_cache(maxsize=None)
def lasso_context(settings=tuple(TINY.items())):
    return smoke_context(REGISTRY, "lasso", dict(settings))


def untrained(model, seed=0, context=None):
    """``model`` initialised (not trained) under ``seed`` on a lasso context."""
    context = lasso_context()[0] if context is None else context
    return model.initialize(dataclasses.replace(context, seed=seed))


def test_preprocessing_matches_hand_computed_values():
    e10 = 22026.465794806718  # e^10
    g = torch.tensor([1.0, -math.exp(-5.0), math.exp(-10.0), 2e-5, -1e-5, 0.0], dtype=torch.float64)
    expected = torch.tensor([[0.0, 1.0],         # log(1) / 10, sign
                             [-0.5, -1.0],       # log(e^-5) / 10, sign
                             [-1.0, 1.0],        # |g| = e^-p exactly: the log branch
                             [-1.0, 2e-5 * e10],  # below e^-p: (-1, e^p g)
                             [-1.0, -1e-5 * e10],
                             [-1.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(preprocess_gradient(g), expected, atol=1e-12)
    assert torch.allclose(preprocess_gradient(torch.tensor([math.exp(-1.0), 1e-3], dtype=torch.float64), p=2.0),
                          torch.tensor([[-0.5, 1.0], [-1.0, 1e-3 * math.exp(2.0)]], dtype=torch.float64))
    # Both branches are evaluated: no NaN reaches the gradient at g = 0.
    g.requires_grad_(True)
    preprocess_gradient(g).sum().backward()
    assert torch.isfinite(g.grad).all()


@pytest.mark.parametrize("per_instance", [False, True])
def test_gradient_read_by_the_rnn_is_the_lasso_gradient(per_instance):
    generator = torch.Generator().manual_seed(1)
    N, m, n, lam = 5, 7, 11, 0.3
    A = torch.randn(*((N,) if per_instance else ()), m, n, generator=generator, dtype=torch.float64)
    b = torch.randn(N, m, generator=generator, dtype=torch.float64)
    x = torch.randn(N, n, generator=generator, dtype=torch.float64).requires_grad_(True)
    residual = (torch.einsum("...mn,...n->...m", A, x) if per_instance else x @ A.T) - b
    smooth = 0.5 * (residual**2).sum()
    (expected,) = torch.autograd.grad(smooth, x, retain_graph=True)
    (expected_full,) = torch.autograd.grad(smooth + lam * x.abs().sum(), x)  # x has no zero entry
    x = x.detach()
    assert torch.allclose(smooth_gradient(A, b, x), expected, atol=1e-10)
    assert torch.allclose(lasso_subgradient(A, b, x, lam), expected_full, atol=1e-10)
    # What the networks feed their LSTM (before normalisation).
    rnn_l1 = untrained(make(RNNL1)).network_
    rnn = untrained(make(RNN, lam=lam)).network_
    assert torch.allclose(rnn_l1.gradient(A, b, x), expected, atol=1e-10)
    assert torch.allclose(rnn.gradient(A, b, x), expected_full, atol=1e-10)


@pytest.mark.parametrize("cls", [RNN, RNNL1])
def test_shared_and_per_instance_designs_agree(cls):
    _, test = lasso_context()
    A, b = test.shared["A"], test.observed["b"]
    N, (m, n) = b.shape[0], A.shape
    # out_scale = 1: the untrained RNN-l1 leaves the all-zero point, so the comparison is not trivial.
    # bmm and mm round differently; over 20 steps of an untrained LSTM that grows to about 2e-5.
    model = untrained(make(cls, out_scale=1.0), seed=0)
    shared = model.solve({"A": A, "b": b}, trajectory=True)
    expanded = model.solve({"A": A.expand(N, m, n), "b": b}, trajectory=True)
    assert (shared.estimate != 0).float().mean() > 0.1
    assert torch.allclose(expanded.estimate, shared.estimate, atol=1e-4, rtol=1e-4)
    for ours, reference in zip(expanded.trajectory, shared.trajectory):
        assert torch.allclose(ours, reference, atol=1e-4, rtol=1e-4)
    # Genuinely different designs in one batch: each instance as if solved alone.
    A2 = torch.randn(m, n, generator=torch.Generator().manual_seed(3)) * 2.0
    mixed = model.solve({"A": torch.stack([A, A2]).repeat_interleave(N // 2, 0)[:N], "b": b}).estimate
    half = N // 2
    assert torch.allclose(mixed[:half], model.solve({"A": A, "b": b[:half]}).estimate, atol=1e-4, rtol=1e-4)
    assert torch.allclose(mixed[half:], model.solve({"A": A2, "b": b[half:]}).estimate, atol=1e-4, rtol=1e-4)


def test_fit_with_per_instance_designs():
    context, test = smoke_context(REGISTRY, "lasso", TINY, budget=Budget(steps=4, batch_size=8, eval_every=2))
    expand = lambda split: Instances(  # noqa: E731
        observed={"A": split.shared["A"].expand(len(split), -1, -1), **split.observed}, target=split.target)
    context.train, context.val = expand(context.train), expand(context.val)
    model = make(RNNL1, out_scale=1.0)
    assert model.fit(context) is model
    solution = model.solve(expand(test).observation())
    assert solution.estimate.shape == test.target["x"].shape and torch.isfinite(solution.estimate).all()
    assert len(context.log["training"]) == 3


@pytest.fixture(scope="module")
def trained():
    context, test = smoke_context(REGISTRY, "lasso", TINY, budget=BUDGET)
    ista = ISTA(lam=0.1, step=1.0, max_iter=20, tol=0.0)
    ista.fit(FitContext(problem=context.problem, train=context.train, val=context.val,
                        tune={"lam": [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3], "step": [1.0, 1.5, 1.9]}))
    # Raw normalised gradients learn fastest in this budget (the preprocessed input needs about twice the
    # steps on some draws); out_scale = 0.3 keeps the untrained RNN-l1 from sitting at x = 0 under the
    # thresholds, where the loss has no gradient.
    params = dict(preprocess=False, out_scale=0.3, lr=1e-2)
    start = untrained(make(RNNL1, **params), seed=context.seed, context=context)
    model = make(RNNL1, **params).fit(context)
    x = test.target["x"]
    return {"ista": nmse_db(ista.solve(test.observation()).estimate, x),
            "untrained": nmse_db(start.solve(test.observation()).estimate, x),
            "trained": nmse_db(model.solve(test.observation()).estimate, x),
            "history": context.log["training"]}


def test_trained_rnn_l1_beats_untrained_and_tuned_ista_at_equal_iterations(trained):
    print({k: v for k, v in trained.items() if k != "history"})
    assert trained["trained"] < trained["untrained"] - 3.0, trained
    assert trained["trained"] < trained["ista"] - 1.0, trained
    history = trained["history"]
    assert history[0]["step"] == 0
    # Validation is the family's mean loss (val_metric); training at least halved it.
    assert min(h["val_metric"] for h in history) < 0.5 * history[0]["val_metric"], history


@pytest.mark.slow
def test_trained_rnn_with_preprocessing_improves_on_untrained():
    context, test = smoke_context(REGISTRY, "lasso", TINY, budget=BUDGET)
    model = make(RNN, lr=1e-2).fit(context)
    history = context.log["training"]
    assert min(h["val_metric"] for h in history) < 0.5 * history[0]["val_metric"]
    start = untrained(make(RNN), seed=context.seed, context=context).solve(test.observation()).estimate
    x = test.target["x"]
    assert nmse_db(model.solve(test.observation()).estimate, x) < nmse_db(start, x) - 3.0


@pytest.mark.parametrize("cls", [RNN, RNNL1])
def test_state_dict_round_trip_with_weights_only_load(cls):
    context, test = smoke_context(REGISTRY, "lasso", TINY, budget=Budget(steps=6, batch_size=8, eval_every=3))
    model = make(cls, n_steps=5, hidden=8, out_scale=1.0, lr=1e-2, fresh_samples=False).fit(context)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    clone = make(cls, n_steps=1, hidden=3, preprocess=False, out_scale=0.0, gamma=0.0, lr=0.0)
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    assert clone.get_params() == model.get_params()
    solution = clone.solve(test.observation(), trajectory=True)
    reference = model.solve(test.observation())
    assert (reference.estimate != 0).any()
    assert torch.equal(solution.estimate, reference.estimate)
    assert len(solution.trajectory) == 5 and torch.equal(solution.trajectory[-1], solution.estimate)
    assert (solution.iterations == 5).all()


def test_fit_needs_a_design():
    context, _ = smoke_context(REGISTRY, "lasso", TINY)
    context.train.shared = {}
    with pytest.raises(ValueError, match="needs a design"):
        make(RNN).fit(context)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_untrained_rnn_l1_with_registered_defaults_leaves_zero(seed):
    """Below its thresholds RNN-l1 has no gradient and cannot learn: the registered
    defaults must start it moving at the small scale's size, whatever the initialisation."""
    context, test = lasso_context(tuple({"m": 125, "n": 250, "n_train": 8, "n_val": 8, "n_test": 64}.items()))
    model = untrained(REGISTRY.solver("rnn_l1").build(), seed=seed, context=context)
    assert (model.solve(test.observation()).estimate != 0).float().mean() > 0.5
