"""GLAD: unrolled alternating minimisation for sparse precision estimation (thesis ch. 6).

The graphical lasso (thesis eq. 6.1) is relaxed with a quadratic coupling
(eq. 6.2),

    min_{Theta, Z}  -logdet(Theta) + tr(S Theta) + rho ||Z||_1 + (lambda / 2) ||Z - Theta||_F^2,

and solved by alternating minimisation (eqs. 6.3-6.4). GLAD (Algorithm 4)
unrolls ``K`` AM steps and replaces the constants by two tiny networks shared
by every layer, ``Lambda_nn`` (inputs ``||Z - Theta||_F^2`` and the previous
``lambda``) and ``rho_nn`` (entry-wise inputs ``(Theta_ij, S_ij, Z_ij)``):

    Theta_0 = (S + t I)^{-1},  Z_0 = Theta_0,  lambda_0 = lambda_init
    for k = 0 .. K-1:
        lambda   <- Lambda_nn(||Z - Theta||_F^2, lambda)
        Y        <- S / lambda - Z
        Theta    <- (-Y + (Y^T Y + (4 / lambda) I)^{1/2}) / 2          (eq. 6.3)
        rho_ij   <- rho_nn(Theta_ij, S_ij, Z_ij)
        Z_ij     <- sign(Theta_ij) max(|Theta_ij| - rho_ij, 0)          (eq. 6.4)

with the shift ``t`` learned too. Every ``Theta_k`` is symmetric positive
definite (its eigenvalues are ``(-y + sqrt(y^2 + 4 / lambda)) / 2 > 0`` for the
eigenvalues ``y`` of ``Y``); ``Z_k`` is symmetric and sparse. The network is
trained on eq. 6.5, ``sum_k gamma^(K-k) ||out_k - Theta*||_F^2`` averaged over
instances, with Adam, early-stopped on validation NMSE, where ``out_k`` is the
layer's output: ``Z_k`` by default (``output="z"``, as the authors' public code
trains and returns it: a sparse graph, so edge recovery and the probability of
success are meaningful) or ``Theta_k`` (``output="theta"``, eq. 6.5 read
literally: positive definite but dense). Measured on the ``spe`` family at
``d = 20``, ``M = 20`` (600 steps): ``z`` -9.3 dB, ``theta`` -8.8 dB.

The Theta update is a spectral function of ``Y``; its gradient is computed in
closed form (Daleckii-Krein) by ``am_theta_update``, so near-repeated
eigenvalues of ``Y``, where the backward of ``torch.linalg.eigh`` divides by
their differences, do not break training.

Network sizes and initial values follow the authors' public example
(Shrivastava et al., ICLR 2020): ``rho_nn`` has two tanh hidden layers,
``Lambda_nn`` one, both of width ``hidden`` with sigmoid outputs;
``t = 0.1``, ``lambda_0 = 1``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from l2obench.contracts import FitContext
from l2obench.learned import LearnedSolver
from l2obench.ops import soft_threshold
from l2obench.precision import symmetrize

__all__ = ["GLAD", "GLADNetwork", "am_theta_update"]


# --------------------------------------------------------------------------- the Theta update

def _am_spectrum(y: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``f(y) = (-y + sqrt(y^2 + c)) / 2`` without cancellation, and ``r = sqrt(y^2 + c)``."""
    r = torch.sqrt(y * y + c)
    # For y > 0, -y + r cancels: use the conjugate form c / (2 (y + r)).
    f = torch.where(y > 0, c / (2 * (y + r)), (r - y) / 2)
    return f, r


