"""LISTA and the shared training loop."""
import io
import math

import pytest
import torch

from l2obench.contracts import Budget, FitContext, Instances
from l2obench.errors import DivergedError
from l2obench.learned import mean_loss
from l2obench.registry import Registry
from l2obench.testing import check_solver, smoke_context
from l2obench.training import train
from l2obench.unrolled import LISTANetwork
from l2obench_plugins.lista import LISTA
from l2obench_plugins.proximal_gradient import ISTA

REGISTRY = Registry()
TINY = {"m": 20, "n": 40, "n_train": 384, "n_val": 96, "n_test": 96}
BUDGET = Budget(steps=300, batch_size=64, eval_every=50, patience=4)  # the smoke suite's budget
# The progressive schedule shares the steps among T * 3 stages: 20 steps per stage at T = 20.
PROGRESSIVE_BUDGET = Budget(steps=1200, batch_size=64, eval_every=50, patience=4)
PARAMS = dict(n_layers=20, gamma=0.9, lr=1e-3, lam_init=0.1, fresh_samples=True, lr_decays=[0.2, 0.02])


def nmse_db(estimate, target):
    return 10 * math.log10(float(((estimate - target) ** 2).sum() / (target**2).sum()))


def ista_network(A, n_layers, lam):
    """The untrained LISTA network: ISTA's weights in every layer."""
    network = LISTANetwork(A.shape[0], A.shape[1], n_layers)
    with torch.no_grad():
        network.set_ista(A, lam)
    return network


def test_untrained_lista_is_ista():
    context, test = smoke_context(REGISTRY, "lasso", TINY)
    A, b = test.shared["A"], test.observed["b"]
    layers = ista_network(A, n_layers=7, lam=0.1)(b)
    ista = ISTA(lam=0.1, step=1.0, max_iter=7, tol=0.0).solve({"A": A, "b": b}, trajectory=True)
    assert len(layers) == len(ista.trajectory) == 7
    for ours, reference in zip(layers, ista.trajectory):
        assert torch.allclose(ours, reference, atol=1e-5)
    # The solver's own initialisation is the same network, under any depth.
    model = LISTA(**{**PARAMS, "n_layers": 7}).initialize(context)
    for ours, reference in zip(model.forward(test.observation()), layers):
        assert torch.equal(ours, reference)
    assert torch.equal(model.forward(test.observation(), keep_all=False, depth=3)[-1], layers[2])
    assert len(model.forward(test.observation(), depth=3)) == 3


@pytest.mark.parametrize("schedule, budget", [("joint", BUDGET), ("progressive", PROGRESSIVE_BUDGET)])
def test_trained_lista_beats_tuned_ista_at_equal_iterations(schedule, budget):
    context, test = smoke_context(REGISTRY, "lasso", TINY, budget=budget)
    ista = ISTA(lam=0.1, step=1.0, max_iter=20, tol=0.0)
    ista.fit(FitContext(problem=context.problem, train=context.train, val=context.val,
                        tune={"lam": [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3], "step": [1.0, 1.5, 1.9]}))
    untrained = LISTA(**PARAMS, schedule=schedule).initialize(context)
    lista = LISTA(**PARAMS, schedule=schedule).fit(context)
    x = test.target["x"]
    ista_db = nmse_db(ista.solve(test.observation()).estimate, x)
    lista_db = nmse_db(lista.solve(test.observation()).estimate, x)
    assert lista_db < ista_db - 1.0, (lista_db, ista_db)
    # Validation is the family's mean loss (not dB); training lowered it.
    history = context.log["training"]
    assert history[0]["step"] == 0
    val_before = mean_loss(context.problem, lambda obs: untrained.forward(obs, keep_all=False)[-1], context.val)
    val_after = mean_loss(context.problem, lambda obs: lista.forward(obs, keep_all=False)[-1], context.val)
    assert val_after < 0.8 * val_before, (val_after, val_before)
    if schedule == "joint":
        assert history[0]["val_metric"] == pytest.approx(val_before, rel=1e-5)
        assert min(h["val_metric"] for h in history) == pytest.approx(val_after, rel=1e-5)
    else:  # every layer's stage, then its two decayed stages over layers 1..t
        assert sorted({h["layer"] for h in history}) == list(range(1, 21))
        assert {round(h["lr"] / 1e-3, 6) for h in history if h["layer"] == 20} == {1.0, 0.2, 0.02}
        last = [h["val_metric"] for h in history if h["layer"] == 20]
        assert min(last) == pytest.approx(val_after, rel=1e-5)


def test_state_dict_round_trip_with_weights_only_load():
    context, test = smoke_context(REGISTRY, "lasso", TINY, budget=Budget(steps=10, batch_size=32, eval_every=5))
    lista = LISTA(**{**PARAMS, "n_layers": 5, "gamma": 1.0, "fresh_samples": False}, schedule="joint").fit(context)
    state = lista.state_dict()
    assert set(state) == {"params", "config", "weights"} and state["config"] == {"m": 20, "n": 40}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    clone = LISTA(n_layers=1, gamma=0.0, lr=0.0, lam_init=0.0, fresh_samples=True, schedule="progressive",
                  lr_decays=[])
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    assert clone.get_params() == lista.get_params()
    solution = clone.solve(test.observation(), trajectory=True)
    assert torch.equal(solution.estimate, lista.solve(test.observation()).estimate)
    assert len(solution.trajectory) == 5 and torch.equal(solution.trajectory[-1], solution.estimate)
    assert (solution.iterations == 5).all()
    # Training moved the weights away from ISTA's: the round trip carries them, not the initialisation.
    untrained = LISTA(**{**PARAMS, "n_layers": 5}).initialize(context)
    assert not torch.equal(untrained.solve(test.observation()).estimate, solution.estimate)


def test_solver_contract():
    for schedule in ("progressive", "joint"):
        check_solver(REGISTRY, "lista", "lasso", TINY, params={"n_layers": 4, "schedule": schedule},
                     budget=Budget(steps=24, batch_size=32, eval_every=5))


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


def test_trainer_honours_its_own_step_count():
    module, context, validate, _ = _toy([5.0 - 0.1 * k for k in range(20)])
    history = train(module, lambda batch: (module.weight - 10.0).pow(2).sum(), validate, context, lr=0.1,
                    fresh_samples=False, steps=4)
    assert [h["step"] for h in history] == [0, 1, 2, 3, 4]


def test_trainer_raises_on_nan_loss():
    module, context, validate, _ = _toy([1.0] * 10)
    with pytest.raises(DivergedError, match="training loss became nan"):
        train(module, lambda batch: module.weight.sum() * float("nan"), validate, context, lr=0.1,
              fresh_samples=False)


def test_lista_needs_a_shared_sensing_matrix():
    context, _ = smoke_context(REGISTRY, "lasso", TINY)
    context.train.shared = {}
    with pytest.raises(ValueError, match="shared by all instances"):
        LISTA(**{**PARAMS, "n_layers": 3}).fit(context)
