"""LISTA-stop: the stop-time distribution, the stage losses, and sequential stopping."""
import io

import pytest
import torch

from l2obench.contracts import Budget
from l2obench.learned import mean_loss
from l2obench.registry import Registry
from l2obench.stopping import (layer_losses, log_stop_distribution, oracle, stage1_loss, stage2_loss,
                               stage3_loss, with_depth_prior)
from l2obench.testing import check_solver, smoke_context
from l2obench_plugins.lista_stop import LISTAStop, LISTAStopModel, position_encoding, summary_features

REGISTRY = Registry()
TINY = {"m": 20, "n": 40, "n_train": 256, "n_val": 64, "n_test": 64}
BUDGET = Budget(steps=60, batch_size=32, eval_every=20, patience=3)
PARAMS = dict(n_layers=6, beta=0.02, layer_cost=0.0, policy_features="vectors", warm_start=True, schedule="joint", gamma=0.9, lr=1e-3, lam_init=0.1,
              fresh_samples=True, policy_hidden=16, policy_lr=1e-2, policy_steps=60, hard_oracle=True,
              finetune_steps=0, support_mass=1e-3, stop_rule="threshold", sample_seed=0)


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
    assert torch.allclose(stage1_loss(losses, beta), objective.mean())
    assert torch.allclose(oracle(losses, beta, hard=False), q)
    assert torch.equal(oracle(losses, beta, hard=True).argmax(-1), losses.argmin(-1))


def test_stage2_and_stage3_losses_are_eq_5_10_and_eq_5_6():
    generator = torch.Generator().manual_seed(0)
    losses = torch.rand(4, 6, generator=generator, dtype=torch.float64)
    logits = torch.randn(4, 5, generator=generator, dtype=torch.float64)
    beta = 0.3
    log_q = log_stop_distribution(logits)
    q_star = torch.softmax(-losses / beta, dim=-1)
    # KL(q* || q_phi) = sum q* log q* - sum q* log q_phi: stage II drops the first term (no phi in it).
    kl = (q_star * (q_star.log() - log_q)).sum(-1).mean()
    entropy = -(q_star * q_star.log()).sum(-1).mean()
    assert torch.allclose(stage2_loss(losses, logits, beta, hard=False), kl + entropy)
    best = torch.nn.functional.one_hot(losses.argmin(-1), 6).to(losses.dtype)
    assert torch.allclose(stage2_loss(losses, logits, beta, hard=True), -(best * log_q).sum(-1).mean())
    q = log_q.exp()
    assert torch.allclose(stage3_loss(losses, logits, beta), ((q * losses).sum(-1) + beta * (q * log_q).sum(-1)).mean())
    # Stage II's target carries no gradient; stage III's losses do.
    logits.requires_grad_(True)
    losses.requires_grad_(True)
    stage2_loss(losses, logits, beta, hard=False).backward()
    assert losses.grad is None and logits.grad.abs().sum() > 0
    stage3_loss(losses, logits, beta).backward()
    assert losses.grad.abs().sum() > 0


def test_depth_prior_is_the_beta_vae_prior_of_section_5_3_4():
    """With p(t) ∝ exp(-c t / beta), eq. 5.6's E_q l + beta KL(q || p) is stage III's loss of l_t + c t
    (up to a constant), and the oracle q* ∝ p(t) exp(-l_t / beta) is the softmax of -(l_t + c t) / beta."""
    generator = torch.Generator().manual_seed(1)
    losses = torch.rand(4, 6, generator=generator, dtype=torch.float64)
    logits = torch.randn(4, 5, generator=generator, dtype=torch.float64)
    beta, cost = 0.3, 0.05
    t = torch.arange(1, 7, dtype=torch.float64)
    log_prior = torch.log_softmax(-cost * t / beta, dim=-1)
    q = log_stop_distribution(logits).exp()
    vae = ((q * losses).sum(-1) + beta * (q * (q.log() - log_prior)).sum(-1)).mean()
    log_z = torch.logsumexp(-cost * t / beta, dim=-1)
    penalised = with_depth_prior(losses, cost)
    assert torch.allclose(stage3_loss(penalised, logits, beta), vae - beta * log_z)
    posterior = torch.softmax(log_prior - losses / beta, dim=-1)
    assert torch.allclose(oracle(penalised, beta, hard=False), posterior)
    assert torch.equal(with_depth_prior(losses, 0.0), losses)
    # A flat loss after layer 2: the uniform prior's oracle has no reason to stop early, the depth prior stops at 2.
    flat = torch.tensor([[1.0, 0.1, 0.1, 0.1, 0.1, 0.0999]])
    assert oracle(flat, beta, hard=True).argmax(-1).item() == 5
    assert oracle(with_depth_prior(flat, 1e-3), beta, hard=True).argmax(-1).item() == 1