class _AMThetaUpdate(torch.autograd.Function):
    """``Theta = V diag(f(y)) V^T`` for ``Y = V diag(y) V^T``, ``f(y) = (-y + sqrt(y^2 + c)) / 2``.

    The backward uses the Daleckii-Krein formula for spectral functions,

        dL/dY = V (F o (V^T G V)) V^T,   F_ij = (f(y_i) - f(y_j)) / (y_i - y_j)  (f'(y_i) on i = j),

    with ``G`` the symmetrised gradient in ``Theta``. For this ``f`` the divided
    difference is ``F_ij = ((y_i + y_j) / (r_i + r_j) - 1) / 2``, ``r = sqrt(y^2 + c)``,
    which stays exact when eigenvalues coincide. ``dL/dc = sum_i (V^T G V)_ii / (4 r_i)``.
    """

    @staticmethod
    def forward(ctx, Y, c):
        y, V = torch.linalg.eigh(Y)
        c_col = c.unsqueeze(-1)
        f, r = _am_spectrum(y, c_col)
        ctx.save_for_backward(V, y, r)
        return (V * f.unsqueeze(-2)) @ V.transpose(-1, -2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        V, y, r = ctx.saved_tensors
        G = V.transpose(-1, -2) @ symmetrize(grad) @ V
        F = ((y.unsqueeze(-1) + y.unsqueeze(-2)) / (r.unsqueeze(-1) + r.unsqueeze(-2)) - 1) / 2
        grad_Y = V @ (F * G) @ V.transpose(-1, -2)
        grad_c = (torch.diagonal(G, dim1=-2, dim2=-1) / (4 * r)).sum(-1)
        return grad_Y, grad_c


def am_theta_update(S: torch.Tensor, Z: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """The AM Theta step (thesis eq. 6.3): the minimiser over SPD ``Theta`` of

        -logdet(Theta) + tr(S Theta) + (lam / 2) ||Z - Theta||_F^2,

    that is ``(-Y + (Y^2 + (4 / lam) I)^{1/2}) / 2`` with ``Y = S / lam - Z``.

    Parameters
    ----------
    S, Z : torch.Tensor
        Symmetric matrices, shape ``(N, d, d)``.
    lam : torch.Tensor
        Coupling weights, shape ``(N,)``, positive.

    Returns
    -------
    torch.Tensor
        ``(N, d, d)``, symmetric positive definite, in the dtype of ``S``. The
        eigendecomposition runs in float64; the gradient is exact (see
        ``_AMThetaUpdate``).
    """
    lam64 = lam.double()
    Y = symmetrize(S.double() / lam64.reshape(-1, 1, 1) - Z.double())
    return symmetrize(_AMThetaUpdate.apply(Y, 4.0 / lam64)).to(S.dtype)


# --------------------------------------------------------------------------- the network

def _inverse_softplus(value: float) -> float:
    return value + math.log(-math.expm1(-value))


class GLADNetwork(nn.Module):
    """GLAD's recurrent cell unrolled ``n_layers`` times (thesis Algorithm 4).

    Parameters
    ----------
    n_layers : int
        Number of unrolled AM steps ``K``.
    hidden : int
        Width of the hidden layers of ``rho_nn`` and ``Lambda_nn``.
    t_init : float
        Initial shift ``t`` of ``Theta_0 = (S + t I)^{-1}`` (learned, kept
        positive as ``softplus``).
    lambda_init : float
        ``lambda_0``, the coupling fed to ``Lambda_nn`` at the first layer.
    threshold_diagonal : bool
        Soft-threshold the diagonal of ``Z`` too (eq. 6.2 penalises all of
        ``||Z||_1``); if False only off-diagonal entries are shrunk, as in the
        graphical lasso (eq. 6.1).
    output : {"theta", "z"}
        Which iterate each layer outputs: ``Theta_k`` (positive definite,
        thesis eq. 6.5) or the sparse ``Z_k`` (the authors' public code).
    """

    def __init__(self, n_layers: int, hidden: int = 3, t_init: float = 0.1, lambda_init: float = 1.0,
                 threshold_diagonal: bool = True, output: str = "theta"):
        super().__init__()
        self.output = output
        self.n_layers = int(n_layers)
        self.lambda_init = float(lambda_init)
        self.threshold_diagonal = bool(threshold_diagonal)
        self.t_raw = nn.Parameter(torch.tensor(_inverse_softplus(t_init)))
        self.rho_nn = nn.Sequential(nn.Linear(3, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                    nn.Linear(hidden, 1), nn.Sigmoid())
        self.lambda_nn = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, 1), nn.Sigmoid())

    @property
    def t(self) -> torch.Tensor:
        return nn.functional.softplus(self.t_raw)

    def initial(self, S: torch.Tensor) -> torch.Tensor:
        """``Theta_0 = (S + t I)^{-1}``, by the eigendecomposition of ``S`` in float64 (its
        eigenvalues clamped at 0: a sample covariance is positive semi-definite), so that
        a singular ``S`` (``M < d``) and a small ``t`` never fail a factorisation."""
        with torch.no_grad():
            s, V = torch.linalg.eigh(S.double())
        spectrum = 1.0 / (s.clamp_min(0.0) + self.t.double())
        return symmetrize((V * spectrum.unsqueeze(-2)) @ V.transpose(-1, -2)).to(S.dtype)

    def cell(self, S: torch.Tensor, Theta: torch.Tensor, Z: torch.Tensor, lam: torch.Tensor):
        """One GLADcell: returns the next ``(Theta, Z, lambda)``."""
        gap = ((Z - Theta) ** 2).sum((-1, -2))
        # The floor only keeps 4 / lambda finite should the sigmoid underflow.
        lam = self.lambda_nn(torch.stack([gap, lam], -1)).squeeze(-1).clamp_min(1e-6)
        Theta_next = am_theta_update(S, Z, lam)
        rho = self.rho_nn(torch.stack([Theta_next, S, Z], -1)).squeeze(-1)
        Z_next = soft_threshold(Theta_next, rho)
        if not self.threshold_diagonal:
            Z_next = Z_next + torch.diag_embed(torch.diagonal(Theta_next - Z_next, dim1=-2, dim2=-1))
        return Theta_next, Z_next, lam

    def forward(self, S: torch.Tensor, keep_all: bool = True, depth: int | None = None) -> list[torch.Tensor]:
        """The layers' estimates ``Theta_1 .. Theta_depth`` (default ``K``; or the ``Z``; only the last
        unless ``keep_all``)."""
        n_layers = self.n_layers if depth is None else int(depth)
        Theta = self.initial(S)
        Z = Theta
        lam = torch.full(S.shape[:1], self.lambda_init, dtype=S.dtype, device=S.device)
        outputs = []
        for k in range(n_layers):
            Theta, Z, lam = self.cell(S, Theta, Z, lam)
            if keep_all or k == n_layers - 1:
                outputs.append(Theta if self.output == "theta" else Z)
        return outputs


# --------------------------------------------------------------------------- the solver

class GLAD(LearnedSolver):
    """GLAD (thesis ch. 6, Algorithm 4) for the ``spe`` family.

    Hyper-parameters (see ``l2obench list``): ``n_layers``, ``hidden``,
    ``t_init``, ``lambda_init``, ``threshold_diagonal``, ``output``, ``lr``,
    ``gamma``, ``fresh_samples``. Fitted state: ``network_``. ``solve`` reads the
    sample covariances ``S`` (N, d, d) and returns the last layer's output
    (``Z_K`` or ``Theta_K``); its trajectory is every layer's output. Training
    (``LearnedSolver``): eq. 6.5 with the family's loss ``||out_k - Theta*||_F^2``.
    """

    def network_config(self, context: FitContext) -> dict:
        return {}

    def make_network(self, config) -> GLADNetwork:
        return GLADNetwork(self.n_layers, self.hidden, self.t_init, self.lambda_init, self.threshold_diagonal,
                           self.output)

    def forward(self, observation, keep_all: bool = True, depth: int | None = None):
        return self.network_(observation["S"], keep_all=keep_all, depth=depth)

    def describe_training(self) -> str:
        return f"train GLAD (K={self.n_layers})"
