"""asv benchmarks of the denoising family (thesis 5.5.3): data and classical denoisers.

Drawing dead-leaves test crops (64 x 64, with noise), and each classical denoiser
(wavelet soft-thresholding, TV by Chambolle's algorithm, BM3D) on 16 noisy
64 x 64 dead-leaves crops at sigma = 25 / 255, one thread; and DnCNN's
training step (forward, backward and Adam step on 32 patches of 32 x 32, as
``l2obench.training.train`` runs it) and inference on 16 crops of 64 x 64, at
the small scale's size (8 layers, 32 channels) and the paper's (17 layers, 64
channels).
"""
import torch

from l2obench.contracts import Budget
from l2obench.registry import Registry
from l2obench.testing import smoke_context
from l2obench_problems import DENOISING

REGISTRY = Registry()
SETTINGS = {"crop": 64, "n_train": 16, "n_val": 16, "n_test": 16, "test_sigma": [25.0]}


class DeadLeaves:
    """``Denoising.draw``: 16 noisy 64 x 64 dead-leaves crops (discs painted front to back)."""

    timeout = 120

    def setup(self):
        torch.set_num_threads(1)
        self.family = DENOISING.build(**SETTINGS)

    def time_draw(self):
        self.family.draw(16, torch.Generator().manual_seed(0), {}, "test")


class ClassicalDenoiser:
    """One batched ``solve`` of a classical denoiser on 16 crops (non-blind, default parameters)."""

    params = ["wavelet", "tv", "bm3d"]
    param_names = ["solver"]
    timeout = 300

    def setup(self, solver):
        torch.set_num_threads(1)
        family = DENOISING.build(**SETTINGS)
        self.observation = family.draw(16, torch.Generator().manual_seed(0), {}, "test").observation()
        self.solver = REGISTRY.solver(solver).build("denoising")

    def time_solve(self, solver):
        self.solver.solve(self.observation)


class DnCNNStep:
    """One DnCNN training step on 32 patches of 32 x 32, and one batched ``solve`` of 16 crops of 64 x 64."""

    params = [["small", "paper"]]
    param_names = ["size"]
    timeout = 300
    SIZES = {"small": {"n_layers": 8, "width": 32}, "paper": {"n_layers": 17, "width": 64}}

    def setup(self, size):
        torch.set_num_threads(1)
        context, test = smoke_context(REGISTRY, "denoising", {**SETTINGS, "n_train": 32},
                                      Budget(steps=1, batch_size=32))
        self.solver = REGISTRY.solver("dncnn").build("denoising", **self.SIZES[size], patch=32).initialize(context)
        self.solver.start_patches(context)
        self.problem, self.observation = context.problem, test.observation()
        self.batch = self.solver.training_batch(context.train)
        self.optimizer = torch.optim.Adam(self.solver.network_.parameters(), lr=1e-3)

    def time_training_step(self, size):
        self.solver.network_.train()
        loss = self.problem.loss(self.solver.forward(self.batch.observation())[-1], self.batch.target).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def time_solve(self, size):
        self.solver.network_.eval()
        self.solver.solve(self.observation)
