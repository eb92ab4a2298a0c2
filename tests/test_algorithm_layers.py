"""GD, NAG and RNN algorithm layers on quadratic energies (thesis eq. 4.9, 4.18), classical and learned."""
import math

import pytest
import torch

from l2obench.contracts import Budget
from l2obench.datafits import QuadraticEnergy
from l2obench.learned import mean_loss
from l2obench.registry import Registry
from l2obench.testing import smoke_context
from l2obench_plugins.algorithm_layers import GD, NAG, RNNCellLayer, StepLayer, gd_iterates, nag_iterates

REGISTRY = Registry()
SETTINGS = dict(d=5, m=10, n_train=64, n_val=64, n_test=64, pool=500)
BUDGET = Budget(steps=150, batch_size=32, eval_every=25, patience=6)


def given(n=64, seed=0, **settings):
    """Observation and target of ``n`` given-mode instances (Q*, b), float64."""
    family = REGISTRY.problem("quadratic").build(**{**SETTINGS, "mode": "given", **settings})
    inst = family.draw(n, torch.Generator().manual_seed(seed), {}, "test")
    observation = {k: v.double() for k, v in inst.observed.items()}
    # the exact minimizer of the float32-stored energy (the label, computed before rounding, is within 1e-5)
    y_star = QuadraticEnergy(observation["Q"], observation["b"]).minimizer()
    torch.testing.assert_close(y_star, inst.target["y"].double(), rtol=1e-4, atol=1e-4)
    return observation, y_star


def classical(cls, **params):
    return cls(**params).with_data_term("quadratic")


def errors(solution, y_star):
    return [float((y - y_star).norm(dim=-1).max()) for y in solution.trajectory]


# -- classical GD and NAG -------------------------------------------------------------------------

def test_one_dimensional_iterates_computed_by_hand():
    # E(y) = y^2 - 4y (Q = 2, b = -4): y* = 2; GD with phi = 0.5 / 2 = 1/4 halves the error each step.
    observation = {"Q": torch.tensor([[[2.0]]], dtype=torch.float64), "b": torch.tensor([[-4.0]], dtype=torch.float64)}
    gd = classical(GD, k=3, step=0.5).solve(observation, trajectory=True)
    assert [float(y) for y in gd.trajectory] == [1.0, 1.5, 1.75]
    # NAG (mu = L = 2, phi = 1/4): beta = (1 - sqrt(1/2)) / (1 + sqrt(1/2));
    # y1 = 1, z1 = 1 + beta, y2 = z1 - (2 z1 - 4) / 4 = 1 + z1 / 2, z2 = y2 + beta (y2 - y1), y3 = 1 + z2 / 2.
    beta = (1 - math.sqrt(0.5)) / (1 + math.sqrt(0.5))
    y2 = 1 + (1 + beta) / 2
    y3 = 1 + (y2 + beta * (y2 - 1)) / 2
    nag = classical(NAG, k=3, step=0.5).solve(observation, trajectory=True)
    torch.testing.assert_close(torch.cat(nag.trajectory).flatten(),
                               torch.tensor([1.0, y2, y3], dtype=torch.float64))
    assert nag.iterations.tolist() == [3] and torch.equal(nag.estimate, nag.trajectory[-1])


def test_gd_error_follows_the_closed_form_per_eigendirection():
    observation, y_star = given(n=16)
    k, step = 7, 0.8
    solution = classical(GD, k=k, step=step).solve(observation)
    eigenvalues, vectors = torch.linalg.eigh(observation["Q"])
    phi = step / eigenvalues[:, -1:]
    # from y_0 = 0 the error -y* contracts by (1 - phi lambda_i) along eigenvector i
    coefficients = torch.einsum("nij,ni->nj", vectors, -y_star) * (1 - phi * eigenvalues) ** k
    torch.testing.assert_close(solution.estimate - y_star, torch.einsum("nij,nj->ni", vectors, coefficients))


