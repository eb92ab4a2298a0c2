"""The learned-solver layer: ``LearnedSolver``, ``train_progressive``, and what every learned solver shares."""
import dataclasses
import math
import time

import pytest
import torch

import l2obench.training
from l2obench import timing
from l2obench.contracts import Budget
from l2obench.learned import LearnedSolver, mean_loss
from l2obench.registry import Registry
from l2obench.testing import smoke_context
from l2obench.training import train, train_progressive
from l2obench.unrolled import LISTANetwork
from l2obench_plugins import alista
from l2obench_plugins.alista import analytic_design, analytic_step_scale
from l2obench_plugins.glad import GLAD
from l2obench_plugins.lista import LISTA
from l2obench_plugins.rnn_optimizer import RNN

REGISTRY = Registry()
DECAYS = (0.2, 0.02)  # the unrolled LASSO networks' default lr_decays
TINY = {"m": 20, "n": 40, "n_train": 384, "n_val": 96, "n_test": 96}
SPE_TINY = {"d": 5, "M": 8, "edge_prob": [0.1, 0.3], "n_train": 32, "n_val": 16, "n_test": 16}
GLAD_PARAMS = dict(n_layers=3, hidden=3, t_init=0.1, lambda_init=1.0, threshold_diagonal=True, output="z", lr=0.03,
                   gamma=0.9)


def nmse_db(estimate, target):
    return 10 * math.log10(float(((estimate - target) ** 2).sum() / (target**2).sum()))


def snapshot(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


# --------------------------------------------------------------------------- train_progressive

def test_progressive_stages_train_only_their_parameters_and_never_end_worse(monkeypatch):
    T = 3
    context, _ = smoke_context(REGISTRY, "lasso", TINY, budget=Budget(steps=90, batch_size=32, eval_every=2,
                                                                     patience=100))
    problem, A = context.problem, context.train.shared["A"]
    network = LISTANetwork(A.shape[0], A.shape[1], T)
    with torch.no_grad():
        network.set_ista(A, 0.1)
    names = {id(p): name for name, p in network.named_parameters()}

    def output(observation, t):
        return network(observation["b"], keep_all=False, depth=t)[-1]

    def validate_at(t):
        return mean_loss(problem, lambda obs: output(obs, t), context.val)

    stages = []
    train = l2obench.training.train

    def recording_train(module, loss_fn, validate, ctx, lr, parameters=None, steps=None, **kwargs):
        before, start = snapshot(module), validate()
        history = train(module, loss_fn, validate, ctx, lr, parameters=parameters, steps=steps, **kwargs)
        stages.append({"lr": lr, "steps": steps, "trained": {names[id(p)] for p in parameters}, "before": before,
                       "after": snapshot(module), "start": start, "end": validate(), "history": history})
        return history

    monkeypatch.setattr(l2obench.training, "train", recording_train)
    lr = 0.05  # large: some steps make the stage's layer worse, and the stage must not keep them
    history = train_progressive(network, T, network.layer_parameters,
                                lambda batch, t: problem.loss(output(batch.observation(), t), batch.target).mean(),
                                validate_at, context, lr=lr, decays=DECAYS)

    assert len(stages) == T * (1 + len(DECAYS))
    for t in range(1, T + 1):
        own = {f"{kind}.{t - 1}" for kind in ("W1", "W2", "theta")}
        below = {f"{kind}.{s - 1}" for kind in ("W1", "W2", "theta") for s in range(1, t + 1)}
        group = stages[3 * (t - 1):3 * t]
        assert [stage["trained"] for stage in group] == [own, below, below]
        assert [stage["lr"] for stage in group] == pytest.approx([lr, lr * 0.2, lr * 0.02])
    for stage in stages:
        assert stage["steps"] == 90 // (T * 3)  # the budget's steps, shared evenly
        changed = {name for name in stage["before"] if not torch.equal(stage["before"][name], stage["after"][name])}
        assert changed <= stage["trained"], changed - stage["trained"]  # nothing else moved
        assert stage["end"] <= stage["start"]  # the best state, the start included, is restored
        assert stage["end"] == pytest.approx(min(h["val_metric"] for h in stage["history"]), rel=1e-6)
    # Not vacuous: the first stage moved its layer, and some stage saw a worse state than its start.
    assert stages[0]["after"]["W1.0"].ne(stages[0]["before"]["W1.0"]).any()
    assert any(max(h["val_metric"] for h in stage["history"]) > stage["start"] for stage in stages)
    # The returned history: every stage's validations, tagged with its layer and learning rate.
    assert len(history) == sum(len(stage["history"]) for stage in stages)
    assert [h["layer"] for h in history if h["step"] == 0] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    # Whole schedule: the last layer ends better than ISTA's initialisation.
    reference = LISTANetwork(A.shape[0], A.shape[1], T)
    with torch.no_grad():
        reference.set_ista(A, 0.1)
    untrained = mean_loss(problem, lambda obs: reference(obs["b"], keep_all=False)[-1], context.val)
    assert validate_at(T) < untrained


def test_progressive_schedule_shares_the_time_cap_among_its_stages():
    """With a wall-clock cap and more steps than it allows, every stage still gets its share:
    the first stage must not spend the whole budget on layer 1."""
    T, limit = 3, 0.6
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])  # the first optimizer of a process imports for ~1 s
    context, _ = smoke_context(REGISTRY, "lasso", TINY, budget=Budget(steps=10**6, batch_size=16, eval_every=5,
                                                                     patience=10**6, max_seconds=limit))
    problem, A = context.problem, context.train.shared["A"]
    network = LISTANetwork(A.shape[0], A.shape[1], T)
    with torch.no_grad():
        network.set_ista(A, 0.1)

    def output(observation, t):
        return network(observation["b"], keep_all=False, depth=t)[-1]

    start = time.perf_counter()
    history = train_progressive(network, T, network.layer_parameters,
                                lambda batch, t: problem.loss(output(batch.observation(), t), batch.target).mean(),
                                lambda t: mean_loss(problem, lambda obs: output(obs, t), context.val), context,
                                lr=1e-3)
    elapsed = time.perf_counter() - start
    assert [(h["layer"], round(h["lr"] / 1e-3, 6)) for h in history if h["step"] == 0] == \
        [(t, d) for t in range(1, T + 1) for d in (1.0, 0.2, 0.02)]
    assert all(max(h["step"] for h in history if h["layer"] == t) > 0 for t in range(1, T + 1))
    assert elapsed < limit + 1.0


