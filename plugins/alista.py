"""ALISTA and LISTA-CPSS: learned ISTA with weight coupling and support selection.

Both unroll ``T`` layers from ``x_0 = 0`` for a sensing matrix ``A`` (m, n)
shared by all instances, with the support-selection shrinkage ``eta_ss``
(Chen et al. 2018, eq. 13; Liu et al. 2019, eq. 17): entries of ``|z|`` that are
among the largest ``p`` percent of their instance *and* exceed ``theta`` pass
unchanged, every other entry is soft-thresholded,

    eta_ss(z; theta, p)_i = z_i                      if i in S_p(z) and |z_i| > theta
                          = sign(z_i) max(|z_i| - theta, 0)   otherwise,

with ``p_k = min(support_p * k, support_max)`` percent at layer ``k = 1..T``.

LISTA-CPSS (Chen, Liu, Wang, Yin, "Theoretical linear convergence of unfolded
ISTA and its practical weights and thresholds", NeurIPS 2018, eq. 15) couples
LISTA's two matrices as ``W2 = I - W^T A`` (their Theorem 1) and learns one
``W_k`` (m, n) and one threshold ``theta_k`` per layer:

    x_k = eta_ss(x_{k-1} + W_k^T (b - A x_{k-1}); theta_k, p_k),

initialised from ISTA: ``W_k = A / L``, ``theta_k = lam_init / L``, ``L = ||A||_2^2``.

ALISTA (Liu, Chen, Wang, Yin, "ALISTA: Analytic weights are as good as learned
weights in LISTA", ICLR 2019, eqs. 16-17) fixes one analytic weight ``W`` before
training, the minimiser of the generalised mutual coherence

    W = argmin ||W^T A||_F^2   subject to   diag(W^T A) = 1,

and learns only a step size ``gamma_k`` and a threshold ``theta_k`` per layer
(``2T`` scalars):

    x_k = eta_ss(x_{k-1} - gamma_k W^T (A x_{k-1} - b); theta_k, p_k).

Both are trained as LISTA is (``l2obench_plugins.lista``): Adam on the
layer-weighted loss ``sum_t gamma^(T-t) ||x_t - x*||^2`` (batch mean), early
stopped on validation NMSE, by ``l2obench.training.train``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from l2obench.contracts import FitContext
from l2obench.ops import lipschitz, matvec, rmatvec, soft_threshold
from l2obench_plugins.lista import UnrolledSolver, shared_sensing_matrix, train_unrolled

__all__ = ["ALISTA", "ALISTANetwork", "LISTACPSS", "LISTACPSSNetwork", "analytic_design", "analytic_step_scale",
           "analytic_weight", "analytic_weight_pgd", "support_percentages", "support_selection"]


# --------------------------------------------------------------------------- analytic weight

def analytic_design(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ALISTA's analytic weight ``W`` and its step scale ``||W^T A||_2``, in closed form (float64).

    ``W`` solves ``min ||W^T A||_F^2 s.t. diag(W^T A) = 1`` column by column:
    column ``i`` minimises ``w^T C w`` subject to ``a_i^T w = 1``, with
    ``C = A A^T``, whence

        w_i = C^{-1} a_i / (a_i^T C^{-1} a_i),   i.e.   W = C^+ A D^{-1},  D = diag(A^T C^+ A)

    (``D`` holds the leverage of each column). The pseudo-inverse also covers a
    rank-deficient ``C`` (``m > n``, or the zero rows that pad a regression
    design), where it picks the minimum-norm minimiser. The scale follows from
    the same eigendecomposition ``C = U diag(c) U^T``: ``W^T C W = K^T K`` with
    ``K = diag(c^{+1/2}) U^T A D^{-1}`` (``m x n``), so ``||W^T A||_2^2`` is the
    largest eigenvalue of ``K K^T`` (``m x m``), cheaper than an SVD of
    ``W^T A`` (``n x n``) when ``m < n``. Exact, and milliseconds for ``m, n``
    in the hundreds, unlike the projected gradient descent of the ALISTA paper
    (``analytic_weight_pgd``), which converges to the same ``W``.

    Parameters
    ----------
    A : Tensor
        Sensing matrix ``(m, n)``, or one per instance ``(N, m, n)``, without zero columns.

    Returns
    -------
    W : Tensor
        Shaped like ``A``, in ``A``'s dtype and on its device.
    scale : Tensor
        ``||W^T A||_2``: a scalar, or ``(N,)``.
    """
    if A.dim() not in (2, 3):
        raise ValueError(f"analytic_weight needs a matrix (m, n) or a batch (N, m, n), got shape {tuple(A.shape)}")
    A64 = A.double()
    c, U = torch.linalg.eigh(A64 @ A64.transpose(-1, -2))
    cutoff = c.amax(-1, keepdim=True) * (max(A.shape[-2:]) * torch.finfo(torch.float64).eps)
    inverse = torch.where(c > cutoff, 1.0 / c.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(c))
    UtA = U.transpose(-1, -2) @ A64
    Z = U @ (inverse.unsqueeze(-1) * UtA)  # C^+ A
    leverage = (A64 * Z).sum(-2, keepdim=True)  # a_i^T C^+ a_i
    if not bool((leverage > 1e-12).all()):
        raise ValueError("analytic_weight: a column of A is zero (or numerically so); diag(W^T A) = 1 is infeasible")
    K = inverse.sqrt().unsqueeze(-1) * UtA / leverage
    scale = torch.linalg.eigvalsh(K @ K.transpose(-1, -2))[..., -1].clamp_min(0).sqrt()
    return (Z / leverage).to(A.dtype), scale.to(A.dtype)


