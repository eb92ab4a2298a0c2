"""DnCNN and DnCNN-stop (thesis 5.5.3): architecture, residual learning, blind solving, training, stopping."""
import pytest
import torch

import l2obench.learned_stopping
import l2obench.stopping
from l2obench.contracts import Budget
from l2obench.dncnn import DnCNN, exit_layers
from l2obench.learned import mean_loss
from l2obench.registry import Registry
from l2obench.testing import check_solver, smoke_context
from l2obench.image_training import dihedral, random_patches
from l2obench_plugins.dncnn import DnCNNStop
from l2obench_problems.denoising import blind_observation, psnr

REGISTRY = Registry()
TINY = {"crop": 16, "n_train": 32, "n_val": 8, "n_test": 10, "n_ood": 4}
BUDGET = Budget(steps=30, batch_size=8, eval_every=10, patience=3)
NET = {"n_layers": 5, "width": 8, "patch": 8}
STOP = {**NET, "policy_steps": 20, "policy_hidden": 4, "head_steps": 10}


def build(name, **params):
    return REGISTRY.solver(name).build("denoising", **params)


def context(settings=TINY, budget=BUDGET, seed=0):
    return smoke_context(REGISTRY, "denoising", settings, budget=budget, seed=seed)


# --------------------------------------------------------------------------- the network

def test_architecture_is_the_papers():
    net = DnCNN(depth=6, width=8)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 6 and all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert [c.out_channels for c in convs] == [8] * 5 + [1]
    assert isinstance(net.layers[0][1], torch.nn.ReLU) and len(net.layers[0]) == 2  # conv + ReLU
    for block in net.layers[1:-1]:  # depth - 2 of conv + batch norm + ReLU
        assert [type(m) for m in block] == [torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.ReLU]
    assert isinstance(net.layers[-1], torch.nn.Conv2d)
    # The last convolution starts at zero: the untrained network predicts no noise.
    assert torch.equal(net(torch.rand(2, 1, 12, 12)), torch.zeros(2, 1, 12, 12))
    # Exits where the authors' DnCNN_DS has them: layers 1 .. L-2 below 27 layers, every other one above.
    assert exit_layers(20) == list(range(1, 19)) and exit_layers(30, 2) == list(range(1, 29, 2))
    with pytest.raises(ValueError, match="exits must lie"):
        DnCNN(depth=5, width=4, exits=[4])


def test_dncnn_is_residual_and_blind():
    ctx, test = context()
    model = build("dncnn", **NET).initialize(ctx)
    with torch.no_grad():
        for p in model.network_.parameters():
            p.normal_(0, 0.1)
    obs = test.observation()
    noisy = obs["noisy"]
    with torch.no_grad():
        expected = noisy - model.network_(noisy)
    estimate = model.solve(obs).estimate
    assert torch.equal(estimate, expected) and not torch.equal(estimate, noisy)
    # Blind: the noise level is never read.
    assert torch.equal(model.solve(blind_observation(obs)).estimate, estimate)
    assert torch.equal(model.solve({**obs, "sigma": obs["sigma"] * 0 + 1.0}).estimate, estimate)