# --------------------------------------------------------------------------- LearnedSolver

def _fit_glad(seed, fresh_samples):
    context, test = smoke_context(REGISTRY, "spe", SPE_TINY, budget=Budget(steps=4, batch_size=8, eval_every=2))
    context = dataclasses.replace(context, seed=seed)
    model = GLAD(**GLAD_PARAMS, fresh_samples=fresh_samples).fit(context)
    return model, test


@pytest.mark.parametrize("fresh_samples", [True, False])
def test_fit_is_reproducible_under_the_seed(fresh_samples):
    rng = torch.get_rng_state()
    first, test = _fit_glad(0, fresh_samples)
    second, _ = _fit_glad(0, fresh_samples)
    other, _ = _fit_glad(1, fresh_samples)
    assert torch.equal(torch.get_rng_state(), rng)  # fitting leaves the global generator alone
    a, b, c = first.state_dict(), second.state_dict(), other.state_dict()
    assert a["config"] == b["config"] and list(a["weights"]) == list(b["weights"]) == list(c["weights"])
    for name in a["weights"]:
        assert torch.equal(a["weights"][name], b["weights"][name]), name
    assert any(not torch.equal(a["weights"][name], c["weights"][name]) for name in a["weights"])
    obs = test.observation()
    assert torch.equal(first.solve(obs).estimate, second.solve(obs).estimate)
    assert not torch.equal(first.solve(obs).estimate, other.solve(obs).estimate)


def test_initialize_builds_the_untrained_network_under_the_seed():
    context, _ = smoke_context(REGISTRY, "lasso", TINY)
    params = dict(n_steps=3, hidden=4, preprocess=True, out_scale=0.1, lam=0.1, gamma=0.9, lr=1e-2,
                  fresh_samples=True)
    first = RNN(**params)
    assert first.initialize(context) is first and isinstance(first.network_, torch.nn.Module)
    second = RNN(**params).initialize(context)
    other = RNN(**params).initialize(dataclasses.replace(context, seed=1))
    w1, w2, w3 = (m.state_dict()["weights"] for m in (first, second, other))
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert not all(torch.equal(w1[k], w3[k]) for k in w1)
    assert not first.network_.training  # ready to solve


