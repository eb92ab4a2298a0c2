"""LISTA: learned ISTA with untied layers (Gregor & LeCun 2010; thesis eq. 5.11).

    x_t = soft(W1_t b + W2_t x_{t-1}, theta_t),  t = 1..T,  x_0 = 0

initialised from ISTA (W1 = A^T / L, W2 = I - A^T A / L, theta = lam / L) and
trained with the layer-weighted loss sum_t gamma^(T-t) ||x_t - x*||^2 of
thesis section 5.5.1, early-stopped on validation NMSE.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from l2obench.contracts import FitContext, Instances, Solution, Solver
from l2obench.ops import lipschitz, soft_threshold
from l2obench.training import train

# Validation is evaluated in chunks of this many instances.
EVAL_CHUNK = 4096


def chunked_nmse_db(estimate: Callable[[dict], torch.Tensor], instances: Instances) -> float:
    """NMSE in dB of ``estimate(observation)`` against the target ``x`` over
    ``instances``, evaluated in chunks of ``EVAL_CHUNK`` (validation during training)."""
    err = ref = 0.0
    for start in range(0, len(instances), EVAL_CHUNK):
        part = instances.subset(slice(start, start + EVAL_CHUNK))
        x = estimate(part.observation())
        err += float(((x - part.target["x"]) ** 2).sum())
        ref += float((part.target["x"] ** 2).sum())
    return 10 * math.log10(err / ref) if err > 0 else -math.inf


def layer_weights(n_layers: int, gamma: float, like: torch.Tensor) -> torch.Tensor:
    """Weights ``gamma^(T-t)``, t = 1..T, of the layer-wise training loss (thesis 5.5.1)."""
    return torch.tensor([gamma ** (n_layers - t) for t in range(1, n_layers + 1)], dtype=like.dtype,
                        device=like.device)


def layer_loss(outputs: list[torch.Tensor], target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_t w_t mean ||x_t - x*||^2``: the layer-weighted loss of unrolled networks."""
    errors = torch.stack([((x - target) ** 2).sum(-1).mean() for x in outputs])
    return (weights * errors).sum()


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

    def __len__(self) -> int:
        return len(self.W1)

    def layer(self, t: int, b: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        """Layer ``t`` (0-based): ``x_{t+1}`` from ``x_t`` (``None`` for ``x_0 = 0``)."""
        pre = b @ self.W1[t].T
        if x is not None:
            pre = torch.addmm(pre, x, self.W2[t].T)
        return soft_threshold(pre, self.theta[t])

    def forward(self, b: torch.Tensor, keep_all: bool = True) -> list[torch.Tensor]:
        x = None
        outputs = []
        for t in range(len(self.W1)):
            x = self.layer(t, b, x)
            if keep_all or t == len(self.W1) - 1:
                outputs.append(x)
        return outputs


def shared_sensing_matrix(context: FitContext, name: str) -> torch.Tensor:
    """The sensing matrix ``A`` (m, n) shared by all training instances, on the context's device."""
    A = context.train.shared.get("A")
    if A is None or A.dim() != 2:
        raise ValueError(f"{name} needs one sensing matrix shared by all instances (observation 'A' of shape (m, n))")
    return A.to(context.device)


def train_unrolled(network: nn.Module, n_layers: int, context: FitContext, gamma: float, lr: float,
                   fresh_samples: bool, desc: str, run=None) -> list[dict]:
    """Train an unrolled ``network`` on the layer-weighted loss, early-stopped on the last
    layer's validation NMSE (dB). ``run(observation, keep_all)`` returns the layer outputs;
    by default ``network(observation["b"], keep_all)``."""
    if run is None:
        run = lambda observation, keep_all=True: network(observation["b"], keep_all=keep_all)  # noqa: E731
    weights = layer_weights(n_layers, gamma, next(network.parameters()))

    def loss_fn(batch):
        return layer_loss(run(batch.observation()), batch.target["x"], weights)

    def validate() -> float:
        return chunked_nmse_db(lambda obs: run(obs, False)[-1], context.val)

    return train(network, loss_fn, validate, context, lr=lr, fresh_samples=fresh_samples, desc=desc)


class UnrolledSolver(Solver):
    """Base of solvers whose fitted state is one unrolled network ``network_`` of
    ``n_layers`` layers with ``forward(b, keep_all)`` and ``stacked()``: solving
    (every layer's output is the trajectory), state and device moves. A network
    that needs more of the observation than ``b`` overrides ``run``."""

    def run(self, observation, keep_all: bool = True) -> list[torch.Tensor]:
        """The layer outputs on ``observation`` (all of them, or the last only)."""
        return self.network_(observation["b"], keep_all=keep_all)

    def solve(self, observation, trajectory=False) -> Solution:
        b = observation["b"]
        with torch.no_grad():
            outputs = self.run(observation, keep_all=trajectory)
        iterations = torch.full((b.shape[0],), self.n_layers, dtype=torch.long, device=b.device)
        return Solution(outputs[-1], outputs if trajectory else None, iterations)

    def state_dict(self) -> dict:
        return {"params": self.get_params(), "weights": self.network_.stacked()}

    def to(self, device) -> "UnrolledSolver":
        self.network_.to(device)
        return self


class LISTA(UnrolledSolver):
    """Learned ISTA for a fixed sensing matrix (``lasso`` family).

    Hyper-parameters (see ``l2obench list``): ``n_layers``, ``gamma``, ``lr``,
    ``lam_init``, ``fresh_samples``. Fitted state: ``network_``.
    """

    def fit(self, context: FitContext) -> "LISTA":
        A = shared_sensing_matrix(context, "LISTA")
        self.network_ = LISTANetwork.from_ista(A, self.n_layers, self.lam_init)
        train_unrolled(self.network_, self.n_layers, context, self.gamma, self.lr, self.fresh_samples,
                       desc=f"train LISTA (T={self.n_layers})")
        return self

    def load_state_dict(self, state) -> "LISTA":
        self.set_params(**state["params"])
        w = state["weights"]
        self.network_ = LISTANetwork(w["W1"], w["W2"], w["theta"])
        return self
