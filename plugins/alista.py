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

Both are trained as LISTA is, through ``l2obench.learned.LearnedSolver``:
layer-wise with learning-rate decay stages as in the authors' code
(``schedule = "progressive"``), or on the layer-weighted loss ``sum_t
gamma^(T-t) ||x_t - x*||^2`` (``"joint"``), early-stopped on the validation loss.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from l2obench.contracts import FitContext
from l2obench.learned import LearnedSolver
from l2obench.ops import lipschitz, matvec, rmatvec, soft_threshold
from l2obench.unrolled import shared_design

__all__ = ["ALISTA", "ALISTANetwork", "LISTACPSS", "LISTACPSSNetwork", "analytic_design", "analytic_step_scale",
           "analytic_weight", "analytic_weight_pgd", "support_percentages", "support_selection"]


# --------------------------------------------------------------------------- analytic weight

def analytic_design(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ALISTA's analytic weight ``W`` and its step scale ``||W^T A||_2``, in closed form (float64).

    ``W`` solves ``min ||W^T A||_F^2 s.t. diag(W^T A) = 1`` column by column:
    column ``i`` minimises ``w^T C w`` subject to ``a_i^T w = 1``, with
    ``C = A A^T``, whence

        w_i = C^{-1} a_i / (a_i^T C^{-1} a_i),   i.e.   W = C^+ A D^{-1},  D = diag(A^T C^+ A)

    (``D`` holds the leverage of each column; the pseudo-inverse picks the
    minimum-norm minimiser when ``C`` is singular). With the Cholesky factor
    ``C = L L^T`` and ``B = L^{-1} A``: ``D = diag(B^T B)``, ``W = L^{-T} B
    D^{-1}`` and ``W^T A = D^{-1} B^T B``, whose squared spectral norm is the
    largest eigenvalue of ``B D^{-2} B^T`` (``m x m``). Zero rows of ``A`` (the
    padding of a regression design) get a unit diagonal in ``C``, which leaves
    ``W`` and the scale unchanged (they decouple from the other rows). Designs
    whose ``C`` is still singular (``m > n``, or dependent rows) take the
    eigendecomposition path (``C^+`` from ``eigh``). Exact, and one Cholesky
    factorisation and one ``m x m`` eigenvalue problem per design, unlike the
    projected gradient descent of the ALISTA paper (``analytic_weight_pgd``),
    which converges to the same ``W``.

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
    zero_rows = (A64 == 0).all(-1)
    C = A64 @ A64.transpose(-1, -2) + torch.diag_embed(zero_rows.to(A64.dtype))
    L, info = torch.linalg.cholesky_ex(C)
    # Singular C: the factorisation failed, or succeeded with a pivot negligible against the
    # largest (numerically singular; C^{-1} is then far from C^+ and W would pick up huge
    # components outside the range of A). Only the regular designs go through the factor.
    pivots = torch.diagonal(L, dim1=-2, dim2=-1).abs()
    tol = max(A64.shape[-2:]) * torch.finfo(torch.float64).eps
    singular = (info > 0) | (pivots.amin(-1) ** 2 <= tol * pivots.amax(-1) ** 2)
    if not bool(singular.any()):
        W, scale = _design_from_factor(L, torch.linalg.solve_triangular(L, A64, upper=False))
    elif A.dim() == 2:
        W, scale = _design_by_eigh(A64)
    else:
        W, scale = torch.empty_like(A64), A64.new_empty(A64.shape[:1])
        regular = ~singular
        if bool(regular.any()):
            L_reg = L[regular]
            W[regular], scale[regular] = _design_from_factor(
                L_reg, torch.linalg.solve_triangular(L_reg, A64[regular], upper=False))
        W[singular], scale[singular] = _design_by_eigh(A64[singular])
    return W.to(A.dtype), scale.to(A.dtype)


def _check_leverage(leverage: torch.Tensor) -> None:
    if not bool((leverage > 1e-12).all()):
        raise ValueError("analytic_weight: a column of A is zero (or numerically so); diag(W^T A) = 1 is infeasible")


def _design_from_factor(L: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``W`` and ``||W^T A||_2`` from ``C = L L^T`` and ``B = L^{-1} A`` (see ``analytic_design``)."""
    leverage = (B * B).sum(-2, keepdim=True)
    _check_leverage(leverage)
    BD = B / leverage
    W = torch.linalg.solve_triangular(L.transpose(-1, -2), BD, upper=True)
    scale = torch.linalg.eigvalsh(BD @ BD.transpose(-1, -2))[..., -1].clamp_min(0).sqrt()
    return W, scale


def _design_by_eigh(A64: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``W`` and ``||W^T A||_2`` through ``C^+`` from an eigendecomposition (singular ``C``)."""
    c, U = torch.linalg.eigh(A64 @ A64.transpose(-1, -2))
    cutoff = c.amax(-1, keepdim=True) * (max(A64.shape[-2:]) * torch.finfo(torch.float64).eps)
    inverse = torch.where(c > cutoff, 1.0 / c.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(c))
    UtA = U.transpose(-1, -2) @ A64
    Z = U @ (inverse.unsqueeze(-1) * UtA)  # C^+ A
    leverage = (A64 * Z).sum(-2, keepdim=True)  # a_i^T C^+ a_i
    _check_leverage(leverage)
    K = inverse.sqrt().unsqueeze(-1) * UtA / leverage
    scale = torch.linalg.eigvalsh(K @ K.transpose(-1, -2))[..., -1].clamp_min(0).sqrt()
    return Z / leverage, scale


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

    The only parameters are a step ``step_k`` and a threshold ``theta_k`` per
    layer, in units of the design's natural step ``1 / ||W^T A||_2``: layer
    ``k`` computes

        x_k = eta_ss(x_{k-1} - (step_k / s) W^T (A x_{k-1} - b); theta_k / s, p_k),
        s = ||W^T A||_2,

    so ``step_k = 1`` makes ``(step_k / s) W^T A`` of spectral norm 1, as
    ``A^T A / L`` in ISTA, and the untrained network (``step = 1``,
    ``theta = lam``) reduces the error layer by layer. (The paper's
    ``gamma_k = 1`` overshoots when ``m / n`` is small: ``W^T A`` has unit
    diagonal but spectral norm about ``n / m``.)

    With a fixed design (``fixed_design``), ``A``, the analytic ``W`` and ``s``
    are buffers set once by ``set_design``. Without one, every call takes the
    instances' own designs ``A`` ``(N, m, n)`` and computes each instance's
    ``W`` and ``s`` in closed form (batched): the ``2T`` scalars are shared
    across designs because they are relative to each design's ``s``.
    """

    def __init__(self, percents: list[float], m: int, n: int, fixed_design: bool):
        super().__init__()
        self.step = nn.ParameterList([nn.Parameter(torch.ones(())) for _ in percents])
        self.theta = nn.ParameterList([nn.Parameter(torch.zeros(())) for _ in percents])
        self.percents = list(percents)
        self.fixed_design = fixed_design
        if fixed_design:
            self.register_buffer("A", torch.zeros(m, n))
            self.register_buffer("W", torch.zeros(m, n))
            self.register_buffer("scale", torch.ones(()))

    def set_design(self, A: torch.Tensor) -> None:
        """Store the fixed design ``A`` with its analytic ``W`` and step scale."""
        W, scale = analytic_design(A)
        self.A.copy_(A)
        self.W.copy_(W)
        self.scale.copy_(scale)

    def set_initial(self, lam: float) -> None:
        """The untrained network: ``step_k = 1``, ``theta_k = lam`` (analytic ISTA with ``lam``)."""
        for step, theta in zip(self.step, self.theta):
            step.fill_(1.0)
            theta.fill_(lam)

    def layer_parameters(self, t: int) -> list[nn.Parameter]:
        """The step and threshold of layer ``t`` (1-based)."""
        return [self.step[t - 1], self.theta[t - 1]]

    def forward(self, b: torch.Tensor, keep_all: bool = True, A: torch.Tensor | None = None,
                depth: int | None = None, design: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> list[torch.Tensor]:
        """The layers' outputs; ``design``: the designs' ``analytic_design(A)``, when already computed."""
        if self.fixed_design:
            A, W, scale = self.A, self.W, self.scale
        else:
            if A is None or A.dim() != 3:
                raise ValueError("ALISTA without a fixed design needs the instances' designs A (N, m, n)")
            W, scale = analytic_design(A) if design is None else design
            scale = scale.unsqueeze(-1)  # (N, 1)
        depth = len(self.percents) if depth is None else depth
        Wtb = rmatvec(W, b)
        x = support_selection(self.step[0] / scale * Wtb, self.theta[0] / scale, self.percents[0])  # x_0 = 0
        outputs = [x]
        for t in range(1, depth):
            gradient = rmatvec(W, matvec(A, x)) - Wtb  # W^T (A x - b)
            x = support_selection(x - self.step[t] / scale * gradient, self.theta[t] / scale, self.percents[t])
            if keep_all:
                outputs.append(x)
        return outputs if keep_all else [x]


class LISTACPSSNetwork(nn.Module):
    """LISTA-CPSS's ``T`` layers; ``forward`` returns the per-layer outputs.

    ``A`` is a buffer; one ``W_k`` (m, n) per layer (a ``ParameterList``, as
    in ``LISTANetwork``) and a threshold ``theta_k`` per layer are learned.
    """

    def __init__(self, percents: list[float], m: int, n: int):
        super().__init__()
        self.register_buffer("A", torch.zeros(m, n))
        self.W = nn.ParameterList([nn.Parameter(torch.zeros(m, n)) for _ in percents])
        self.theta = nn.ParameterList([nn.Parameter(torch.zeros(())) for _ in percents])
        self.percents = list(percents)

    def set_ista(self, A: torch.Tensor, lam: float) -> None:
        """ISTA's weights: ``W_k = A / L``, ``theta_k = lam / L``, ``L = ||A||_2^2``."""
        L = lipschitz(A)
        self.A.copy_(A)
        for W, theta in zip(self.W, self.theta):
            W.copy_(A / L)
            theta.fill_(float(lam / L))

    def layer_parameters(self, t: int) -> list[nn.Parameter]:
        """The weight and threshold of layer ``t`` (1-based)."""
        return [self.W[t - 1], self.theta[t - 1]]

    def forward(self, b: torch.Tensor, keep_all: bool = True, depth: int | None = None) -> list[torch.Tensor]:
        depth = len(self.W) if depth is None else depth
        x = support_selection(rmatvec(self.W[0], b), self.theta[0], self.percents[0])  # x_0 = 0
        outputs = [x]
        for t in range(1, depth):
            x = support_selection(x + rmatvec(self.W[t], b - matvec(self.A, x)), self.theta[t], self.percents[t])
            if keep_all:
                outputs.append(x)
        return outputs if keep_all else [x]


# --------------------------------------------------------------------------- solvers

class ALISTA(LearnedSolver):
    """Analytic LISTA (Liu et al. 2019), for a fixed sensing matrix (``lasso``) or per-instance designs (``slr``).

    ``W`` is computed by ``analytic_design`` (closed form, exact, in
    milliseconds; the paper's projected gradient descent,
    ``analytic_weight_pgd``, reaches the same matrix); only ``2T`` scalars,
    a step size and a threshold per layer, are trained. With a fixed design,
    ``W`` is computed once and ``solve`` uses the sensing matrix seen by
    ``fit`` (stored in the state), as LISTA does. With per-instance designs
    (``A`` of shape ``(N, m, n)`` in the observation), each instance's ``W``
    and step scale ``||W^T A||_2`` are computed from its own design at every
    call, and the learned scalars, relative to that scale, are shared.

    Hyper-parameters (see ``l2obench list``): ``n_layers``, ``schedule``,
    ``gamma``, ``lr``, ``lam_init``, ``support_p``, ``support_max``,
    ``fresh_samples``. Fitted state: ``network_`` (an ``ALISTANetwork``).
    """

    def network_config(self, context: FitContext) -> dict:
        A = context.train.observation().get("A")
        if A is None or A.dim() not in (2, 3):
            raise ValueError("ALISTA needs a sensing matrix A (m, n) shared by all instances or one per "
                             "instance (N, m, n)")
        m, n = A.shape[-2:]
        return {"m": int(m), "n": int(n), "fixed_design": A.dim() == 2}

    def make_network(self, config) -> ALISTANetwork:
        return ALISTANetwork(support_percentages(self.n_layers, self.support_p, self.support_max), config["m"],
                             config["n"], config["fixed_design"])

    def init_network(self, network: ALISTANetwork, context: FitContext) -> None:
        network.set_initial(self.lam_init)
        if network.fixed_design:
            network.set_design(shared_design(context, "ALISTA"))

    def precompute(self, observation) -> dict:
        """Per-instance designs: each one's analytic weight and step scale (``analytic_design``)."""
        A = observation["A"]
        if A.dim() != 3:
            return {}
        W, scale = analytic_design(A)
        return {"alista_W": W, "alista_scale": scale}

    def forward(self, observation, keep_all: bool = True, depth: int | None = None):
        if self.network_.fixed_design:
            return self.network_(observation["b"], keep_all=keep_all, depth=depth)
        design = observation.get("alista_W"), observation.get("alista_scale")
        return self.network_(observation["b"], keep_all=keep_all, A=observation["A"], depth=depth,
                             design=None if design[0] is None else design)


class LISTACPSS(LearnedSolver):
    """LISTA with coupled weights and support selection (Chen et al. 2018), ``lasso`` family.

    Learns one ``W_k`` (m, n) and one threshold per layer, initialised from
    ISTA with ``lam_init``; ``solve`` uses the sensing matrix seen by ``fit``
    (stored in the state).

    Hyper-parameters (see ``l2obench list``): ``n_layers``, ``schedule``,
    ``gamma``, ``lr``, ``lam_init``, ``support_p``, ``support_max``,
    ``fresh_samples``. Fitted state: ``network_`` (a ``LISTACPSSNetwork``).
    """

    def network_config(self, context: FitContext) -> dict:
        m, n = shared_design(context, "LISTA-CPSS").shape
        return {"m": int(m), "n": int(n)}

    def make_network(self, config) -> LISTACPSSNetwork:
        return LISTACPSSNetwork(support_percentages(self.n_layers, self.support_p, self.support_max), config["m"],
                                config["n"])

    def init_network(self, network: LISTACPSSNetwork, context: FitContext) -> None:
        network.set_ista(shared_design(context, "LISTA-CPSS"), self.lam_init)

    def forward(self, observation, keep_all: bool = True, depth: int | None = None):
        return self.network_(observation["b"], keep_all=keep_all, depth=depth)