def test_batch_norm_is_in_eval_mode_at_solve_time():
    ctx, test = context()
    model = build("dncnn", **NET).fit(ctx)
    assert not model.network_.training
    norms = [m for m in model.network_.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(float(m.running_var.sub(1).abs().max()) > 0 for m in norms)  # trained statistics
    before = [m.running_mean.clone() for m in norms]
    obs = test.observation()
    batch = model.solve(obs).estimate
    single = model.solve({"noisy": obs["noisy"][3:4]}).estimate
    torch.testing.assert_close(single, batch[3:4], rtol=0, atol=1e-6)  # per image: no batch statistics
    assert all(torch.equal(a, m.running_mean) for a, m in zip(before, norms))


def test_patches_and_flips_keep_noisy_and_clean_aligned():
    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(5, 1, 12, 10, generator=generator)
    noise = torch.randn(5, 1, 12, 10, generator=generator)
    noisy_patch, clean_patch = random_patches([clean + noise, clean], 6, generator)
    assert noisy_patch.shape == clean_patch.shape == (5, 1, 6, 6)
    residual = noisy_patch - clean_patch
    for i in range(5):  # each patch is a window of that image's noise
        windows = noise[i, 0].unfold(0, 6, 1).unfold(1, 6, 1)
        assert (windows - residual[i, 0]).abs().amax((-1, -2)).min() < 1e-6
    square = torch.arange(9.0).view(1, 1, 3, 3)
    images = {tuple(dihedral([square], k)[0].flatten().tolist()) for k in range(8)}
    assert len(images) == 8  # the 8 symmetries of the square
    assert random_patches([clean], 12, generator)[0] is clean


def test_training_lowers_validation_mse_and_beats_the_noisy_input_at_sigma_25():
    settings = {"crop": 32, "n_train": 64, "n_val": 16, "n_test": 16, "test_sigma": [25.0], "ood_sigma": []}
    ctx, test = context(settings, Budget(steps=60, batch_size=16, eval_every=20, patience=3))
    model = build("dncnn", **{**NET, "width": 16, "patch": 16, "lr_decays": []}).fit(ctx)
    history = ctx.log["training"]
    assert history[0]["step"] == 0 and min(h["val_metric"] for h in history) < 0.7 * history[0]["val_metric"]
    obs, clean = test.observation(), test.target["clean"]
    assert psnr(model.solve(obs).estimate, clean).mean() > psnr(obs["noisy"], clean).mean() + 1.0
    score = mean_loss(ctx.problem, lambda o: model.solve(o).estimate, ctx.val)
    assert score == pytest.approx(min(h["val_metric"] for h in history), rel=1e-5)  # best state kept


@pytest.mark.parametrize("name, params", [("dncnn", NET), ("dncnn_stop", STOP)])
def test_registered_dncnn_meets_the_solver_contract(name, params):
    assert REGISTRY.solver(name).learned and REGISTRY.solver(name).families == ("denoising",)
    check_solver(REGISTRY, name, "denoising", TINY, params=params, budget=BUDGET)


# --------------------------------------------------------------------------- DnCNN-stop

@pytest.fixture(scope="module")
def fitted():
    ctx, test = context()
    model = build("dncnn_stop", **{**STOP, "support_mass": 0.0}).fit(ctx)
    return model, ctx, test


def test_dncnn_stop_trains_by_the_shared_stages(monkeypatch):
    assert l2obench.learned_stopping.stage1_loss is l2obench.stopping.stage1_loss
    calls = []
    for name in ("stage1_loss", "stage2_loss"):
        original = getattr(l2obench.learned_stopping, name)
        monkeypatch.setattr(l2obench.learned_stopping, name,
                            lambda *args, original=original, name=name: calls.append(name) or original(*args))
    modes = []
    original_logits = DnCNNStop.all_logits

    def recording(self, observation, outputs):
        if self.network_.policy.training:  # a training step of stage II: the predictive model is held fixed
            modes.append(self.network_.dncnn.training)
        return original_logits(self, observation, outputs)

    monkeypatch.setattr(DnCNNStop, "all_logits", recording)
    ctx, _ = context()
    model = build("dncnn_stop", **STOP).fit(ctx)
    history = ctx.log["training"]
    assert list(history) == ["warm_start", "stage1", "stage2", "stop_support"]
    assert "stage1_loss" in calls and "stage2_loss" in calls
    assert modes and not any(modes)  # batch norm on running statistics while the policy trains
    obs, target = ctx.val.observation(), ctx.val.target
    with torch.no_grad():
        best = torch.stack([ctx.problem.loss(x, target) for x in model.forward(obs)]).amin(0).mean()
    assert min(h["val_metric"] for h in history["stage1"]) == pytest.approx(float(best), rel=1e-5)
    assert len(history["stop_support"]["q_phi_mean"]) == model.n_outputs == len(exit_layers(5)) + 1


def test_exit_heads_train_alone_on_their_summed_losses_before_stage_one():
    from l2obench.training import train_stages

    ctx, _ = context()
    model = build("dncnn_stop", **{**STOP, "head_steps": 30}).initialize(ctx)
    model.start_patches(ctx)
    heads, *stage1 = model.stage1_schedule(None, None, ctx)
    assert heads.steps == 30 and heads.lr == model.lr and len(stage1) == 1 + len(model.lr_decays)
    assert {id(p) for p in heads.parameters} == {id(p) for p in model.network_.dncnn.heads.parameters()}
    obs, target = ctx.val.observation(), ctx.val.target

    def outputs():
        with torch.no_grad():
            return model.forward(obs)

    before = outputs()
    history = train_stages(model.network_, [heads], ctx)
    after = outputs()
    torch.testing.assert_close(after[-1], before[-1], rtol=0, atol=0)  # the layers and their statistics held
    exit_loss = lambda outs: float(sum(ctx.problem.loss(x, target).mean() for x in outs[:-1]))  # noqa: E731
    assert exit_loss(after) < 0.8 * exit_loss(before)  # the heads start at zero: exits = the noisy image
    assert min(h["val_metric"] for h in history) == pytest.approx(exit_loss(after), rel=1e-4)
    # no heads stage from scratch (stage I trains everything at lr) or with head_steps = 0
    for params in ({"warm_start": False}, {"head_steps": 0}):
        assert len(build("dncnn_stop", **{**STOP, **params}).initialize(ctx).stage1_schedule(None, None, ctx)) \
            == 1 + len(model.lr_decays)


def test_early_exit_and_full_depth_passes_agree(fitted):
    model, _, test = fitted
    obs = test.observation()
    with torch.no_grad():  # a policy that stops some images early and not others
        model.network_.policy.mlp[-1].bias.fill_(0.0)
    for rule in ("threshold", "sample", "never"):
        model.stop_rule = rule
        fast, full = model.solve(obs), model.solve(obs, trajectory=True)
        assert torch.equal(fast.iterations, full.iterations), rule
        torch.testing.assert_close(fast.estimate, full.estimate, rtol=0, atol=1e-5)
        assert torch.equal(full.trajectory[-1], full.estimate)
        torch.testing.assert_close(full.stop_distribution.sum(-1), torch.ones(len(test)))
    model.stop_rule = "sample"
    stops = model.solve(obs).iterations
    assert len(set(stops.tolist())) > 1
    with torch.no_grad():
        outputs = model.forward(obs)
    for i, t in enumerate(stops.tolist()):  # each estimate is the output of its exit
        torch.testing.assert_close(model.solve(obs).estimate[i], outputs[t - 1][i], rtol=0, atol=1e-5)
    model.stop_rule = "threshold"
    assert model.full_depth().solve(obs).iterations.eq(model.n_outputs).all()


def test_early_exit_skips_the_remaining_layers(fitted):
    model, _, test = fitted
    obs, rows = test.observation(), {}
    layers = model.network_.dncnn.layers
    hooks = [layer.register_forward_hook(lambda module, args, out, k=k: rows.setdefault(k, []).append(len(out)))
             for k, layer in enumerate(layers)]
    saved = model.network_.policy.mlp[-1].bias.clone()
    try:
        with torch.no_grad():
            model.network_.policy.mlp[-1].bias.fill_(1e4)  # stop at the first exit the policy may take
        model.network_.stop_layers.fill_(False)
        model.network_.stop_layers[1] = True  # exit 2, after layer 2
        solution = model.solve(obs)
        assert solution.iterations.eq(2).all()
        assert set(rows) == {0, 1}  # layers 3 .. depth never ran
        rows.clear()
        model.full_depth().solve(obs)
        assert set(rows) == set(range(len(layers)))
    finally:
        for hook in hooks:
            hook.remove()
        with torch.no_grad():
            model.network_.policy.mlp[-1].bias.copy_(saved)
        model.network_.stop_layers.fill_(True)


def test_policy_runs_only_after_exits_where_it_may_stop(fitted):
    model, ctx, test = fitted
    obs, calls = test.observation(), []
    hook = model.network_.policy.register_forward_hook(lambda *args: calls.append(1))
    try:
        model.network_.stop_layers.fill_(False)
        model.network_.stop_layers[0] = True
        fast, full = model.solve(obs), model.solve(obs, trajectory=True)
    finally:
        hook.remove()
        model.network_.stop_layers.fill_(True)
    assert len(calls) == 2  # once in the early-exit pass, once (all exits at once) in the full-depth pass
    assert set(fast.iterations.tolist()) <= {1, model.n_outputs}
    assert torch.equal(fast.iterations, full.iterations)
    assert torch.all(full.stop_distribution[:, 1:-1] == 0)
    mass = model.stop_mass(ctx.val)
    assert float(mass.sum()) == pytest.approx(1.0, abs=1e-5)


def test_dncnn_stop_round_trips_its_state(fitted):
    import io

    model, _, test = fitted
    obs = test.observation()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    clone = build("dncnn_stop", **{**STOP, "support_mass": 0.0}).load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(clone.network_.stop_layers, model.network_.stop_layers)
    assert torch.equal(clone.solve(obs).iterations, model.solve(obs).iterations)
    assert torch.equal(clone.solve(obs).estimate, model.solve(obs).estimate)
