"""asv benchmarks of the algorithm layers on quadratic energies (thesis chapter 4).

A training step of the hybrid models ``GD^k``, ``NAG^k`` and ``RNN^k`` on a
neural energy ``Q_theta(x)`` (hidden size 16) at the authors' size (d = 5,
m = 10, batches of 50, k = 16), and one algorithm-property probe (cvg, stab,
sens of NAG at k = 16 on 256 given energies, 8 directions).
"""
import torch

from l2obench.contracts import Budget
from l2obench.probes import probe_rows
from l2obench.registry import Registry
from l2obench.testing import smoke_context

REGISTRY = Registry()
SETTINGS = {"d": 5, "m": 10, "n_train": 50, "n_val": 50, "n_test": 256, "pool": 1000}


class HybridTrainingStep:
    """Forward through ``Q_theta`` and k unrolled steps, loss of eq. 4.10, backward and Adam step."""

    params = ["gd_layer", "nag_layer", "rnn_layer"]
    param_names = ["solver"]
    timeout = 120

    def setup(self, solver):
        torch.set_num_threads(1)
        self.context, _ = smoke_context(REGISTRY, "quadratic", SETTINGS, Budget(steps=1, batch_size=50))
        self.solver = REGISTRY.solver(solver).build("quadratic", k=16, hidden=16).initialize(self.context)
        self.solver.network_.train()
        self.optimizer = torch.optim.Adam(self.solver.network_.parameters(), lr=1e-3)
        self.batch = self.context.train

    def time_training_step(self, solver):
        loss = self.solver.training_loss(self.solver.forward(self.batch.observation()), self.batch,
                                         self.context.problem)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


class Probe:
    """``l2obench.probes.probe_rows`` for NAG (k = 16, step 1/L) on 256 given energies."""

    timeout = 120

    def setup(self):
        torch.set_num_threads(1)
        context, self.test = smoke_context(REGISTRY, "quadratic", {**SETTINGS, "mode": "given"})
        self.family = context.problem
        self.solver = REGISTRY.solver("nag").build("quadratic", k=16, step=1.0).with_data_term("quadratic")

    def time_probe(self):
        probe_rows(self.solver, REGISTRY.solver("nag"), self.family, self.test, eps=1e-3, directions=8,
                   generator=torch.Generator().manual_seed(0))
