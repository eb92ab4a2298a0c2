"""LISTA: learned ISTA with untied layers (Gregor & LeCun 2010; thesis eq. 5.11).

    x_t = soft(W1_t b + W2_t x_{t-1}, theta_t),  t = 1..T,  x_0 = 0

initialised from ISTA (W1 = A^T / L, W2 = I - A^T A / L, theta = lam / L) and
trained with the layer-weighted loss sum_t gamma^(T-t) ||x_t - x*||^2 of
thesis section 5.5.1, early-stopped on validation NMSE.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from l2obench.contracts import FitContext, Solution, Solver
from l2obench.ops import lipschitz, soft_threshold
from l2obench.training import train

# Validation is evaluated in chunks of this many instances.
EVAL_CHUNK = 4096


class LISTANetwork(nn.Module):
    """The T-layer network; ``forward`` returns the per-layer outputs.

    One parameter per layer (not a stacked tensor indexed in ``forward``,
    whose backward would zero-fill a full-size gradient at every layer).
    """

    def __init__(self, W1: torch.Tensor, W2: torch.Tensor, theta: torch.Tensor):
        super().__init__()
        self.W1 = nn.ParameterList([nn.Parameter(w.clone()) for w in W1])  # T x (n, m)
        self.W2 = nn.ParameterList([nn.Parameter(w.clone()) for w in W2])  # T x (n, n)
        self.theta = nn.Parameter(theta.clone())  # (T,)

    @classmethod
    def from_ista(cls, A: torch.Tensor, n_layers: int, lam: float) -> "LISTANetwork":
        L = lipschitz(A)
        n = A.shape[1]
        W1 = (A.T / L).expand(n_layers, -1, -1)
        W2 = (torch.eye(n, dtype=A.dtype, device=A.device) - A.T @ A / L).expand(n_layers, -1, -1)
        return cls(W1, W2, torch.full((n_layers,), float(lam / L), dtype=A.dtype, device=A.device))

    def stacked(self) -> dict[str, torch.Tensor]:
        """Weights as ``W1 (T, n, m)``, ``W2 (T, n, n)``, ``theta (T,)`` on the CPU."""
        return {"W1": torch.stack([w.detach().cpu() for w in self.W1]),
                "W2": torch.stack([w.detach().cpu() for w in self.W2]),
                "theta": self.theta.detach().cpu()}

    def forward(self, b: torch.Tensor, keep_all: bool = True) -> list[torch.Tensor]:
        x = soft_threshold(b @ self.W1[0].T, self.theta[0])
        outputs = [x]
        for t in range(1, len(self.W1)):
            x = soft_threshold(torch.addmm(b @ self.W1[t].T, x, self.W2[t].T), self.theta[t])
            if keep_all:
                outputs.append(x)
        return outputs if keep_all else [x]


class LISTA(Solver):
    """Learned ISTA for a fixed sensing matrix (``lasso`` family).

    Hyper-parameters (see ``l2obench list``): ``n_layers``, ``gamma``, ``lr``,
    ``lam_init``, ``fresh_samples``. Fitted state: ``network_``.
    """

    def fit(self, context: FitContext) -> "LISTA":
        A = context.train.shared.get("A")
        if A is None or A.dim() != 2:
            raise ValueError("LISTA needs one sensing matrix shared by all instances (observation 'A' of shape (m, n))")
        self.network_ = LISTANetwork.from_ista(A.to(context.device), self.n_layers, self.lam_init)
        weights = torch.tensor([self.gamma ** (self.n_layers - t) for t in range(1, self.n_layers + 1)],
                               dtype=A.dtype, device=context.device)

        def loss_fn(batch):
            outputs = self.network_(batch.observed["b"])
            errors = torch.stack([((x - batch.target["x"]) ** 2).sum(-1).mean() for x in outputs])
            return (weights * errors).sum()

        val = context.val

        def validate() -> float:
            err = ref = 0.0
            for start in range(0, len(val), EVAL_CHUNK):
                part = val.subset(slice(start, start + EVAL_CHUNK))
                x = self.network_(part.observed["b"], keep_all=False)[-1]
                err += float(((x - part.target["x"]) ** 2).sum())
                ref += float((part.target["x"] ** 2).sum())
            return 10 * math.log10(err / ref) if err > 0 else -math.inf

        train(self.network_, loss_fn, validate, context, lr=self.lr, fresh_samples=self.fresh_samples,
              desc=f"train LISTA (T={self.n_layers})")
        return self

    def solve(self, observation, trajectory=False) -> Solution:
        b = observation["b"]
        with torch.no_grad():
            outputs = self.network_(b, keep_all=trajectory)
        iterations = torch.full((b.shape[0],), self.n_layers, dtype=torch.long, device=b.device)
        return Solution(outputs[-1], outputs if trajectory else None, iterations)

    def state_dict(self) -> dict:
        return {"params": self.get_params(), "weights": self.network_.stacked()}

    def load_state_dict(self, state) -> "LISTA":
        self.set_params(**state["params"])
        w = state["weights"]
        self.network_ = LISTANetwork(w["W1"], w["W2"], w["theta"])
        return self

    def to(self, device) -> "LISTA":
        self.network_.to(device)
        return self