def test_layer_losses_are_the_family_loss_over_that_of_zero():
    context, _ = smoke_context(REGISTRY, "lasso", TINY)
    target = torch.randn(3, 5)
    half = 0.5 * target
    losses = layer_losses(context.problem, [torch.zeros(3, 5), target.clone(), half], {"x": target})
    assert losses.shape == (3, 3)
    assert torch.allclose(losses[:, 1], torch.zeros(3))
    assert torch.allclose(losses[:, 0].mean(), torch.tensor(1.0))
    assert torch.allclose(losses[:, 2], 0.25 * losses[:, 0])


def test_summary_features_are_the_relative_step_size_and_sparsity():
    generator = torch.Generator().manual_seed(0)
    b, x, previous = (torch.randn(7, k, generator=generator) for k in (30, 40, 40))
    x[x.abs() < 0.5] = 0
    expected = torch.stack([torch.log((x - previous).pow(2).sum(-1) / x.pow(2).sum(-1)),
                            torch.log(x.pow(2).sum(-1) / b.pow(2).sum(-1)), (x != 0).float().mean(-1)], dim=-1)
    assert torch.allclose(summary_features(b, x, previous), expected, atol=1e-5)
    stacked = summary_features(b.expand(3, 7, 30), x.expand(3, 7, 40), previous.expand(3, 7, 40))  # all layers at once
    assert stacked.shape == (3, 7, 3) and torch.allclose(stacked[2], expected, atol=1e-5)
    # Scale-free: the same iterates for a problem scaled by 10 give the same features.
    assert torch.allclose(summary_features(10 * b, 10 * x, 10 * previous), expected, atol=1e-4)


def test_position_encoding_distinguishes_layers():
    code = position_encoding(20, 8)
    assert code.shape == (20, 8)
    assert torch.cdist(code, code).add(torch.eye(20)).min() > 1e-3


@pytest.fixture(scope="module", params=["vectors", "summary"])
def fitted(request):
    context, test = smoke_context(REGISTRY, "lasso", TINY, budget=BUDGET)
    return LISTAStop(**{**PARAMS, "policy_features": request.param}).fit(context), context, test


def test_training_runs_every_stage_and_validates_on_the_family_loss(fitted):
    model, context, _ = fitted
    history = context.log["training"]
    assert list(history) == ["warm_start", "stage1", "stage2", "stop_support"]  # finetune_steps = 0: no stage III
    assert all(history[stage][0]["step"] == 0 for stage in ("warm_start", "stage1", "stage2"))
    # Stage II validates the threshold rule's mean loss: its best entry is the fitted model's.
    rule = mean_loss(context.problem, lambda obs: model.solve(obs).estimate, context.val)
    assert min(h["val_metric"] for h in history["stage2"]) == pytest.approx(rule, rel=1e-5)
    # Stage I validates the oracle's choice, each instance's best layer (stage II leaves the layers alone).
    obs, target = context.val.observation(), context.val.target
    with torch.no_grad():
        best = torch.stack([context.problem.loss(x, target) for x in model.forward(obs)]).amin(0).mean()
    assert min(h["val_metric"] for h in history["stage1"]) == pytest.approx(float(best), rel=1e-5)
    assert float(best) < mean_loss(context.problem, lambda o: model.forward(o, keep_all=False)[-1], context.val)


def test_a_depth_prior_stops_earlier_and_selects_on_the_penalised_loss():
    """Stage I from ISTA (no warm start) with a layer cost: the policy stops earlier than with the uniform
    prior's fit, and stage II's model selection scores the rule by l + c t (l over the zero estimate's loss)."""
    context, test = smoke_context(REGISTRY, "lasso", TINY, budget=BUDGET)
    cost, steps = 0.1, {"warm_start": False, "policy_steps": 200}
    model = LISTAStop(**{**PARAMS, **steps, "layer_cost": cost}).fit(context)
    assert list(context.log["training"]) == ["stage1", "stage2", "stop_support"]
    obs, target = context.val.observation(), context.val.target
    stopped = model.solve(obs)
    zero = context.problem.loss(torch.zeros_like(stopped.estimate), target).mean()
    penalised = (context.problem.loss(stopped.estimate, target) / zero + cost * stopped.iterations).mean()
    assert min(h["val_metric"] for h in context.log["training"]["stage2"]) == pytest.approx(float(penalised), rel=1e-5)
    uniform = LISTAStop(**{**PARAMS, **steps}).fit(smoke_context(REGISTRY, "lasso", TINY, budget=BUDGET)[0])
    test_obs = test.observation()
    assert model.solve(test_obs).iterations.float().mean() < uniform.solve(test_obs).iterations.float().mean()


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
    layers = model.forward(obs)
    stopped = model.solve(obs)
    for i, t in enumerate(stopped.iterations.tolist()):  # each estimate is the iterate of its stop layer
        assert torch.allclose(stopped.estimate[i], layers[t - 1][i], atol=1e-6)


