"""The unrolled quadratic-energy denoiser of NeurIPS 2020 section 7.2: ``Alg^k_phi(E_theta(X, .))``.

The energy, quadratic in the image ``Y`` given the noisy image ``X``,

    E_theta(X, Y) = 0.5 ||Y + g_theta(X) - X||_F^2 + 0.5 sum_ij |f_theta(X)_ij Y_ij|^2,

has the gradient ``(1 + c^2) Y - (X - g_theta(X))`` with ``c = f_theta(X)`` (element-wise)
and its minimizer in closed form, ``(X - g_theta(X)) / (1 + c^2)``. ``f_theta`` and
``g_theta`` are small DnCNNs (``l2obench.dncnn.DnCNN``; the paper's Fig. 7: 3 channels and
2 hidden layers, ``f_theta`` 20 channels when over-parameterized, ``g_theta = 0`` when
under-parameterized, here ``g_layers = 0``); ``c = f_max sigmoid(DnCNN_f(X))`` lies in
``(0, f_max)``, so the Hessian ``diag(1 + c^2)`` has its eigenvalues in ``[mu, L] = [1, 1 + f_max^2]``.

``Alg`` is ``k`` steps of GD or NAG from ``Y_0 = 0`` (thesis eq. 4.9, as the algorithm
layers of the quadratic family) with the learned step ``phi = phi_max sigmoid(r)`` in the
stable region of thesis Table 4.1, ``phi_max = 2 / (mu + L)`` (GD) or ``4 / (mu + 3 L)``
(NAG), and NAG's momentum ``(1 - sqrt(mu phi)) / (1 + sqrt(mu phi))``. The model is trained
end to end on the family's loss of ``Y_k`` (random patches, flips and rotations, Adam with
the learning-rate decay stages; ``l2obench.image_training``); each ``k`` is a separately
trained model, as in the paper's Fig. 7. A solution's trajectory is ``Y_1 .. Y_k``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from l2obench.contracts import FitContext, Solution
from l2obench.dncnn import DnCNN
from l2obench.image_training import PatchTraining, solve_in_chunks
from l2obench.learned import LearnedSolver

__all__ = ["EnergyDenoiser", "QuadraticEnergyModel"]

ALGORITHMS = ("gd", "nag")


class QuadraticEnergyModel(nn.Module):
    """``Alg^k_phi(E_theta(X, .))`` (module docstring).

    Parameters
    ----------
    algorithm : {"gd", "nag"}
    k : int
        Unrolled steps.
    f_layers, f_width : int
        ``f_theta``'s DnCNN: layers (at least 3) and channels.
    g_layers, g_width : int
        ``g_theta``'s DnCNN; ``g_layers = 0``: ``g_theta = 0``.
    f_max : float
        Bound of the coefficients ``c = f_theta(X)``.
    step_init : float
        Initial step in units of ``1 / L``, below ``L phi_max``.
    channels : int
        Image channels.
    """

    def __init__(self, algorithm: str, k: int, f_layers: int, f_width: int, g_layers: int, g_width: int,
                 f_max: float, step_init: float, channels: int = 1):
        super().__init__()
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
        self.algorithm, self.k, self.f_max = algorithm, int(k), float(f_max)
        self.f = DnCNN(f_layers, f_width, channels)
        self.g = DnCNN(g_layers, g_width, channels) if g_layers else None
        self.mu, self.L = 1.0, 1.0 + self.f_max**2
        self.phi_max = 2 / (self.mu + self.L) if algorithm == "gd" else 4 / (self.mu + 3 * self.L)
        ratio = step_init / self.L / self.phi_max
        if not 0 < ratio < 1:
            raise ValueError(f"step_init {step_init} / L lies outside the stable region (0, {self.phi_max * self.L:.4g}"
                             f" / L) of {algorithm.upper()} for L = 1 + f_max^2 = {self.L:.4g}")
        self.r = nn.Parameter(torch.tensor(math.log(ratio / (1 - ratio))))

    @property
    def step(self) -> torch.Tensor:
        """The step ``phi``, in ``(0, phi_max)``."""
        return self.phi_max * torch.sigmoid(self.r)

    def coefficients(self, noisy: torch.Tensor) -> torch.Tensor:
        """``c = f_theta(X)`` in ``(0, f_max)``."""
        return self.f_max * torch.sigmoid(self.f(noisy))

    def energy(self, noisy: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``E_theta(X, Y)`` per image ``(N,)``."""
        target = noisy if self.g is None else noisy - self.g(noisy)
        c = self.coefficients(noisy)
        return 0.5 * ((y - target) ** 2 + (c * y) ** 2).flatten(1).sum(1)

    def minimizer(self, noisy: torch.Tensor) -> torch.Tensor:
        """The closed-form minimizer ``(X - g_theta(X)) / (1 + c^2)``."""
        target = noisy if self.g is None else noisy - self.g(noisy)
        return target / (1 + self.coefficients(noisy) ** 2)

    def forward(self, noisy: torch.Tensor, keep_all: bool = True, depth: int | None = None) -> list[torch.Tensor]:
        """The iterates ``Y_1 .. Y_depth`` (default ``k``; ``keep_all``) or a list holding the last."""
        k = self.k if depth is None else int(depth)
        target = noisy if self.g is None else noisy - self.g(noisy)
        hessian = 1 + self.coefficients(noisy) ** 2  # diag of the Hessian of E in Y

        def gradient(y: torch.Tensor) -> torch.Tensor:
            return hessian * y - target

        phi = self.step
        y = z = torch.zeros_like(noisy)
        momentum = (1 - torch.sqrt(self.mu * phi)) / (1 + torch.sqrt(self.mu * phi))
        outputs = []
        for t in range(k):
            if self.algorithm == "gd":
                y = y - phi * gradient(y)
            else:  # NAG (eq. 4.9): y_{t+1} = z_t - phi grad(z_t), z_{t+1} = y_{t+1} + momentum (y_{t+1} - y_t)
                y, previous = z - phi * gradient(z), y
                z = y + momentum * (y - previous)
            if keep_all or t == k - 1:
                outputs.append(y)
        return outputs


class EnergyDenoiser(PatchTraining, LearnedSolver):
    """``GD^k`` or ``NAG^k`` on a learned quadratic energy, blind (``denoising`` family).

    Hyper-parameters (see ``l2obench list``): ``algorithm``, ``k``, ``f_layers``, ``f_width``,
    ``g_layers``, ``g_width``, ``f_max``, ``step_init``, ``lr``, ``lr_decays``, ``patch``,
    ``augment``, ``fresh_samples``. Fitted state: ``network_`` (a ``QuadraticEnergyModel``).
    """

    @property
    def depth(self) -> int:
        return int(self.k)

    def make_network(self, config) -> QuadraticEnergyModel:
        return QuadraticEnergyModel(self.algorithm, self.k, self.f_layers, self.f_width, self.g_layers,
                                    self.g_width, self.f_max, self.step_init, config["channels"])

    def forward(self, observation, keep_all: bool = True, depth: int | None = None) -> list[torch.Tensor]:
        return self.network_(observation["noisy"], keep_all=keep_all, depth=depth)

    def train_network(self, context: FitContext) -> list[dict]:
        self.start_patches(context)
        return self.train_last_output(context, f"train {self.algorithm.upper()}^{self.k} energy denoiser")

    def solve(self, observation, trajectory: bool = False) -> Solution:
        return solve_in_chunks(lambda part: LearnedSolver.solve(self, part, trajectory), observation)
