"""LISTA-stop: the stop-time distribution, the stage losses, and sequential stopping."""
import io

import pytest
import torch

from l2obench.contracts import Budget
from l2obench.registry import Registry
from l2obench.testing import check_solver, smoke_context
from l2obench_plugins.lista import LISTANetwork
from l2obench_plugins.lista_stop import (LISTAStop, StopPolicy, log_stop_distribution, oracle_losses,
                                         position_encoding)

REGISTRY = Registry()
TINY = {"m": 20, "n": 40, "n_train": 256, "n_val": 64, "n_test": 64}
BUDGET = Budget(steps=60, batch_size=32, eval_every=20, patience=3)
PARAMS = dict(n_layers=6, beta=0.02, warm_start=True, gamma=0.9, lr=1e-3, lam_init=0.1, fresh_samples=True, policy_hidden=16, policy_lr=1e-2,
              policy_steps=60, hard_oracle=True, stop_rule="threshold", sample_seed=0)


def test_stop_distribution_is_eq_5_3():
    logits = torch.randn(5, 7, dtype=torch.float64)
    pi = torch.sigmoid(logits)
    q = log_stop_distribution(logits).exp()
    for t in range(7):
        assert torch.allclose(q[:, t], pi[:, t] * torch.prod(1 - pi[:, :t], dim=-1))
    assert torch.allclose(q[:, 7], torch.prod(1 - pi, dim=-1))
    assert torch.allclose(q.sum(-1), torch.ones(5, dtype=torch.float64))


def test_stage1_loss_is_the_oracle_objective():
    # -beta log sum_t exp(-l_t / beta) = E_{q*} l - beta H(q*) - beta log T + beta log T  (uniform prior)
    losses, beta = torch.rand(4, 6, dtype=torch.float64), 0.3
    q = torch.softmax(-losses / beta, dim=-1)
    objective = (q * losses).sum(-1) + beta * (q * q.log()).sum(-1)
    assert torch.allclose(-beta * torch.logsumexp(-losses / beta, dim=-1), objective)


def test_oracle_losses_are_normalised_squared_errors():
    target = torch.randn(3, 5)
    outputs = [torch.zeros(3, 5), target.clone()]
    losses = oracle_losses(outputs, target)
    assert torch.allclose(losses[:, 1], torch.zeros(3))
    assert torch.allclose(losses[:, 0].mean(), torch.tensor(1.0))


def test_position_encoding_distinguishes_layers():
    code = position_encoding(20, 8)
    assert code.shape == (20, 8)
    assert torch.cdist(code, code).add(torch.eye(20)).min() > 1e-3


@pytest.fixture(scope="module")
def fitted():
    context, test = smoke_context(REGISTRY, "lasso", TINY, budget=BUDGET)
    return LISTAStop(**PARAMS).fit(context), context, test


def test_early_exit_and_full_depth_passes_agree(fitted):
    model, _, test = fitted
    obs = test.observation()
    for rule in ("threshold", "sample", "never"):
        model.stop_rule = rule
        fast, full = model.solve(obs), model.solve(obs, trajectory=True)
        assert torch.equal(fast.iterations, full.iterations), rule
        assert torch.allclose(fast.estimate, full.estimate, atol=1e-6), rule
        assert torch.allclose(full.trajectory[-1], full.estimate)
        assert torch.allclose(full.stop_distribution.sum(-1), torch.ones(len(test)), atol=1e-5)
    model.stop_rule = "threshold"
    layers = model.network_(obs["b"])
    stopped = model.solve(obs)
    for i, t in enumerate(stopped.iterations.tolist()):  # each estimate is the iterate of its stop layer
        assert torch.allclose(stopped.estimate[i], layers[t - 1][i], atol=1e-6)


def test_threshold_rule_stops_where_the_policy_says(fitted):
    model, _, test = fitted
    obs = test.observation()
    layers = model.network_(obs["b"])
    pi = torch.sigmoid(model._all_logits(obs["A"], obs["b"], layers))
    stop = torch.cat([pi > 0.5, torch.ones(len(test), 1, dtype=torch.bool)], dim=-1)
    expected = stop.int().argmax(-1) + 1
    assert torch.equal(model.solve(obs).iterations, expected)


def test_policy_imitates_a_predictable_oracle():
    """With layers 2..T zeroed, layer 1 is the oracle's best layer on most instances;
    the stage-II loss teaches the policy to stop there."""
    context, test = smoke_context(REGISTRY, "lasso", TINY, budget=BUDGET)
    A = context.train.shared["A"]
    model = LISTAStop(**PARAMS)
    model.network_ = LISTANetwork.from_ista(A, model.n_layers, model.lam_init)
    with torch.no_grad():
        for t in range(1, model.n_layers):
            model.network_.W1[t].zero_()
            model.network_.W2[t].zero_()
    model.policy_ = StopPolicy(20, 40, model.n_layers, 16, model.POSITION_DIM)

    def loss(batch):
        outputs = model.network_(batch.observed["b"])
        best = oracle_losses(outputs, batch.target["x"]).argmin(-1)
        log_q = log_stop_distribution(model._all_logits(A, batch.observed["b"], outputs))
        return -(torch.nn.functional.one_hot(best, model.n_layers) * log_q).sum(-1).mean()

    optimizer = torch.optim.Adam(model.policy_.parameters(), lr=1e-2)
    for _ in range(100):
        optimizer.zero_grad()
        loss(context.draw_train(64)).backward()
        optimizer.step()
    obs = test.observation()
    best = oracle_losses(model.network_(obs["b"]), test.target["x"]).argmin(-1) + 1
    assert (best == 1).float().mean() > 0.8
    assert (model.solve(obs).iterations == best).float().mean() > 0.9


def test_lista_stop_saves_layers_and_round_trips(fitted):
    model, _, test = fitted
    obs = test.observation()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    clone = LISTAStop(**PARAMS).load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(clone.solve(obs).iterations, model.solve(obs).iterations)
    assert torch.allclose(clone.solve(obs).estimate, model.solve(obs).estimate, atol=1e-6)
    assert model.full_depth().solve(obs).iterations.eq(model.n_layers).all()


def test_registered_lista_stop_meets_the_solver_contract():
    check_solver(REGISTRY, "lista_stop", "lasso", TINY, params={"n_layers": 5, "policy_hidden": 16},
                 budget=BUDGET)


def test_unknown_stop_rule_is_a_clear_error():
    context, _ = smoke_context(REGISTRY, "lasso", TINY, budget=BUDGET)
    with pytest.raises(ValueError, match="stop_rule must be one of"):
        LISTAStop(**{**PARAMS, "stop_rule": "coin"}).fit(context)