@pytest.mark.parametrize("cls", [GD, NAG])
def test_gd_and_nag_converge_to_the_minimizer(cls):
    observation, y_star = given()
    solution = classical(cls, k=400, step=1.0).solve(observation, trajectory=True)
    assert float((solution.estimate - y_star).norm(dim=-1).max()) < 1e-8 * float(y_star.norm(dim=-1).max())


def test_nag_converges_faster_than_gd_at_the_same_step():
    observation, y_star = given(mu=0.01)
    gd = errors(classical(GD, k=60, step=1.0).solve(observation, trajectory=True), y_star)
    nag = errors(classical(NAG, k=60, step=1.0).solve(observation, trajectory=True), y_star)
    assert nag[59] < 0.1 * gd[59]
    assert all(n < g for n, g in zip(nag[10:], gd[10:]))


def test_classical_steps_are_tuned_on_validation_and_hybrid_mode_is_refused():
    context, test = smoke_context(REGISTRY, "quadratic", {**SETTINGS, "mode": "given"}, tune={"step": [0.25, 1.0, 1.8]})
    solver = REGISTRY.solver("gd").build("quadratic", k=4).fit(context)
    assert [row["step"] for row in solver.tuning_] == [0.25, 1.0, 1.8]
    losses = [row["val_loss"] for row in solver.tuning_]
    assert solver.step == [0.25, 1.0, 1.8][losses.index(min(losses))]
    assert solver.step > 0.25  # four short steps leave most of the error
    hybrid, _ = smoke_context(REGISTRY, "quadratic", SETTINGS)
    fitted = REGISTRY.solver("nag").build("quadratic").fit(hybrid)
    with pytest.raises(ValueError, match="quadratic data term needs the observation's 'Q'"):
        fitted.solve(hybrid.val.observation())


# -- learned layers -------------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm, bound", [("gd", 2 / 1.1), ("nag", 4 / 3.1)])
def test_learned_step_stays_in_the_stable_region(algorithm, bound):
    layer = StepLayer(algorithm, k=3, mu=0.1, L=1.0, step_init=1.0)
    with torch.no_grad():
        assert float(layer.step()) == pytest.approx(1.0)
        layer.r.fill_(50.0)
        assert 0 < float(layer.step()) <= bound * (1 + 1e-6)  # float32 rounding at saturation
        layer.r.fill_(-50.0)
        assert float(layer.step()) >= 0
    with pytest.raises(ValueError, match="stable region"):
        StepLayer(algorithm, k=3, mu=0.1, L=1.0, step_init=bound)
    fixed = StepLayer(algorithm, k=3, mu=0.1, L=1.0, step_init=0.5, learn_step=False)
    assert list(fixed.parameters()) == [] and "r" in fixed.state_dict()


def test_step_layer_matches_the_iteration_and_its_gradient_matches_finite_differences():
    observation, y_star = given(n=8)
    term = QuadraticEnergy(observation["Q"], observation["b"])
    layer = StepLayer("nag", k=6, mu=0.1, L=1.0, step_init=0.7).double()
    phi = float(layer.step().detach())
    momentum = (1 - math.sqrt(0.1 * phi)) / (1 + math.sqrt(0.1 * phi))
    expected = nag_iterates(term.gradient, term.start(), phi, momentum, 6)
    torch.testing.assert_close(layer(term)[-1], expected[-1])

    def loss():
        return torch.linalg.vector_norm(layer(term, keep_all=False)[-1] - y_star, dim=-1).mean()

    layer.zero_grad()
    loss().backward()
    eps = 1e-6
    with torch.no_grad():
        layer.r += eps
        up = float(loss())
        layer.r -= 2 * eps
        down = float(loss())
        layer.r += eps
    assert float(layer.r.grad) == pytest.approx((up - down) / (2 * eps), rel=1e-5)


