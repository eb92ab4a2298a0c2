"""asv benchmarks of the learned-solver layer (``l2obench.learned.LearnedSolver``).

A training step (the layer-weighted family loss, backward and Adam step, as
``l2obench.training.train`` runs it) and a batched inference pass, for LISTA
at the thesis's learning-to-stop size (m = 250, n = 500, T = 20, batches of
128) and for ALISTA on per-instance regression designs (d = 128, 48-80
samples), whose analytic weights are recomputed for every batch.
"""
import torch

from l2obench.contracts import Budget
from l2obench.registry import Registry
from l2obench.testing import smoke_context

REGISTRY = Registry()
CASES = {
    "lista-lasso": ("lista", "lasso", {"m": 250, "n": 500, "p": 0.1, "condition_number": 5.0, "n_train": 128,
                                       "n_val": 128, "n_test": 1000}, {"n_layers": 20}),
    "alista-slr": ("alista", "slr", {"d": 128, "s": 8, "n_samples": [48, 80], "n_train": 128, "n_val": 128,
                                     "n_test": 1000}, {"n_layers": 16}),
}


class LearnedSolverStep:
    """One training step of the base class's default loss, on a batch of 128 instances."""

    params = list(CASES)
    param_names = ["case"]
    timeout = 300

    def setup(self, case):
        torch.set_num_threads(1)
        name, family, settings, params = CASES[case]
        self.context, self.test = smoke_context(REGISTRY, family, settings, Budget(steps=1, batch_size=128))
        self.solver = REGISTRY.solver(name).build(**params).initialize(self.context)
        self.solver.network_.train()
        self.optimizer = torch.optim.Adam(self.solver.network_.parameters(), lr=1e-4)
        self.batch = self.context.train

    def time_training_step(self, case):
        loss = self.solver.training_loss(self.solver.forward(self.batch.observation()), self.batch,
                                         self.context.problem)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def time_inference(self, case):
        self.solver.solve(self.test.observation())
