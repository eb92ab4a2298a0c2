"""ADMM for the LASSO (Boyd et al. 2011, section 6.4), scaled form, batched.

    x <- (A^T A + rho I)^{-1} (A^T b + rho (z - u))
    z <- soft(x + u, lam / rho)
    u <- u + x - z

The linear system is factorised once per call: for a shared ``A`` its inverse
is formed once; per-instance designs use a batched Cholesky factor of
``rho I + A A^T`` (``m x m``, Woodbury) when ``m < n``, else of ``A^T A + rho I``.
"""
from __future__ import annotations

import torch

from l2obench.contracts import Solution
from l2obench.datafits import LeastSquares
from l2obench.ops import gram, matvec, rmatvec, soft_threshold
from l2obench.tuning import ClassicalSolver

CHECK_EVERY = 10


class _XUpdate:
    """Solves ``(A^T A + rho I) x = q`` for the active instances."""

    def __init__(self, A: torch.Tensor, rho: float):
        self.A, self.rho = A, rho
        self.shared = A.dim() == 2
        m, n = A.shape[-2:]
        self.woodbury = not self.shared and m < n
        A64 = A.double()
        if self.shared:
            eye = torch.eye(n, dtype=torch.float64, device=A.device)
            self.inverse = torch.linalg.inv(A64.T @ A64 + rho * eye).to(A.dtype)
        elif self.woodbury:
            eye = torch.eye(m, dtype=torch.float64, device=A.device)
            self.factor = torch.linalg.cholesky(rho * eye + A64 @ A64.transpose(-1, -2)).to(A.dtype)
        else:
            eye = torch.eye(n, dtype=torch.float64, device=A.device)
            self.factor = torch.linalg.cholesky(gram(A64) + rho * eye).to(A.dtype)

    def __call__(self, q: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        if self.shared:
            return q @ self.inverse
        A, factor = self.A[active], self.factor[active]
        if self.woodbury:
            # (A^T A + rho I)^{-1} q = (q - A^T (rho I + A A^T)^{-1} A q) / rho
            inner = torch.cholesky_solve(matvec(A, q).unsqueeze(-1), factor).squeeze(-1)
            return (q - rmatvec(A, inner)) / self.rho
        return torch.cholesky_solve(q.unsqueeze(-1), factor).squeeze(-1)


def admm_lasso(term: LeastSquares, lam: float, rho: float, max_iter: int, tol: float,
               trajectory: bool) -> Solution:
    """Run ADMM on every instance of the least-squares data term ``term``; the estimate is the sparse iterate ``z``."""
    A, b = term.A, term.b
    N, n = b.shape[0], A.shape[-1]
    solve_x = _XUpdate(A, rho)
    Atb = term.Atb()
    z_out = b.new_zeros(N, n)
    iterations = torch.full((N,), max_iter, dtype=torch.long, device=b.device)
    converged = torch.zeros(N, dtype=torch.bool, device=b.device)
    active = torch.arange(N, device=b.device)
    z, u = z_out.clone(), z_out.clone()
    path = [] if trajectory else None
    for k in range(1, max_iter + 1):
        x = solve_x(Atb[active] + rho * (z - u), active)
        z_old = z
        z = soft_threshold(x + u, lam / rho)
        u = u + x - z
        if path is not None:
            full = z_out.clone()
            full[active] = z
            path.append(full)
        if tol > 0 and (k % CHECK_EVERY == 0 or k == max_iter):
            # Relative primal and dual residuals (Boyd et al. 2011, section 3.3.1).
            primal = (x - z).norm(dim=-1) <= tol * torch.maximum(x.norm(dim=-1), z.norm(dim=-1)).clamp_min(1e-12)
            dual = (rho * (z - z_old)).norm(dim=-1) <= tol * (rho * u).norm(dim=-1).clamp_min(1e-12)
            done = primal & dual
            if done.any():
                z_out[active[done]] = z[done]
                iterations[active[done]] = k
                converged[active[done]] = True
                keep = ~done
                active, z, u = active[keep], z[keep], u[keep]
                if active.numel() == 0:
                    break
    z_out[active] = z
    return Solution(z_out, path, iterations, converged=converged if tol > 0 else None)


class ADMM(ClassicalSolver):
    """ADMM for ``0.5 ||Ax - b||^2 + lam ||x||_1``.

    Hyper-parameters: ``lam``, ``rho`` (augmented-Lagrangian penalty),
    ``max_iter``, ``tol`` (relative primal and dual residuals).
    """

    def solve(self, observation, trajectory=False) -> Solution:
        with torch.no_grad():
            return admm_lasso(LeastSquares.from_observation(observation), self.lam, self.rho, self.max_iter,
                              self.tol, trajectory)
