"""asv benchmarks: a PLISA forward pass (inference) and a training step on SLR and SPE batches."""
from l2obench.contracts import Budget
from l2obench.registry import Registry
from l2obench.testing import smoke_context

REGISTRY = Registry()

# The small scale's sizes: SLR d = 128 with 64-96 samples per instance, SPE d = 30.
SETTINGS = {
    "slr": {"d": 128, "s": 8, "n_samples": [64, 96], "n_train": 64, "n_val": 64, "n_test": 256},
    "spe": {"d": 30, "M": 30, "n_train": 64, "n_val": 64, "n_test": 64},
}


class PLISAInference:
    """A batched forward pass with the default depth (SLR: T = 20 blocks of K = 5 layers; SPE: 5 x 4):
    256 SLR instances (d = 128, n = 64..96) or 64 SPE instances (d = 30).

    Networks are fitted for one step (the pass costs the same trained or not;
    on SPE the backtracking of untrained steps may cost a little more).
    """

    params = ["slr", "spe"]
    param_names = ["family"]
    timeout = 300

    def setup(self, family):
        budget = Budget(steps=1, batch_size=16, eval_every=1000, patience=1)
        context, test = smoke_context(REGISTRY, family, SETTINGS[family], budget=budget)
        self.model = REGISTRY.solver("plisa").build(family).fit(context)
        self.observation = test.observation()

    def time_solve(self, family):
        self.model.solve(self.observation)

    def time_solve_with_trajectory(self, family):
        self.model.solve(self.observation, trajectory=True)

    def peakmem_solve(self, family):
        self.model.solve(self.observation)


class PLISATraining:
    """Ten training steps (batch 64) including drawing the fresh training batches."""

    params = ["slr", "spe"]
    param_names = ["family"]
    timeout = 300

    def setup(self, family):
        budget = Budget(steps=10, batch_size=64, eval_every=1000, patience=1)
        self.context, _ = smoke_context(REGISTRY, family, SETTINGS[family], budget=budget)

    def time_ten_training_steps(self, family):
        REGISTRY.solver("plisa").build(family).fit(self.context)
