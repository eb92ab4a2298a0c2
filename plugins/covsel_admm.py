"""ADMM for covariance selection (the graphical lasso), batched over instances.

Boyd, Parikh, Chu, Peleato & Eckstein (2011), "Distributed optimization and
statistical learning via the alternating direction method of multipliers",
section 6.5, scaled form with over-relaxation (section 3.4.3), for

    min  -logdet(X) + tr(S X) + alpha ||Z||_{1,off}   subject to  X = Z

(off-diagonal penalty, as scikit-learn's graphical lasso):

    X     <- argmin -logdet(X) + tr(S X) + rho/2 ||X - Z + U||_F^2
           = Q diag((l + sqrt(l^2 + 4 rho)) / (2 rho)) Q^T,  Q diag(l) Q^T = rho (Z - U) - S
    X_hat <- relax X + (1 - relax) Z
    Z     <- offdiag_soft(X_hat + U, alpha / rho)
    U     <- U + X_hat - Z

The X-update is one batched ``torch.linalg.eigh`` over the running instances.
"""
from __future__ import annotations

import torch

from l2obench.contracts import Solution
from l2obench.precision import diagonal_precision, is_positive_definite, offdiag_soft_threshold, symmetrize
from l2obench.tuning import ClassicalSolver

# Iterations between residual checks (a check costs two Frobenius norms per instance).
CHECK_EVERY = 5


def _estimate(X: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
    """The sparse iterate ``Z`` where it is positive definite, else the (always positive-definite) ``X``."""
    pd = is_positive_definite(Z)
    if bool(pd.all()):
        return Z
    return torch.where(pd.view(-1, 1, 1), Z, X)


def _x_update(V: torch.Tensor, rho: float) -> torch.Tensor:
    """``argmin_X -logdet(X) + rho/2 ||X - A||_F^2`` type update: solves ``rho X - X^{-1} = V``.

    With ``V = Q diag(l) Q^T``, ``X = Q diag(x) Q^T`` with ``x = (l + sqrt(l^2 + 4 rho)) / (2 rho) > 0``
    (Boyd et al. 2011, eq. 6.8), so ``X`` is positive definite whatever ``V``.
    """
    lam, Q = torch.linalg.eigh(V)
    x = (lam + torch.sqrt(lam * lam + 4 * rho)) / (2 * rho)
    return symmetrize((Q * x.unsqueeze(-2)) @ Q.transpose(-1, -2))


def covsel_admm(S: torch.Tensor, alpha: float, rho: float, relax: float, max_iter: int, tol: float,
                trajectory: bool = False) -> Solution:
    """Run covariance-selection ADMM on every instance of ``S`` ``(N, d, d)``; see ``CovselADMM``.

    Starts from ``Z = diag(1 / S_ii)``, ``U = 0``. An instance stops when its
    primal and dual residuals are small relative to its iterates (Boyd et al.
    2011, section 3.3.1, with ``eps_abs = 0``):
    ``||X - Z||_F <= tol max(||X||_F, ||Z||_F)`` and
    ``rho ||Z - Z_prev||_F <= tol ||rho U||_F``, checked every ``CHECK_EVERY``
    iterations and at ``max_iter``; ``tol = 0`` runs ``max_iter`` iterations.
    The estimate of an instance is ``Z`` (sparse) if positive definite, else
    ``X``; the trajectory (if asked) applies the same rule at every iteration.
    """
    N = S.shape[0]
    S = symmetrize(S)  # only the symmetric part of S enters the objective; iterates stay exactly symmetric
    Z = diagonal_precision(S)
    U = torch.zeros_like(S)
    X = Z
    out = Z.clone()
    iterations = torch.full((N,), max_iter, dtype=torch.long, device=S.device)
    converged = torch.zeros(N, dtype=torch.bool, device=S.device)
    index = torch.arange(N, device=S.device)
    path = [] if trajectory else None
    for k in range(1, max_iter + 1):
        X = _x_update(rho * (Z - U) - S, rho)
        Z_prev = Z
        X_hat = X if relax == 1.0 else relax * X + (1 - relax) * Z_prev
        Z = offdiag_soft_threshold(X_hat + U, alpha / rho)
        U = U + X_hat - Z
        if path is not None:
            estimate = _estimate(X, Z)
            path.append(estimate.clone() if index.numel() == N else out.clone().index_copy_(0, index, estimate))
        if tol > 0 and (k % CHECK_EVERY == 0 or k == max_iter):
            norm = lambda M: torch.linalg.matrix_norm(M)  # noqa: E731  Frobenius, per instance
            primal = norm(X - Z) <= tol * torch.maximum(norm(X), norm(Z))
            dual = rho * norm(Z - Z_prev) <= tol * rho * norm(U)
            done = primal & dual
            if done.any():
                rows = torch.nonzero(done).flatten()
                where = index.index_select(0, rows)
                out.index_copy_(0, where, _estimate(X.index_select(0, rows), Z.index_select(0, rows)))
                iterations[where] = k
                converged[where] = True
                keep = torch.nonzero(~done).flatten()
                index = index.index_select(0, keep)
                if index.numel() == 0:
                    break
                S, Z, U = (t.index_select(0, keep) for t in (S, Z, U))
                X = X.index_select(0, keep)
    if index.numel():
        out.index_copy_(0, index, _estimate(X, Z))
    return Solution(out, path, iterations, converged=converged if tol > 0 else None)


class CovselADMM(ClassicalSolver):
    """Covariance-selection ADMM (Boyd et al. 2011, section 6.5) for the graphical lasso, batched.

    Eigendecomposition X-updates, off-diagonal soft-thresholding Z-updates and
    over-relaxation. The estimate is the sparse iterate ``Z`` (the one with
    the graphical lasso's zero pattern; ``X`` is dense), falling back to ``X``
    for an instance whose ``Z`` is not positive definite (possible before
    convergence, e.g. with a small ``max_iter``), so every estimate has a
    finite objective.

    Hyper-parameters (see ``l2obench list``): ``alpha`` (penalty), ``rho``
    (augmented-Lagrangian penalty), ``relax`` (over-relaxation, 1.5-1.8
    recommended), ``max_iter``, ``tol`` (relative primal and dual residuals).
    """

    def solve(self, observation, trajectory=False) -> Solution:
        with torch.no_grad():
            return covsel_admm(observation["S"], self.alpha, self.rho, self.relax, self.max_iter, self.tol,
                               trajectory)
