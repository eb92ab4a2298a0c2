"""Batched building blocks for precision (inverse covariance) matrices.

Every function takes a batch of square matrices of shape ``(N, d, d)`` (any
leading batch shape works where noted), float32 or float64, and treats each
instance independently. The estimator of reference is the graphical lasso

    min_Theta  -logdet(Theta) + tr(S Theta) + alpha * sum_{i != j} |Theta_ij|,

scikit-learn's ``GraphicalLasso`` objective (off-diagonal penalty only).
"""
from __future__ import annotations

import torch

from l2obench.ops import soft_threshold


def symmetrize(X: torch.Tensor) -> torch.Tensor:
    """``(X + X^T) / 2`` over the last two dimensions.

    Parameters
    ----------
    X : torch.Tensor
        Shape ``(..., d, d)``.

    Returns
    -------
    torch.Tensor
        The symmetric part of ``X``, same shape.
    """
    return 0.5 * (X + X.transpose(-1, -2))


def _batch_broadcast(t, like: torch.Tensor):
    """A scalar stays as is; an ``(N,)`` tensor becomes ``(N, 1, 1)`` against an ``(N, d, d)``
    batch; anything else is returned unchanged (it must already broadcast against ``like``)."""
    if torch.is_tensor(t) and t.dim() == 1 and like.dim() == 3:
        return t.reshape(-1, 1, 1)
    return t


def offdiag_mask(d: int, device=None, dtype=torch.bool) -> torch.Tensor:
    """The off-diagonal pattern of a ``d x d`` matrix.

    Parameters
    ----------
    d : int
        Dimension.
    device, dtype
        Of the result; ``torch.bool`` (default) gives True off the diagonal,
        a floating dtype gives 1 off the diagonal and 0 on it (a multiplier).

    Returns
    -------
    torch.Tensor
        Shape ``(d, d)``.
    """
    if dtype is torch.bool:
        return ~torch.eye(d, dtype=torch.bool, device=device)
    return 1 - torch.eye(d, dtype=dtype, device=device)


def offdiag_soft_threshold(X: torch.Tensor, t) -> torch.Tensor:
    """Soft-threshold the off-diagonal entries of ``X`` by ``t``; keep the diagonal.

    The proximal map of ``t * sum_{i != j} |X_ij|``.

    Parameters
    ----------
    X : torch.Tensor
        Shape ``(N, d, d)`` (or ``(d, d)``).
    t : float or torch.Tensor
        Threshold: a scalar, one value per instance ``(N,)``, or a tensor
        broadcastable to ``X``.

    Returns
    -------
    torch.Tensor
        Same shape as ``X``.
    """
    shrunk = soft_threshold(X, _batch_broadcast(t, X))
    return shrunk + torch.diag_embed(torch.diagonal(X, dim1=-2, dim2=-1) - torch.diagonal(shrunk, dim1=-2, dim2=-1))


def offdiag_l1(X: torch.Tensor) -> torch.Tensor:
    """``||X||_{1,off} = sum_{i != j} |X_ij|`` per instance, shape ``X.shape[:-2]``."""
    return X.abs().sum((-1, -2)) - torch.diagonal(X, dim1=-2, dim2=-1).abs().sum(-1)


def offdiag_abs_max(X: torch.Tensor) -> torch.Tensor:
    """``max_{i != j} |X_ij|`` per instance, shape ``X.shape[:-2]``."""
    d = X.shape[-1]
    return (X.abs() * offdiag_mask(d, X.device, X.dtype)).amax((-1, -2))