def test_trained_progressive_lista_beats_its_ista_initialisation():
    context, test = smoke_context(REGISTRY, "lasso", TINY, budget=Budget(steps=600, batch_size=64, eval_every=10,
                                                                       patience=4))
    params = dict(n_layers=10, gamma=0.9, lr=3e-3, lam_init=0.1, fresh_samples=True, schedule="progressive",
                  lr_decays=DECAYS)
    untrained = LISTA(**params).initialize(context)
    model = LISTA(**params).fit(context)
    obs, x = test.observation(), test.target["x"]
    before, after = nmse_db(untrained.solve(obs).estimate, x), nmse_db(model.solve(obs).estimate, x)
    assert after < before - 2.0, (after, before)
    history = context.log["training"]
    assert sorted({h["layer"] for h in history}) == list(range(1, 11))
    assert max(h["step"] for h in history) <= 600 // 30


@pytest.mark.parametrize("name, family", [("lista", None), ("alista", None), ("lista_cpss", None),
                                          ("lista_stop", None), ("rnn", None), ("rnn_l1", None), ("glad", None),
                                          ("plisa", "slr")])
def test_solve_before_fit_is_a_clear_error(name, family):
    model = REGISTRY.solver(name).build(*([family] if family else []))
    assert isinstance(model, LearnedSolver)
    observation = {"A": torch.zeros(2, 3), "b": torch.zeros(1, 2)}
    for call in (lambda: model.solve(observation), model.state_dict, lambda: model.to("cpu")):
        with pytest.raises(RuntimeError, match="is not fitted: call fit"):
            call()


# --------------------------------------------------------------------------- LISTA-stop stage III

def test_lista_stop_stage_three_runs_and_leaves_a_finite_model():
    budget = Budget(steps=30, batch_size=32, eval_every=5, patience=10)
    params = dict(n_layers=4, beta=0.02, warm_start=False, schedule="joint", gamma=0.9, lr=1e-2, lam_init=0.1,
                  fresh_samples=True, policy_hidden=16, policy_lr=1e-2, policy_steps=20, hard_oracle=True,
                  stop_rule="threshold", sample_seed=0)
    context, test = smoke_context(REGISTRY, "lasso", TINY, budget=budget)
    model = REGISTRY.solver("lista_stop").build("lasso", **params, finetune_steps=15).fit(context)
    history = context.log["training"]
    assert list(history) == ["stage1", "stage2", "stage3", "stop_support"]
    stage3 = history["stage3"]
    assert stage3[0]["step"] == 0 and 0 < stage3[-1]["step"] <= 15
    assert all(math.isfinite(h["val_metric"]) and math.isfinite(h["train_loss"]) for h in stage3[1:])
    # Model selection with the threshold rule: the fitted model is the best state stage III saw.
    rule = mean_loss(context.problem, lambda obs: model.solve(obs).estimate, context.val)
    assert rule == pytest.approx(min(h["val_metric"] for h in stage3), rel=1e-5)
    assert rule <= stage3[0]["val_metric"]
    assert all(torch.isfinite(w).all() for w in model.state_dict()["weights"].values())
    solution = model.solve(test.observation(), trajectory=True)
    assert torch.isfinite(solution.estimate).all() and torch.isfinite(solution.stop_distribution).all()
    # Stages I and II are those of the same fit without stage III (same seed, same draws).
    context_again, _ = smoke_context(REGISTRY, "lasso", TINY, budget=budget)
    without = REGISTRY.solver("lista_stop").build("lasso", **params, finetune_steps=0).fit(context_again)
    assert list(context_again.log["training"]) == ["stage1", "stage2", "stop_support"]
    for stage in ("stage1", "stage2"):
        assert [h["val_metric"] for h in context_again.log["training"][stage]] == \
            [h["val_metric"] for h in history[stage]]
    # Stage III improved the threshold rule and kept its trained state, which moved both the
    # predictive model and the policy.
    assert rule < stage3[0]["val_metric"]
    moved = [name for name, w in model.state_dict()["weights"].items()
             if not torch.equal(w, without.state_dict()["weights"][name])]
    assert any(name.startswith("lista.") for name in moved) and any(name.startswith("policy.") for name in moved)


