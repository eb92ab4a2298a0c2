"""Spectral quadratic energies: the architecture of ``Q*(x)`` and of the neural module ``Q_theta(x)``.

Thesis section 4.7 (and the authors' code, ``neuralalgo/model.py``): an energy
matrix is built from a rotation ``R`` and a vector of eigenvalues computed from
the input ``x`` by a small dense network,

    e(x) = (L, mu + (L - mu) softmax(f(x)), mu),    Q(x, R) = R diag(e(x)) R^T,

where ``f`` maps ``R^m`` to ``R^{d-2}`` (one ReLU hidden layer of size
``hidden``, or a linear map when ``hidden = 0``). The extreme eigenvalues are
fixed at ``L`` and ``mu``, so every ``Q`` lies in ``S_{mu, L}`` (symmetric
positive definite with eigenvalues in ``[mu, L]``) and spans it. The problem
family draws ``Q*`` from a randomly fixed network of hidden size 3; a hybrid
model's neural module ``Q_theta`` has the same architecture with a hidden size
of its own (thesis: 0, 16, 32). Shared here so that both use one definition.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["SpectralEnergy", "compose", "glorot_uniform_", "random_rotations"]


def compose(R: torch.Tensor, eigenvalues: torch.Tensor) -> torch.Tensor:
    """``R diag(e) R^T`` per instance: ``R`` ``(N, d, d)``, ``e`` ``(N, d)`` -> ``(N, d, d)``."""
    return (R * eigenvalues.unsqueeze(-2)) @ R.transpose(-1, -2)


def random_rotations(n: int, d: int, generator: torch.Generator | None = None,
                     dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``n`` Haar-distributed orthogonal matrices ``(n, d, d)``.

    The Q factor of a Gaussian matrix with the signs of ``diag(R)`` moved into
    it (Mezzadri 2007, the authors' ``batch_orthogonal``). Its determinant may
    be -1; ``R diag(e) R^T`` does not depend on the sign of a column.
    """
    G = torch.randn(n, d, d, generator=generator, dtype=dtype)
    Q, upper = torch.linalg.qr(G)
    signs = torch.sign(torch.diagonal(upper, dim1=-2, dim2=-1))
    return Q * torch.where(signs == 0, torch.ones_like(signs), signs).unsqueeze(-2)


def glorot_uniform_(module: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Glorot-uniform weights and zero biases for every ``nn.Linear`` in ``module`` (the authors' init)."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            fan_out, fan_in = layer.weight.shape
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            with torch.no_grad():
                layer.weight.uniform_(-limit, limit, generator=generator)
                if layer.bias is not None:
                    layer.bias.zero_()
    return module


class SpectralEnergy(nn.Module):
    """``Q(x, R) = R diag(e(x)) R^T`` with eigenvalues ``e(x)`` in ``[mu, L]`` (module docstring).

    Parameters
    ----------
    m : int
        Input dimension of ``x``.
    d : int
        Dimension of the energy (``Q`` is ``d x d``), at least 3.
    hidden : int
        Hidden size of the eigenvalue network; 0: a linear map ``R^m -> R^{d-2}``.
    mu, L : float
        Smallest and largest eigenvalue, ``0 < mu < L``.
    """

    def __init__(self, m: int, d: int, hidden: int, mu: float, L: float):
        super().__init__()
        if d < 3:
            raise ValueError(f"a spectral energy needs d >= 3 (two fixed eigenvalues and at least one "
                             f"computed from x), got d = {d}")
        if not 0 < mu < L:
            raise ValueError(f"need 0 < mu < L, got mu = {mu}, L = {L}")
        self.m, self.d, self.hidden, self.mu, self.L = int(m), int(d), int(hidden), float(mu), float(L)
        layers = [nn.Linear(m, hidden), nn.ReLU(), nn.Linear(hidden, d - 2)] if hidden else [nn.Linear(m, d - 2)]
        self.eigen_net = nn.Sequential(*layers)

    def eigenvalues(self, x: torch.Tensor) -> torch.Tensor:
        """``(L, mu + (L - mu) softmax(f(x)), mu)``, ``(N, d)``."""
        inner = self.mu + (self.L - self.mu) * torch.softmax(self.eigen_net(x), dim=-1)
        ends = inner.new_tensor([self.L, self.mu]).expand(x.shape[0], 2)
        return torch.cat([ends[:, :1], inner, ends[:, 1:]], dim=-1)

    def forward(self, x: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        """The energies ``Q(x, R)``, ``(N, d, d)``."""
        return compose(R, self.eigenvalues(x))
