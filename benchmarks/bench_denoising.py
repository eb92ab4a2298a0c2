"""asv benchmarks of the denoising family (thesis 5.5.3): data and classical denoisers.

Drawing dead-leaves test crops (64 x 64, with noise), and each classical denoiser
(wavelet soft-thresholding, TV by Chambolle's algorithm, BM3D) on 16 noisy
64 x 64 dead-leaves crops at sigma = 25 / 255, one thread. The DnCNN
forward / backward step joins them with the learned denoisers.
"""
import torch

from l2obench.registry import Registry
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
