"""Building blocks of unrolled networks for the LASSO, shared by learned-solver plugins.

``LISTANetwork`` is LISTA's predictive model (thesis eq. 5.11), used by the
LISTA solver and as LISTA-stop's predictive model; ``shared_design`` reads the
sensing matrix that every instance of a fixed-design family shares.
"""
from __future__ import annotations

import torch
from torch import nn

from l2obench.contracts import FitContext
from l2obench.ops import lipschitz, soft_threshold

__all__ = ["LISTANetwork", "shared_design"]


def shared_design(context: FitContext, solver: str) -> torch.Tensor:
    """The sensing matrix ``A`` (m, n) shared by all training instances, on the context's device."""
    A = context.train.shared.get("A")
    if A is None or A.dim() != 2:
        raise ValueError(f"{solver} needs one sensing matrix shared by all instances (observation 'A' of shape (m, n))")
    return A.to(context.device)


class LISTANetwork(nn.Module):
    """LISTA's ``T`` untied layers ``x_t = soft(W1_t b + W2_t x_{t-1}, theta_t)`` from ``x_0 = 0``.

    One parameter per layer (not a stacked tensor indexed in ``forward``,
    whose backward would zero-fill a full-size gradient at every layer).

    Parameters
    ----------
    m, n : int
        Measurements and signal dimension.
    n_layers : int
        Layers ``T``.
    """

    def __init__(self, m: int, n: int, n_layers: int):
        super().__init__()
        self.W1 = nn.ParameterList([nn.Parameter(torch.zeros(n, m)) for _ in range(n_layers)])
        self.W2 = nn.ParameterList([nn.Parameter(torch.zeros(n, n)) for _ in range(n_layers)])
        self.theta = nn.ParameterList([nn.Parameter(torch.zeros(())) for _ in range(n_layers)])

    def set_ista(self, A: torch.Tensor, lam: float) -> None:
        """ISTA's weights: ``W1 = A^T / L``, ``W2 = I - A^T A / L``, ``theta = lam / L``, ``L = ||A||_2^2``."""
        L = lipschitz(A)
        eye = torch.eye(A.shape[1], dtype=A.dtype, device=A.device)
        for W1, W2, theta in zip(self.W1, self.W2, self.theta):
            W1.copy_(A.T / L)
            W2.copy_(eye - A.T @ A / L)
            theta.fill_(float(lam / L))

    def __len__(self) -> int:
        return len(self.W1)

    def layer_parameters(self, t: int) -> list[nn.Parameter]:
        """The parameters of layer ``t`` (1-based)."""
        return [self.W1[t - 1], self.W2[t - 1], self.theta[t - 1]]

    def layer(self, t: int, b: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        """Layer ``t`` (0-based): ``x_{t+1}`` from ``x_t`` (``None`` for ``x_0 = 0``)."""
        pre = b @ self.W1[t].T
        if x is not None:
            pre = torch.addmm(pre, x, self.W2[t].T)
        return soft_threshold(pre, self.theta[t])

    def forward(self, b: torch.Tensor, keep_all: bool = True, depth: int | None = None) -> list[torch.Tensor]:
        """The outputs of layers ``1 .. depth`` (default all), or the last one only."""
        depth = len(self) if depth is None else depth
        x, outputs = None, []
        for t in range(depth):
            x = self.layer(t, b, x)
            if keep_all or t == depth - 1:
                outputs.append(x)
        return outputs
