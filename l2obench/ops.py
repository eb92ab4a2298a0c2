"""Shared numerical building blocks, batched over instances.

Operators may be shared, ``A`` of shape ``(m, n)``, or per instance, ``A`` of
shape ``(N, m, n)``; vectors are ``(N, n)``. Solvers call these helpers so that
fixed-design (LASSO) and per-instance-design (regression) families share code.
"""
from __future__ import annotations

import torch


def soft_threshold(x: torch.Tensor, threshold) -> torch.Tensor:
    """Proximal map of ``threshold * ||.||_1``: ``sign(x) * max(|x| - threshold, 0)``.

    ``threshold`` may be a scalar or a tensor broadcastable to ``x`` (one value
    per instance, per layer or per coordinate). Differentiable in both arguments.
    A Python-number threshold uses the fused ``softshrink`` kernel; a tensor
    threshold ``relu(x - t) - relu(-x - t)``, whose backward is three times
    cheaper than that of ``x - clamp(x, -t, t)``.
    """
    if not torch.is_tensor(threshold):
        return torch.nn.functional.softshrink(x, float(threshold))
    return torch.relu(x - threshold) - torch.relu(-x - threshold)


def matvec(A: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``A x`` for every instance: ``(N, n) -> (N, m)``.

    Per-instance designs take the product as ``x^T A^T`` (a row times each
    matrix): on CPU 4x faster than ``A x`` as a batched column product
    (measured 0.76 against 3.2 ms for 128 designs of 80 x 128, one thread).
    """
    if A.dim() == 2:
        return x @ A.T
    return torch.bmm(x.unsqueeze(1), A.transpose(-1, -2)).squeeze(1)


def rmatvec(A: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``A^T r`` for every instance: ``(N, m) -> (N, n)``."""
    if A.dim() == 2:
        return r @ A
    return torch.bmm(r.unsqueeze(1), A).squeeze(1)


def gram(A: torch.Tensor) -> torch.Tensor:
    """``A^T A``, shared ``(n, n)`` or per instance ``(N, n, n)``."""
    return A.transpose(-1, -2) @ A


def lipschitz(A: torch.Tensor) -> torch.Tensor:
    """Largest eigenvalue of ``A^T A`` (gradient Lipschitz constant of ``0.5||Ax-b||^2``).

    Returns a scalar tensor for a shared ``A`` and an ``(N,)`` tensor otherwise,
    computed in float64 for accuracy.
    """
    small = A if A.shape[-2] <= A.shape[-1] else A.transpose(-1, -2)
    return torch.linalg.eigvalsh((small @ small.transpose(-1, -2)).double())[..., -1].to(A.dtype)


def per_instance(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a scalar or ``(N,)`` tensor to broadcast against ``like`` ``(N, ...)``."""
    if value.dim() == 0:
        return value
    return value.reshape(value.shape + (1,) * (like.dim() - 1))


def lasso_objective(A: torch.Tensor, b: torch.Tensor, x: torch.Tensor, lam) -> torch.Tensor:
    """``0.5 ||A x - b||^2 + lam ||x||_1`` per instance, shape ``(N,)``."""
    residual = matvec(A, x) - b
    return 0.5 * (residual**2).sum(-1) + lam * x.abs().sum(-1)


def all_finite(x: torch.Tensor) -> bool:
    return bool(torch.isfinite(x).all())