@pytest.mark.parametrize("width", [10, 16])
def test_rnn_cell_initialised_as_gd_runs_gd(width):
    observation, _ = given(n=8)
    term = QuadraticEnergy(observation["Q"], observation["b"])
    rnn = RNNCellLayer(k=5, d=5, width=width, depth=3).double()
    rnn.init_as_gd(0.6)
    torch.testing.assert_close(torch.stack(rnn(term)), torch.stack(gd_iterates(term.gradient, term.start(), 0.6, 5)))
    with pytest.raises(ValueError, match="rnn_width >= 2d = 10"):
        RNNCellLayer(k=5, d=5, width=8, depth=2).init_as_gd(0.6)


def test_hybrid_model_with_the_true_network_reproduces_gd_on_q_star():
    context, test = smoke_context(REGISTRY, "quadratic", {**SETTINGS, "energy_hidden": 3})
    solver = REGISTRY.solver("gd_layer").build("quadratic", k=30, hidden=3).initialize(context)
    solver.network_.energy.load_state_dict(context.problem.energy.float().state_dict())
    solution = solver.solve(test.observation())
    torch.testing.assert_close(solution.extras["Q"], test.target["Q"], atol=1e-5, rtol=1e-5)
    assert {m.metric: m.value for m in context.problem.evaluate_extras(solution.extras, test)}["module_error"] < 1e-8
    reference = classical(GD, k=30, step=1.0).solve({"Q": test.target["Q"], "b": test.observed["b"]})
    torch.testing.assert_close(solution.estimate, reference.estimate, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("solver", ["gd_layer", "nag_layer", "rnn_layer"])
def test_training_lowers_the_training_error_and_the_module_error(solver):
    context, test = smoke_context(REGISTRY, "quadratic", SETTINGS, budget=BUDGET)
    model = REGISTRY.solver(solver).build("quadratic", k=5, hidden=4, lr=[1e-2, 1e-3]).initialize(context)
    problem = context.problem

    def scores():
        solution = model.solve(context.train.observation())
        values = problem.evaluate(solution.estimate, context.train) + problem.evaluate_extras(solution.extras,
                                                                                              context.train)
        return {m.metric: m.value for m in values}

    before = scores()
    model.fit(context)
    history = context.log["training"]
    after = scores()
    assert after["l2_error"] < 0.9 * before["l2_error"]
    assert after["module_error"] < before["module_error"]
    assert {entry["lr"] for entry in history} == {1e-2, 1e-3}  # one run per learning rate


def test_select_train_keeps_the_state_of_lowest_training_loss():
    context, _ = smoke_context(REGISTRY, "quadratic", SETTINGS, budget=BUDGET)
    model = REGISTRY.solver("gd_layer").build("quadratic", k=3, lr=1e-2).fit(context)
    history = context.log["training"]
    # the validate callback of select = train scores the training split: the kept state is the best one
    kept = model.validation_score(context)
    assert kept == pytest.approx(min(entry["val_metric"] for entry in history), rel=1e-6)


def test_adam_and_sgd_runs_are_both_tried_and_the_best_on_validation_kept():
    context, _ = smoke_context(REGISTRY, "quadratic", SETTINGS, budget=BUDGET)
    model = REGISTRY.solver("gd_layer").build("quadratic", k=3, hidden=4, lr=[1e-2],
                                              optimizer=["adam", "sgd"]).fit(context)
    history = context.log["training"]
    finals = {(entry["optimizer"], entry["lr"]): entry["val_loss"] for entry in history}
    assert set(finals) == {("adam", 1e-2), ("sgd", 1e-2)}
    assert finals[("adam", 1e-2)] != finals[("sgd", 1e-2)]
    kept = mean_loss(context.problem, lambda obs: model.forward(obs, keep_all=False)[-1], context.val)
    assert kept == pytest.approx(min(finals.values()), rel=1e-6)


def test_an_unknown_optimizer_is_refused():
    with pytest.raises(ValueError, match="optimizer must be one of adam, sgd"):
        REGISTRY.solver("gd_layer").build("quadratic", optimizer="rmsprop")
