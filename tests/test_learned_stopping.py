"""The learned-stopping layer (``l2obench.learned_stopping``) with a minimal subclass of its own.

LISTA-stop and DnCNN-stop are its subclasses (tests/test_lista_stop.py, tests/test_dncnn.py);
this file checks what the base promises any subclass: early exit drops the stopped rows,
the hooks are called where documented, and the passes agree.
"""
import pytest
import torch
from torch import nn

from l2obench.contracts import Budget
from l2obench.learned_stopping import LearnedStopping, StoppingModel
from l2obench.registry import Registry
from l2obench.testing import smoke_context
from l2obench.unrolled import shared_design

REGISTRY = Registry()
TINY = {"m": 10, "n": 20, "n_train": 64, "n_val": 32, "n_test": 32}
BUDGET = Budget(steps=10, batch_size=16, eval_every=5, patience=2)
PARAMS = dict(n_layers=4, beta=0.02, layer_cost=0.0, warm_start=False, lr=1e-2, lr_decays=[], fresh_samples=True,
              policy_lr=1e-2, policy_steps=10, hard_oracle=True, finetune_steps=5, support_mass=0.0,
              stop_rule="threshold", sample_seed=0)


class GradientModel(StoppingModel):
    """Gradient steps ``x <- x - s_t A^T (A x - b)`` with learned steps, and a linear policy on ``||x||``."""

    def __init__(self, n_layers: int):
        super().__init__(n_layers)
        self.steps = nn.Parameter(torch.full((n_layers,), 0.1))
        self.policy = nn.Linear(2, 1)

    @property
    def predictive(self):
        return nn.ParameterList([self.steps])


class GradientStop(LearnedStopping):
    INSTANCE_KEYS = ("b",)

    def __init__(self, **params):
        super().__init__(**params)
        self.seen, self.batches = [], []

    def network_config(self, context):
        return {"n": int(shared_design(context, "toy").shape[1])}

    def make_network(self, config):
        return GradientModel(self.n_layers)

    def exit_step(self, t, state, observation):
        A, b = observation["A"], observation["b"]
        x = b.new_zeros(len(b), A.shape[1]) if state is None else state
        self.seen.append(len(b))
        return x - self.network_.steps[t] * (x @ A.T - b) @ A

    def exit_output(self, t, state, observation):
        return state

    def zero_estimate(self, observation):
        return observation["b"].new_zeros(len(observation["b"]), self.config_["n"])

    def layer_logits(self, observation, t, output, state, previous):
        features = torch.stack([output.norm(dim=-1), torch.full_like(output[:, 0], float(t))], dim=-1)
        return self.network_.policy(features).squeeze(-1)

    def all_logits(self, observation, outputs):
        return torch.stack([self.layer_logits(observation, t, x, x, None) for t, x in enumerate(outputs[:-1])], -1)

    def training_batch(self, batch):
        self.batches.append(len(batch))
        return batch.subset(slice(0, len(batch) // 2))


@pytest.fixture
def fitted():
    context, test = smoke_context(REGISTRY, "lasso", TINY, budget=BUDGET)
    return GradientStop(**PARAMS).fit(context), context, test


def test_stages_use_the_training_batch_hook_and_record_the_support(fitted):
    model, context, _ = fitted
    history = context.log["training"]
    assert list(history) == ["stage1", "stage2", "stage3", "stop_support"]
    # Every stage trains on training_batch: stage I (10 steps), stage II (10), stage III (5).
    assert len(model.batches) == 25 and set(model.batches) == {16}
    assert history["stop_support"]["stop_layers"] == [1, 2, 3]  # support_mass 0: every layer but the last
    assert len(history["stop_support"]["q_phi_mean"]) == model.n_outputs == 4


def test_early_exit_runs_later_steps_on_the_remaining_rows_only(fitted):
    model, _, test = fitted
    obs = test.observation()
    with torch.no_grad():  # stop the instances with a large iterate after step 2, the others run on
        model.network_.policy.weight.copy_(torch.tensor([[1.0, 0.0]]))
        norms = model.forward(obs)[1].norm(dim=-1)
        model.network_.policy.bias.fill_(-float(norms.median()))
    model.network_.stop_layers.copy_(torch.tensor([False, True, False]))
    model.seen.clear()
    fast = model.solve(obs)
    stopped = int((norms > norms.median()).sum())
    assert 0 < stopped < len(test)
    assert model.seen == [len(test), len(test), len(test) - stopped, len(test) - stopped]
    full = model.solve(obs, trajectory=True)
    assert torch.equal(fast.iterations, full.iterations) and set(fast.iterations.tolist()) == {2, 4}
    torch.testing.assert_close(fast.estimate, full.estimate, rtol=0, atol=1e-6)
    assert torch.all(full.stop_distribution[:, [0, 2]] == 0)
    assert model.full_depth().solve(obs).iterations.eq(4).all() and model.stop_rule == "threshold"


def test_warm_start_goes_through_its_hook():
    context, _ = smoke_context(REGISTRY, "lasso", TINY, budget=BUDGET)
    calls = []

    class Warm(GradientStop):
        def warm_start_network(self, context):
            calls.append(context)
            return [{"step": 0}]

    Warm(**{**PARAMS, "warm_start": True, "finetune_steps": 0}).fit(context)
    assert calls == [context] and list(context.log["training"])[:2] == ["warm_start", "stage1"]
