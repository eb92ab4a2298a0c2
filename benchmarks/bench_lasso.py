"""asv benchmarks: data generation, batched FISTA, a LISTA training step, a smoke cell."""
import tempfile

import torch

from l2obench.cache import Cache
from l2obench.contracts import Budget
from l2obench.registry import Registry
from l2obench.testing import smoke_context

REGISTRY = Registry()


class DataGeneration:
    """1000 LASSO instances with m = n / 2 (the small and paper scales' sizes)."""

    params = [250, 500]
    param_names = ["n"]

    def setup(self, n):
        self.family = REGISTRY.problem("lasso").build(m=n // 2, n=n)
        self.shared = self.family.draw_shared(torch.Generator().manual_seed(0))

    def time_draw_1000_instances(self, n):
        self.family.draw(1000, torch.Generator().manual_seed(1), self.shared, "test")


class BatchedFISTA:
    """FISTA on 1000 instances of 250 x 500 (the speed target's setting)."""

    params = [0.05, 0.22]
    param_names = ["lam"]
    timeout = 300

    def setup(self, lam):
        family = REGISTRY.problem("lasso").build(m=250, n=500)
        shared = family.draw_shared(torch.Generator().manual_seed(0))
        self.observation = family.draw(1000, torch.Generator().manual_seed(1), shared, "test").observation()
        self.solver = REGISTRY.solver("fista").build(lam=lam, tol=1e-5, max_iter=5000)

    def time_solve(self, lam):
        self.solver.solve(self.observation)

    def peakmem_solve(self, lam):
        self.solver.solve(self.observation)


class LISTATraining:
    """LISTA training (T = 20, batch 128) at the small scale's size: ten steps of the joint
    schedule (all layers on the layer-weighted loss), or one step in each of the progressive
    schedule's T * 3 stages (layer t alone, then layers 1..t at two decayed learning rates),
    each stage with its validation before and after."""

    params = ["joint", "progressive"]
    param_names = ["schedule"]
    timeout = 300

    def setup(self, schedule):
        steps = 10 if schedule == "joint" else 20 * 3
        self.context, _ = smoke_context(REGISTRY, "lasso", {"m": 125, "n": 250, "n_train": 256, "n_val": 128,
                                                          "n_test": 8},
                                        budget=Budget(steps=steps, batch_size=128, eval_every=1000, patience=1))

    def time_training(self, schedule):
        REGISTRY.solver("lista").build(schedule=schedule).fit(self.context)


class SmokeCell:
    """One cell of the smoke suite end to end (data, tuning, solve, evaluation, write)."""

    timeout = 300

    def setup(self):
        from l2obench.suites import plan
        from l2obench_problems.suites import SMOKE

        self.cells = [c for c in plan(REGISTRY, "smoke", SMOKE, scale="smoke") if c.solver_label == "FISTA (T=20)"]

    def time_fista_cell(self):
        from l2obench.runner import Runner

        with tempfile.TemporaryDirectory() as tmp:
            runner = Runner(REGISTRY, self.cells, f"{tmp}/run", torch.device("cpu"), Cache(enabled=False),
                            progress=False, echo=lambda line: None)
            runner.run()


class LearnedInference:
    """A batched inference pass over 1500 instances at the small scale's size (m = 125, n = 250).

    Networks are fitted for one step (the pass costs the same trained or not).
    LISTA-stop's policy is biased to never stop, so the pass evaluates the
    policy after every layer: the worst case of its sequential inference.
    """

    params = ["lista", "alista", "lista_stop"]
    param_names = ["solver"]
    timeout = 300

    def setup(self, solver):
        budget = Budget(steps=1, batch_size=32, eval_every=1000, patience=1)
        context, test = smoke_context(REGISTRY, "lasso", {"m": 125, "n": 250, "n_train": 64, "n_val": 64,
                                                          "n_test": 1500}, budget=budget)
        # The joint schedule: one training step (the progressive one would take one per stage).
        self.model = REGISTRY.solver(solver).build(schedule="joint",
                                                   **({"policy_steps": 1} if solver == "lista_stop" else {}))
        self.model.fit(context)
        if solver == "lista_stop":
            with torch.no_grad():
                self.model.network_.policy.mlp[-1].bias.fill_(-20.0)
        self.observation = test.observation()

    def time_inference(self, solver):
        self.model.solve(self.observation)