def test_threshold_rule_stops_where_the_policy_says(fitted):
    model, _, test = fitted
    obs = test.observation()
    layers = model.network_.lista(obs["b"])
    pi = torch.sigmoid(model.all_logits(obs, layers))
    stop = torch.cat([(pi > 0.5) & model.network_.stop_layers, torch.ones(len(test), 1, dtype=torch.bool)], dim=-1)
    expected = stop.int().argmax(-1) + 1
    assert torch.equal(model.solve(obs).iterations, expected)


def test_policy_runs_only_after_layers_where_validation_q_phi_has_mass(fitted):
    model, context, test = fitted
    mass = model.stop_mass(context.val)
    assert float(mass.sum()) == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(model.network_.stop_layers, mass[:-1] >= model.support_mass)
    support = context.log["training"]["stop_support"]
    assert support["stop_layers"] == (torch.nonzero(model.network_.stop_layers).flatten() + 1).tolist()
    assert support["q_phi_mean"] == pytest.approx(mass.tolist())

    obs, calls = test.observation(), []
    saved = model.network_.stop_layers.clone()
    hook = model.network_.policy.register_forward_hook(lambda *args: calls.append(1))
    try:
        model.network_.stop_layers.fill_(False)
        model.network_.stop_layers[2] = True  # the policy may stop after layer 3 only
        fast, full = model.solve(obs), model.solve(obs, trajectory=True)
    finally:
        hook.remove()
        model.network_.stop_layers.copy_(saved)
    assert len(calls) == 2  # once in the early-exit pass, once (all layers at once) in the full-depth pass
    assert set(fast.iterations.tolist()) <= {3, model.n_layers}
    assert torch.equal(fast.iterations, full.iterations)
    q = full.stop_distribution
    assert torch.all(q[:, [t for t in range(model.n_layers - 1) if t != 2]] == 0)


def test_policy_imitates_a_predictable_oracle():
    """With layers 2..T zeroed, layer 1 is the oracle's best layer on most instances;
    the stage-II loss teaches the policy to stop there."""
    context, test = smoke_context(REGISTRY, "lasso", TINY, budget=BUDGET)
    problem = context.problem
    model = LISTAStop(**PARAMS).initialize(context)  # the ISTA-initialised network, untrained policy
    assert isinstance(model.network_, LISTAStopModel)
    lista = model.network_.lista
    with torch.no_grad():
        for t in range(1, model.n_layers):
            lista.W1[t].zero_()
            lista.W2[t].zero_()

    def loss(batch):
        observation = batch.observation()
        with torch.no_grad():
            outputs = model.forward(observation)
        losses = layer_losses(problem, outputs, batch.target)
        log_q = log_stop_distribution(model.all_logits(observation, outputs))
        hand = -(torch.nn.functional.one_hot(losses.argmin(-1), model.n_layers) * log_q).sum(-1).mean()
        assert torch.allclose(hand, stage2_loss(losses, model.all_logits(observation, outputs), 0.02, hard=True))
        return hand

    optimizer = torch.optim.Adam(model.network_.policy.parameters(), lr=1e-2)
    for _ in range(100):
        optimizer.zero_grad()
        loss(context.draw_train(64)).backward()
        optimizer.step()
    obs = test.observation()
    best = layer_losses(problem, model.forward(obs), test.target).argmin(-1) + 1
    assert (best == 1).float().mean() > 0.8
    assert (model.solve(obs).iterations == best).float().mean() > 0.9


def test_lista_stop_saves_layers_and_round_trips(fitted):
    model, _, test = fitted
    obs = test.observation()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    clone = LISTAStop(**{**PARAMS, "policy_features": model.policy_features}).load_state_dict(
        torch.load(buffer, weights_only=True))
    assert torch.equal(clone.solve(obs).iterations, model.solve(obs).iterations)
    assert torch.allclose(clone.solve(obs).estimate, model.solve(obs).estimate, atol=1e-6)
    assert model.full_depth().solve(obs).iterations.eq(model.n_layers).all()


@pytest.mark.parametrize("features", ["vectors", "summary"])
def test_registered_lista_stop_meets_the_solver_contract(features):
    check_solver(REGISTRY, "lista_stop", "lasso", TINY,
                 params={"n_layers": 5, "policy_hidden": 16, "policy_features": features}, budget=BUDGET)


def test_unknown_stop_rule_is_a_clear_error():
    with pytest.raises(ValueError, match="stop_rule must be one of"):
        REGISTRY.solver("lista_stop").build(**{**PARAMS, "stop_rule": "coin"})