# --------------------------------------------------------------------------- ALISTA's analytic design

def _padded_designs(N=6, rows=(10, 16), n=24, seed=0):
    """Per-instance designs (N, max rows, n), unit-norm columns, zero rows beyond each instance's count."""
    generator = torch.Generator().manual_seed(seed)
    A = torch.zeros(N, rows[1], n, dtype=torch.float64)
    counts = torch.randint(rows[0], rows[1] + 1, (N,), generator=generator)
    counts[0] = rows[0]  # at least one padded instance
    for i, m in enumerate(counts.tolist()):
        block = torch.randn(m, n, generator=generator, dtype=torch.float64)
        A[i, :m] = block / block.norm(dim=0)
    return A, counts


def _spy(monkeypatch):
    """Record the designs that take the eigendecomposition path."""
    calls = []
    by_eigh = alista._design_by_eigh

    def spy(A64):
        calls.append(A64.clone())
        return by_eigh(A64)

    monkeypatch.setattr(alista, "_design_by_eigh", spy)
    return calls, by_eigh


def test_analytic_design_cholesky_path_equals_the_eigendecomposition_on_padded_designs(monkeypatch):
    A, counts = _padded_designs()
    calls, by_eigh = _spy(monkeypatch)
    W, scale = analytic_design(A)
    assert not calls  # zero rows get a unit pivot: every design takes the Cholesky path
    W_eig, scale_eig = by_eigh(A)
    torch.testing.assert_close(W, W_eig, rtol=0, atol=1e-10)
    torch.testing.assert_close(scale, scale_eig, rtol=1e-12, atol=0)
    torch.testing.assert_close(scale, analytic_step_scale(A, W))
    for i, m in enumerate(counts.tolist()):
        assert W[i, m:].abs().max() == 0 if m < A.shape[1] else True
        torch.testing.assert_close(W[i, :m], by_eigh(A[i, :m])[0], rtol=0, atol=1e-10)
    # float32 in, float32 out, same values.
    W32, scale32 = analytic_design(A.float())
    assert W32.dtype == scale32.dtype == torch.float32
    torch.testing.assert_close(W32.double(), W, rtol=0, atol=1e-4)


def _low_rank_square(n=6, rank=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(n, rank, generator=generator, dtype=torch.float64)
            @ torch.randn(rank, n, generator=generator, dtype=torch.float64))


def test_analytic_design_of_a_singular_square_design_takes_the_fallback(monkeypatch):
    calls, by_eigh = _spy(monkeypatch)
    for seed in range(8):  # whether the factorisation fails or not, the fallback is taken
        A = _low_rank_square(seed=seed)
        calls.clear()
        W, scale = analytic_design(A)
        assert len(calls) == 1 and torch.equal(calls[0], A)
        W_eig, scale_eig = by_eigh(A)
        assert torch.equal(W, W_eig) and torch.equal(scale, scale_eig)
        # A feasible minimiser, the one of minimum norm: diag(W^T A) = 1, W in the range of A.
        torch.testing.assert_close(torch.diagonal(W.T @ A), torch.ones(6, dtype=A.dtype))
        projector = A @ torch.linalg.pinv(A)
        torch.testing.assert_close(projector @ W, W, rtol=0, atol=1e-8)
        torch.testing.assert_close(scale, analytic_step_scale(A, W))


def test_batched_analytic_design_with_singular_and_regular_designs(monkeypatch):
    """Regular designs keep the Cholesky path; singular ones (among them a duplicated row, which
    the factorisation may let through with a negligible pivot) take the eigendecomposition."""
    generator = torch.Generator().manual_seed(1)
    A = torch.randn(5, 6, 6, generator=generator, dtype=torch.float64)
    A[1] = _low_rank_square(seed=0)
    A[3, 5] = A[3, 4]
    A[4] = _low_rank_square(seed=2)
    calls, by_eigh = _spy(monkeypatch)
    W, scale = analytic_design(A)
    assert len(calls) == 1 and torch.equal(calls[0], A[[1, 3, 4]])
    for i in range(5):
        W_i, scale_i = by_eigh(A[i])
        torch.testing.assert_close(W[i], W_i, rtol=0, atol=1e-8)
        torch.testing.assert_close(scale[i], scale_i)
        torch.testing.assert_close(torch.diagonal(W[i].T @ A[i]), torch.ones(6, dtype=A.dtype))
    torch.testing.assert_close(scale, analytic_step_scale(A, W))