def trace_product(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``tr(A B^T) = sum_ij A_ij B_ij`` per instance (``tr(A B)`` for symmetric ``B``), without the product.

    Shape ``A.shape[:-2]`` (broadcast with ``B``).
    """
    return (A * B).sum((-1, -2))


def cholesky_logdet(Theta: torch.Tensor):
    """Cholesky factor, log-determinant and positive-definiteness of each instance.

    Parameters
    ----------
    Theta : torch.Tensor
        Symmetric matrices, shape ``(..., d, d)``.

    Returns
    -------
    L : torch.Tensor
        Lower Cholesky factors (garbage where ``pd`` is False).
    logdet : torch.Tensor
        ``log det Theta = 2 sum_i log L_ii``, shape ``Theta.shape[:-2]``;
        ``nan`` where ``pd`` is False.
    pd : torch.Tensor
        Boolean, True where ``Theta`` is (numerically) positive definite, i.e.
        where the factorisation succeeded (``torch.linalg.cholesky_ex``'s info
        is 0), without raising for the other instances.
    """
    L, info = torch.linalg.cholesky_ex(Theta)
    pd = info == 0
    diag = torch.diagonal(L, dim1=-2, dim2=-1)
    logdet = 2 * torch.log(diag.clamp_min(torch.finfo(Theta.dtype).tiny)).sum(-1)
    logdet = torch.where(pd, logdet, torch.full_like(logdet, float("nan")))
    return L, logdet, pd


def is_positive_definite(Theta: torch.Tensor) -> torch.Tensor:
    """True where the instance is (numerically) positive definite, shape ``Theta.shape[:-2]``.

    Uses ``torch.linalg.cholesky_ex`` (never raises); non-finite matrices are
    reported as not positive definite.
    """
    _, info = torch.linalg.cholesky_ex(Theta)
    return (info == 0) & torch.isfinite(Theta).all(-1).all(-1)


def smooth_objective(Theta: torch.Tensor, S: torch.Tensor):
    """``g(Theta) = -logdet(Theta) + tr(S Theta)`` per instance, with the Cholesky factor.

    Returns
    -------
    g : torch.Tensor
        ``+inf`` where ``Theta`` is not positive definite.
    L : torch.Tensor
        Cholesky factors of ``Theta`` (usable where positive definite).
    pd : torch.Tensor
        Boolean positive-definiteness flags.
    """
    L, logdet, pd = cholesky_logdet(Theta)
    g = -logdet + trace_product(S, Theta)
    g = torch.where(pd, g, torch.full_like(g, float("inf")))
    return g, L, pd


def glasso_objective(Theta: torch.Tensor, S: torch.Tensor, alpha) -> torch.Tensor:
    """Graphical-lasso objective ``-logdet(Theta) + tr(S Theta) + alpha sum_{i != j} |Theta_ij|``.

    scikit-learn's graphical-lasso objective (its private ``_objective`` adds
    the constant ``2 d log(2 pi)``; off-diagonal entries only are penalised).

    Parameters
    ----------
    Theta : torch.Tensor
        Symmetric precision estimates, shape ``(N, d, d)``.
    S : torch.Tensor
        Sample covariances, shape ``(N, d, d)`` (or ``(d, d)``, shared).
    alpha : float or torch.Tensor
        Penalty, a scalar or one per instance ``(N,)``.

    Returns
    -------
    torch.Tensor
        Shape ``(N,)``; ``+inf`` where ``Theta`` is not positive definite.
    """
    g, _, _ = smooth_objective(Theta, S)
    return g + alpha * offdiag_l1(Theta)


def cholesky_inverse(L: torch.Tensor) -> torch.Tensor:
    """``Theta^{-1}`` from the lower Cholesky factor ``L`` of ``Theta``, batched ``(..., d, d)``.

    ``torch.cholesky_inverse`` (the fastest batched inverse on CPU: measured
    1.7 ms for 200 matrices of 30 x 30 in float32, against 7.3 ms for
    ``torch.linalg.inv``), symmetrised so that the result is exactly
    symmetric. Differentiable.
    """
    return symmetrize(torch.cholesky_inverse(L))


def glasso_duality_gap(Theta: torch.Tensor, S: torch.Tensor, alpha, W: torch.Tensor | None = None,
                       smooth: torch.Tensor | None = None) -> torch.Tensor:
    """Duality gap of the graphical lasso at a positive-definite ``Theta``, per instance.

    The dual of the graphical lasso is ``max_U logdet(S + U) + d`` over
    symmetric ``U`` with ``|U_ij| <= alpha`` off the diagonal and ``U_ii = 0``
    (from ``alpha ||Theta||_{1,off} = max_U tr(U Theta)``; the inner minimum
    over ``Theta`` is at ``Theta = (S + U)^{-1}``). The dual point is the
    projection of ``Theta^{-1} - S`` on that set (Rolfs et al. 2012), so the
    gap is

        -logdet(Theta) + tr(S Theta) + alpha ||Theta||_{1,off} - logdet(S + U) - d

    and bounds the suboptimality of ``Theta``; it vanishes at the optimum.

    Parameters
    ----------
    Theta, S : torch.Tensor
        Shape ``(N, d, d)``.
    alpha : float or torch.Tensor
        Scalar or ``(N,)``.
    W : torch.Tensor, optional
        ``Theta^{-1}`` if already known.
    smooth : torch.Tensor, optional
        ``-logdet(Theta) + tr(S Theta)`` ``(N,)`` if already known.

    Returns
    -------
    torch.Tensor
        Shape ``(N,)``; ``+inf`` where ``Theta`` or the dual point ``S + U``
        is not positive definite (the gap certifies nothing there).
    """
    if W is None or smooth is None:
        smooth, L, _ = smooth_objective(Theta, S)
        W = cholesky_inverse(L) if W is None else W
    a = _batch_broadcast(alpha, S)
    U = torch.clamp(W - S, -a, a) if torch.is_tensor(a) else torch.clamp(W - S, -float(a), float(a))
    U = U - torch.diag_embed(torch.diagonal(U, dim1=-2, dim2=-1))  # U_ii = 0: the dual keeps S_ii
    _, logdet_dual, pd_dual = cholesky_logdet(S + U)
    gap = smooth + alpha * offdiag_l1(Theta) - logdet_dual - Theta.shape[-1]
    ok = pd_dual & torch.isfinite(smooth)
    return torch.where(ok, gap, torch.full_like(gap, float("inf")))


def diagonal_precision(S: torch.Tensor) -> torch.Tensor:
    """``diag(1 / S_ii)``, shape ``(..., d, d)``: the graphical-lasso solution for a large enough penalty.

    For ``alpha >= max_{i != j} |S_ij|`` this diagonal matrix is the exact
    minimiser (its inverse ``diag(S)`` is dual feasible), and a natural
    starting point of iterative solvers (G-ISTA and covariance-selection ADMM
    here).
    """
    return torch.diag_embed(1.0 / torch.diagonal(S, dim1=-2, dim2=-1))