def analytic_weight(A: torch.Tensor) -> torch.Tensor:
    """The analytic weight ``W`` of ALISTA (see ``analytic_design``), shaped like ``A``."""
    return analytic_design(A)[0]


def analytic_step_scale(A: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``||W^T A||_2`` per design (scalar, or ``(N,)``) by an SVD of ``W^T A``: the reference for
    ``analytic_design``'s scale. ``1 / ||W^T A||_2`` is the step at which
    ``x - gamma W^T (A x - b)`` is non-expansive, as ``1 / L`` is for ISTA.
    """
    return torch.linalg.matrix_norm((W.transpose(-1, -2) @ A).double(), ord=2).to(A.dtype)


def analytic_weight_pgd(A: torch.Tensor, steps: int = 5000, lr: float | None = None,
                        W0: torch.Tensor | None = None) -> torch.Tensor:
    """The analytic weight by projected gradient descent, as in the ALISTA paper (float64).

    Alternates a gradient step on ``||W^T A||_F^2`` (gradient ``2 A A^T W``)
    with the projection of each column ``w_i`` onto ``{w : a_i^T w = 1}``,
    ``w_i <- w_i + (1 - a_i^T w_i) a_i / ||a_i||^2``. ``analytic_weight``
    computes the same minimiser in closed form; this one exists to check it.

    Parameters
    ----------
    A : Tensor
        Sensing matrix ``(m, n)``.
    steps : int
        Gradient steps.
    lr : float, optional
        Step size; default ``1 / (2 ||A||_2^2)``, the inverse Lipschitz
        constant of the gradient.
    W0 : Tensor, optional
        Starting point (projected first); default ``A``.

    Returns
    -------
    Tensor
        ``W`` of shape ``(m, n)``, in ``A``'s dtype.
    """
    A64 = A.double()
    AAt = A64 @ A64.T
    if lr is None:
        lr = 1.0 / (2.0 * float(torch.linalg.eigvalsh(AAt)[-1]))
    col_sq = (A64 * A64).sum(0)

    def project(W):
        return W + A64 * ((1.0 - (A64 * W).sum(0)) / col_sq)

    W = project(A64.clone() if W0 is None else W0.double())
    for _ in range(steps):
        W = project(W - lr * 2.0 * (AAt @ W))
    return W.to(A.dtype)


# --------------------------------------------------------------------------- support selection

def support_percentages(n_layers: int, support_p: float, support_max: float) -> list[float]:
    """``p_k = min(support_p * k, support_max)`` percent for layers ``k = 1..n_layers``."""
    return [min(support_p * k, support_max) for k in range(1, n_layers + 1)]


def support_selection(z: torch.Tensor, theta, percent: float) -> torch.Tensor:
    """Soft thresholding with support selection, ``eta_ss(z; theta, p)``, per instance (last axis).

    The ``floor(percent / 100 * n)`` entries of largest magnitude in each row
    (entries tied with the k-th largest included) pass unchanged when their
    magnitude exceeds ``theta``; every other entry is soft-thresholded by
    ``theta``. ``percent = 0`` is plain soft thresholding. Differentiable in
    ``z`` and ``theta`` (the selection itself carries no gradient).

    Parameters
    ----------
    z : Tensor
        ``(N, n)`` (or any shape; the last axis is one instance).
    theta : float or Tensor
        Threshold, broadcastable to ``z``.
    percent : float
        Percentage ``p`` of entries per instance that may bypass the shrinkage.
    """
    shrunk = soft_threshold(z, theta)
    n = z.shape[-1]
    k = min(n, int(math.floor(percent * n / 100.0 + 1e-9)))
    if k <= 0:
        return shrunk
    magnitude = z.detach().abs()
    kth = torch.topk(magnitude, k, dim=-1, sorted=True).values[..., -1:]
    keep = (magnitude >= kth) & (magnitude > (theta.detach() if torch.is_tensor(theta) else theta))
    return torch.where(keep, z, shrunk)


# --------------------------------------------------------------------------- networks

class ALISTANetwork(nn.Module):
    """ALISTA's ``T`` layers; ``forward`` returns the per-layer outputs.

    The only parameters are ``step`` and ``theta``, each ``(T,)``, in units of
    the design's natural step ``1 / ||W^T A||_2``: layer ``k`` computes

        x_k = eta_ss(x_{k-1} - (step_k / s) W^T (A x_{k-1} - b); theta_k / s, p_k),
        s = ||W^T A||_2,

    so ``step_k = 1`` makes ``(step_k / s) W^T A`` of spectral norm 1, as
    ``A^T A / L`` in ISTA, and the untrained network (``step = 1``,
    ``theta = lam``) reduces the error layer by layer. (The paper's
    ``gamma_k = 1`` overshoots when ``m / n`` is small: ``W^T A`` has unit
    diagonal but spectral norm about ``n / m``.)

    With a fixed design (``A`` given), ``A``, the analytic ``W`` and ``s`` are
    buffers computed once. Without one, every call takes the instances' own
    designs ``A`` ``(N, m, n)`` and computes each instance's ``W`` and ``s``
    in closed form (batched): the ``2T`` scalars are shared across designs
    because they are relative to each design's ``s``.
    """

    def __init__(self, step: torch.Tensor, theta: torch.Tensor, percents: list[float],
                 A: torch.Tensor | None = None):
        super().__init__()
        if len(percents) != len(step) or len(step) != len(theta):
            raise ValueError("step, theta and percents need one entry per layer")
        self.step = nn.Parameter(step.clone())  # (T,)
        self.theta = nn.Parameter(theta.clone())  # (T,)
        self.percents = list(percents)
        self.fixed_design = A is not None
        if self.fixed_design:
            W, scale = analytic_design(A)
            self.register_buffer("A", A.clone())
            self.register_buffer("W", W)
            self.register_buffer("scale", scale)

    @classmethod
    def initial(cls, n_layers: int, lam: float, percents: list[float], A: torch.Tensor | None = None,
                dtype=torch.float32, device="cpu") -> "ALISTANetwork":
        """The untrained network: ``step_k = 1``, ``theta_k = lam`` (analytic ISTA with ``lam``)."""
        if A is not None:
            dtype, device = A.dtype, A.device
        ones = torch.ones(n_layers, dtype=dtype, device=device)
        return cls(ones, lam * ones, percents, A)

    def stacked(self) -> dict[str, torch.Tensor]:
        """``step`` and ``theta`` (T,), with a fixed design also ``A`` (m, n), on the CPU."""
        parts = {"step": self.step, "theta": self.theta}
        if self.fixed_design:
            parts["A"] = self.A
        return {name: t.detach().cpu() for name, t in parts.items()}

    def forward(self, b: torch.Tensor, keep_all: bool = True, A: torch.Tensor | None = None) -> list[torch.Tensor]:
        if self.fixed_design:
            A, W, scale = self.A, self.W, self.scale
        else:
            if A is None or A.dim() != 3:
                raise ValueError("ALISTA without a fixed design needs the instances' designs A (N, m, n)")
            W, scale = analytic_design(A)
            scale = scale.unsqueeze(-1)  # (N, 1)
        Wtb = rmatvec(W, b)
        x = support_selection(self.step[0] / scale * Wtb, self.theta[0] / scale, self.percents[0])  # x_0 = 0
        outputs = [x]
        for t in range(1, len(self.percents)):
            gradient = rmatvec(W, matvec(A, x)) - Wtb  # W^T (A x - b)
            x = support_selection(x - self.step[t] / scale * gradient, self.theta[t] / scale, self.percents[t])
            if keep_all:
                outputs.append(x)
        return outputs if keep_all else [x]


class LISTACPSSNetwork(nn.Module):
    """LISTA-CPSS's ``T`` layers; ``forward`` returns the per-layer outputs.

    ``A`` is a buffer; one ``W_k`` (m, n) per layer (a ``ParameterList``, as
    in ``LISTANetwork``) and ``theta`` (T,) are learned.
    """

    def __init__(self, A: torch.Tensor, W: torch.Tensor, theta: torch.Tensor, percents: list[float]):
        super().__init__()
        if len(percents) != len(W) or len(W) != len(theta):
            raise ValueError("W, theta and percents need one entry per layer")
        self.register_buffer("A", A.clone())
        self.W = nn.ParameterList([nn.Parameter(w.clone()) for w in W])  # T x (m, n)
        self.theta = nn.Parameter(theta.clone())  # (T,)
        self.percents = list(percents)

    @classmethod
    def from_ista(cls, A: torch.Tensor, n_layers: int, lam: float, percents: list[float]) -> "LISTACPSSNetwork":
        """ISTA's weights: ``W_k = A / L``, ``theta_k = lam / L``, ``L = ||A||_2^2``."""
        L = lipschitz(A)
        W = (A / L).expand(n_layers, -1, -1)
        return cls(A, W, torch.full((n_layers,), float(lam / L), dtype=A.dtype, device=A.device), percents)

    def stacked(self) -> dict[str, torch.Tensor]:
        """``A`` (m, n), ``W`` (T, m, n) and ``theta`` (T,) on the CPU."""
        return {"A": self.A.detach().cpu(), "W": torch.stack([w.detach().cpu() for w in self.W]),
                "theta": self.theta.detach().cpu()}

    def forward(self, b: torch.Tensor, keep_all: bool = True) -> list[torch.Tensor]:
        x = support_selection(rmatvec(self.W[0], b), self.theta[0], self.percents[0])  # x_0 = 0
        outputs = [x]
        for t in range(1, len(self.W)):
            x = support_selection(x + rmatvec(self.W[t], b - matvec(self.A, x)), self.theta[t], self.percents[t])
            if keep_all:
                outputs.append(x)
        return outputs if keep_all else [x]


# --------------------------------------------------------------------------- solvers

class _SupportSelectionSolver(UnrolledSolver):
    """What ALISTA and LISTA-CPSS share beyond ``UnrolledSolver``: the support-selection schedule."""

    def _percents(self) -> list[float]:
        return support_percentages(self.n_layers, self.support_p, self.support_max)


class ALISTA(_SupportSelectionSolver):
    """Analytic LISTA (Liu et al. 2019), for a fixed sensing matrix (``lasso``) or per-instance designs (``slr``).

    ``W`` is computed by ``analytic_weight`` (closed form, exact, in
    milliseconds; the paper's projected gradient descent,
    ``analytic_weight_pgd``, reaches the same matrix); only ``2T`` scalars,
    a step size and a threshold per layer, are trained. With a fixed design,
    ``W`` is computed once and ``solve`` uses the sensing matrix seen by
    ``fit`` (stored in the state), as LISTA does. With per-instance designs
    (``A`` of shape ``(N, m, n)`` in the observation), each instance's ``W``
    and step scale ``||W^T A||_2`` are computed from its own design at every
    call, and the learned scalars, relative to that scale, are shared
    (``ALISTANetwork``).

    Hyper-parameters: ``n_layers``, ``gamma`` (layer-loss discount), ``lr``,
    ``lam_init`` (initial thresholds, in units of the step),
    ``support_p``, ``support_max`` (percent), ``fresh_samples``.
    Fitted state: ``network_`` (an ``ALISTANetwork``).
    """

    def fit(self, context: FitContext) -> "ALISTA":
        shared = context.train.shared.get("A")
        A = shared_sensing_matrix(context, "ALISTA") if shared is not None else None
        if A is None and context.train.observed.get("A", torch.empty(0)).dim() != 3:
            raise ValueError("ALISTA needs a sensing matrix A (m, n) shared by all instances or one per instance (N, m, n)")
        self.network_ = ALISTANetwork.initial(self.n_layers, self.lam_init, self._percents(), A,
                                              dtype=context.train.observed["b"].dtype, device=context.device)
        train_unrolled(self.network_, self.n_layers, context, self.gamma, self.lr, self.fresh_samples,
                       desc=f"train ALISTA (T={self.n_layers})", run=self.run)
        return self

    def run(self, observation, keep_all: bool = True) -> list[torch.Tensor]:
        A = None if self.network_.fixed_design else observation["A"]
        return self.network_(observation["b"], keep_all=keep_all, A=A)

    def load_state_dict(self, state) -> "ALISTA":
        self.set_params(**state["params"])
        w = state["weights"]
        self.network_ = ALISTANetwork(w["step"], w["theta"], self._percents(), w.get("A"))
        return self


class LISTACPSS(_SupportSelectionSolver):
    """LISTA with coupled weights and support selection (Chen et al. 2018), ``lasso`` family.

    Learns one ``W_k`` (m, n) and one threshold per layer, initialised from
    ISTA with ``lam_init``.

    Hyper-parameters: ``n_layers``, ``gamma`` (layer-loss discount), ``lr``,
    ``lam_init``, ``support_p``, ``support_max`` (percent), ``fresh_samples``.
    Fitted state: ``network_`` (a ``LISTACPSSNetwork``). ``solve`` uses the
    sensing matrix seen by ``fit`` (stored in the state).
    """

    def fit(self, context: FitContext) -> "LISTACPSS":
        A = shared_sensing_matrix(context, "LISTA-CPSS")
        self.network_ = LISTACPSSNetwork.from_ista(A, self.n_layers, self.lam_init, self._percents())
        train_unrolled(self.network_, self.n_layers, context, self.gamma, self.lr, self.fresh_samples,
                       desc=f"train LISTA-CPSS (T={self.n_layers})")
        return self

    def load_state_dict(self, state) -> "LISTACPSS":
        self.set_params(**state["params"])
        w = state["weights"]
        self.network_ = LISTACPSSNetwork(w["A"], w["W"], w["theta"], self._percents())
        return self
