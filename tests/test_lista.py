"""LISTA and the shared training loop."""
import io
import math

import pytest
import torch

from l2obench.contracts import Budget, FitContext, Instances
from l2obench.errors import DivergedError
from l2obench.registry import Registry
from l2obench.testing import check_solver, smoke_context
from l2obench.training import train
from l2obench_plugins.lista import LISTA, LISTANetwork
from l2obench_plugins.proximal_gradient import ISTA

REGISTRY = Registry()
TINY = {"m": 20, "n": 40, "n_train": 384, "n_val": 96, "n_test": 96}
BUDGET = Budget(steps=300, batch_size=64, eval_every=50, patience=4)  # the smoke suite's budget


def nmse_db(estimate, target):
    return 10 * math.log10(float(((estimate - target) ** 2).sum() / (target**2).sum()))


def test_untrained_lista_is_ista():
    context, test = smoke_context(REGISTRY, "lasso", TINY)
    A, b = test.shared["A"], test.observed["b"]
    network = LISTANetwork.from_ista(A, n_layers=7, lam=0.1)
    layers = network(b)
    ista = ISTA(lam=0.1, step=1.0, max_iter=7, tol=0.0).solve({"A": A, "b": b}, trajectory=True)
    for ours, reference in zip(layers, ista.trajectory):
        assert torch.allclose(ours, reference, atol=1e-5)


def test_trained_lista_beats_tuned_ista_at_equal_iterations():
    context, test = smoke_context(REGISTRY, "lasso", TINY, budget=BUDGET)
    ista = ISTA(lam=0.1, step=1.0, max_iter=20, tol=0.0)
    ista.fit(FitContext(problem=context.problem, train=context.train, val=context.val,
                        tune={"lam": [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3], "step": [1.0, 1.5, 1.9]}))
    lista = LISTA(n_layers=20, gamma=0.9, lr=1e-3, lam_init=0.1, fresh_samples=True).fit(context)
    x = test.target["x"]
    ista_db = nmse_db(ista.solve(test.observation()).estimate, x)
    lista_db = nmse_db(lista.solve(test.observation()).estimate, x)
    assert lista_db < ista_db - 1.0, (lista_db, ista_db)
    history = context.log["training"]
    assert history[0]["step"] == 0 and min(h["val_metric"] for h in history) < history[0]["val_metric"]


def test_state_dict_round_trip_with_weights_only_load():
    context, test = smoke_context(REGISTRY, "lasso", TINY, budget=Budget(steps=10, batch_size=32, eval_every=5))
    lista = LISTA(n_layers=5, gamma=1.0, lr=1e-3, lam_init=0.1, fresh_samples=False).fit(context)
    buffer = io.BytesIO()
    torch.save(lista.state_dict(), buffer)
    buffer.seek(0)
    clone = LISTA(n_layers=1, gamma=0.0, lr=0.0, lam_init=0.0, fresh_samples=True)
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    assert clone.get_params() == lista.get_params()
    solution = clone.solve(test.observation(), trajectory=True)
    assert torch.equal(solution.estimate, lista.solve(test.observation()).estimate)
    assert len(solution.trajectory) == 5 and torch.equal(solution.trajectory[-1], solution.estimate)
    assert (solution.iterations == 5).all()


def test_solver_contract():
    check_solver(REGISTRY, "lista", "lasso", TINY, params={"n_layers": 4},
                 budget=Budget(steps=10, batch_size=32, eval_every=5))


def _toy(values):
    """A one-parameter module whose validation curve is scripted by ``values``."""
    module = torch.nn.Linear(1, 1, bias=False)
    data = Instances(observed={"b": torch.zeros(8, 1)}, target={"x": torch.zeros(8, 1)})
    context = FitContext(problem=None, train=data, val=data, budget=Budget(steps=100, batch_size=4, eval_every=1,
                                                                          patience=3))
    calls = iter(values)
    seen = []

    def validate():
        seen.append(float(module.weight.detach()))
        return next(calls)

    return module, context, validate, seen


def test_trainer_restores_best_state_and_stops_with_patience():
    module, context, validate, seen = _toy([5.0, 4.0, 1.0, 2.0, 3.0, 4.0, 0.5])
    history = train(module, lambda batch: (module.weight - 10.0).pow(2).sum(), validate, context, lr=0.1,
                    fresh_samples=False)
    assert [h["step"] for h in history] == [0, 1, 2, 3, 4, 5]  # three evaluations without improvement
    assert float(module.weight.detach()) == pytest.approx(seen[2])  # the state validated at 1.0


def test_trainer_raises_on_nan_loss():
    module, context, validate, _ = _toy([1.0] * 10)
    with pytest.raises(DivergedError, match="training loss became nan"):
        train(module, lambda batch: module.weight.sum() * float("nan"), validate, context, lr=0.1,
              fresh_samples=False)


def test_lista_needs_a_shared_sensing_matrix():
    context, _ = smoke_context(REGISTRY, "lasso", TINY)
    context.train.shared = {}
    with pytest.raises(ValueError, match="shared by all instances"):
        LISTA(n_layers=3, gamma=1.0, lr=1e-3, lam_init=0.1, fresh_samples=True).fit(context)