def test_precomputed_designs_are_added_to_reused_splits_and_change_nothing(monkeypatch):
    """ALISTA on per-instance designs iterates its training split (the slr default) and computes each
    design's analytic weight once for it and for validation; the outputs equal those computed per call."""
    settings = {"d": 24, "s": 3, "n_samples": [12, 16], "n_train": 40, "n_val": 24, "n_test": 16}
    context, test = smoke_context(REGISTRY, "slr", settings, Budget(steps=4, batch_size=16, eval_every=2, patience=2))
    model = REGISTRY.solver("alista").build("slr", n_layers=4, schedule="joint")
    assert model.fresh_samples is False
    model.initialize(context)
    reused = model._with_precomputed(context)
    for split in (reused.train, reused.val):
        W, scale = analytic_design(split.observed["A"])
        torch.testing.assert_close(split.observed["alista_W"], W)
        torch.testing.assert_close(split.observed["alista_scale"], scale)
    with_design = model.forward(reused.val.observation())
    without = model.forward(context.val.observation())
    for ours, reference in zip(with_design, without):
        torch.testing.assert_close(ours, reference)
    fresh = REGISTRY.solver("alista").build("slr", n_layers=4, fresh_samples=True).initialize(context)
    assert "alista_W" not in fresh._with_precomputed(context).train.observed  # drawn anew at every step

    calls = []
    monkeypatch.setattr(alista, "analytic_design", lambda A: calls.append(len(A)) or analytic_design(A))
    model.fit(context)
    assert sum(calls) == len(context.train) + len(context.val)  # once per reused instance, not per step


def test_train_with_sgd_takes_plain_gradient_steps():
    context, _ = smoke_context(REGISTRY, "lasso", {"m": 5, "n": 10, "n_train": 8, "n_val": 8, "n_test": 8},
                               budget=Budget(steps=1, batch_size=4, eval_every=1, patience=1))
    module = torch.nn.Linear(3, 1, bias=False)
    start = module.weight.detach().clone()
    train(module, lambda batch: (module.weight ** 2).sum(), lambda: float((module.weight ** 2).sum()), context,
          lr=0.1, optimizer="sgd")
    torch.testing.assert_close(module.weight.detach(), 0.8 * start)  # w - lr * 2 w


# --------------------------------------------------------------------------- stopped at t layers

def _learned_solvers():
    for name in sorted(REGISTRY.solvers):
        spec = REGISTRY.solver(name)
        if spec.learned and issubclass(spec.load(), LearnedSolver):
            for family in spec.families:
                yield pytest.param(name, family, id=f"{name}-{family}")


@pytest.mark.parametrize("name, family", list(_learned_solvers()))
def test_a_learned_solver_stopped_at_t_gives_its_trajectorys_iterate_t(name, family):
    """What the runner's measured wall-clock axis needs: ``timing.truncated(solver, t)`` (the first
    ``t`` layers, through ``forward``'s ``depth`` or the solver's own ``truncated``) estimates what the
    trajectory holds at ``t``, for every built-in learned solver; else its curve's time is modelled."""
    solver = REGISTRY.solver(name).build(family)
    context, test = smoke_context(REGISTRY, family, budget=Budget(steps=2), solver=solver)
    solver.fit(context)
    observation = test.subset(slice(0, 4)).observation()
    with torch.no_grad():
        path = solver.solve(observation, trajectory=True).trajectory
        for t in sorted({1, max(1, len(path) // 2), len(path)}):
            stopped = timing.truncated(solver, t).solve(observation).estimate
            torch.testing.assert_close(stopped, path[t - 1], rtol=1e-5, atol=1e-6, msg=f"{name} stopped at {t}")
