"""ISTA and FISTA for the LASSO ``min_x 0.5 ||A x - b||^2 + lam ||x||_1``, batched.

``A`` is shared ``(m, n)`` or per instance ``(N, m, n)``. An instance stops
when its duality gap is at most ``tol * ||b||^2``, scikit-learn's (and
celer's) stopping rule, so ``tol`` means the same as scikit-learn Lasso's
``tol``; finished instances leave the batch, so stopping saves real
computation. ``tol = 0`` runs exactly ``max_iter`` iterations.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch.linalg import vecdot

from l2obench.contracts import FitContext, Solution
from l2obench.datafits import LeastSquares
from l2obench.ops import matvec, rmatvec, soft_threshold
from l2obench.tuning import ClassicalSolver

# Iterations between duality-gap checks (each costs about one extra iteration).
CHECK_EVERY = 10
FLOAT32_GAP_RESOLUTION = 1e-5


def normalized_duality_gap(A: torch.Tensor, b: torch.Tensor, x: torch.Tensor, lam: float) -> torch.Tensor:
    """``(P(x) - D(theta)) / ||b||^2`` per instance, for the dual-feasible point
    ``theta = s r``, ``r = b - A x``, ``s = min(1, lam / ||A^T r||_inf)``.

    Uses ``P - D = 0.5 (1 - s)^2 ||r||^2 + lam ||x||_1 - s x.A^T r``, which
    avoids the cancellation against ``||b||^2`` of the textbook form, so the
    gap is resolved in float32 down to about 1e-6 of ``||b||^2``. Since
    ``P(x) <= P(0) = ||b||^2 / 2`` for any useful ``x``, the relative
    suboptimality ``(P(x) - P*) / P(x)`` is at most this value times
    ``||b||^2 / P(x)``.
    """
    r = b - matvec(A, x)
    Atr = rmatvec(A, r)
    s = torch.clamp(lam / Atr.abs().amax(-1).clamp_min(1e-30), max=1.0)
    r2, l1 = (r * r).sum(-1), x.abs().sum(-1)
    gap = 0.5 * (1 - s) ** 2 * r2 + lam * l1 - s * (x * Atr).sum(-1)
    return gap / (b * b).sum(-1).clamp_min(1e-30)


def _confirmed(gap: torch.Tensor, A: torch.Tensor, b: torch.Tensor, x: torch.Tensor, lam: float,
               tol: float) -> torch.Tensor:
    """Instances whose normalized duality ``gap`` (computed in ``x``'s dtype) is at most ``tol``.

    In float32 the residual's rounding limits the computed gap to about 1e-6
    of ``||b||^2``, so below ``FLOAT32_GAP_RESOLUTION`` instances within 10x of
    ``tol`` are confirmed in float64. (Float32 iterates themselves may stall
    near a 1e-5 gap on ill-conditioned supports: use float64 data for more.)
    """
    if x.dtype == torch.float64 or tol >= FLOAT32_GAP_RESOLUTION:
        return gap <= tol
    done = torch.zeros_like(gap, dtype=torch.bool)
    near = torch.nonzero(gap <= 10 * tol).flatten()
    if near.numel():
        A64 = A.double() if A.dim() == 2 else A.index_select(0, near).double()
        pick = lambda v: v.index_select(0, near).double()  # noqa: E731
        done[near] = normalized_duality_gap(A64, pick(b), pick(x), lam) <= tol
    return done


def _gap_from_gradient(point: torch.Tensor, grad: torch.Tensor, Atb: torch.Tensor, bb: torch.Tensor,
                       lam: float) -> torch.Tensor:
    """Normalized duality gap at ``point`` from ``grad = A^T (A point - b)`` (shared ``A``).

    ``A^T r = -grad`` and ``||r||^2 = point.grad - point.A^T b + ||b||^2`` come
    for free with the iteration's gradient; in float32 the cancellation in
    ``||r||^2`` costs about ``1e-7 ||b||^2``, below ``FLOAT32_GAP_RESOLUTION``.
    """
    s = torch.clamp(lam / grad.abs().amax(-1).clamp_min(1e-30), max=1.0)
    point_grad = vecdot(point, grad)
    r2 = (point_grad - vecdot(point, Atb) + bb).clamp_min(0.0)
    l1 = point.abs().sum(-1)
    gap = 0.5 * (1 - s) ** 2 * r2 + lam * l1 + s * point_grad
    return gap / bb.clamp_min(1e-30)


class _Running:
    """The instances still running: their indices into the batch and their data.

    Per-instance data (``b``, ``A^T b``, ``||b||^2``, a per-instance ``A`` and
    step) is gathered again only when some instances finish, never per
    iteration; ``index_select`` is used since it is several times faster than
    advanced indexing on CPU.
    """

    def __init__(self, A: torch.Tensor, b: torch.Tensor, step: float | torch.Tensor):
        self.shared = A.dim() == 2
        self.gram = A.T @ A if self.shared else None
        self.index = torch.arange(b.shape[0], device=b.device)
        self.A, self.b, self.bb, self.step = A, b, (b * b).sum(-1), step
        self.Atb = b @ A if self.shared else None

    def gradient(self, x: torch.Tensor) -> torch.Tensor:
        """``A^T (A x - b)``; a shared ``A`` uses its Gram matrix, one matmul."""
        if self.shared:
            return torch.addmm(self.Atb, x, self.gram, alpha=1.0, beta=-1.0)
        return rmatvec(self.A, matvec(self.A, x) - self.b)

    def gap(self, point: torch.Tensor, grad: torch.Tensor, lam: float) -> torch.Tensor:
        if self.shared:
            return _gap_from_gradient(point, grad, self.Atb, self.bb, lam)
        return normalized_duality_gap(self.A, self.b, point, lam)

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (positions among the running instances)."""
        pick = lambda v: v if v is None or not torch.is_tensor(v) else v.index_select(0, rows)  # noqa: E731
        self.index, self.b, self.bb, self.Atb = pick(self.index), pick(self.b), pick(self.bb), pick(self.Atb)
        if not self.shared:
            self.A, self.step = pick(self.A), pick(self.step)


def proximal_gradient(term: LeastSquares, lam: float, step: float, max_iter: int, tol: float,
                      accelerated: bool, restart: bool, trajectory: bool) -> Solution:
    """Run (F)ISTA on every instance of the least-squares data term ``term``; see ``ISTA`` and ``FISTA``.

    The stopping test looks at the point whose gradient the iteration
    computes (``y`` for FISTA, ``x`` for ISTA): with a shared ``A`` at every
    iteration, nearly for free; with per-instance designs every
    ``CHECK_EVERY`` iterations. Finished instances leave the batch.
    """
    A, b = term.A, term.b
    N, n = b.shape[0], A.shape[-1]
    L = term.lipschitz()  # scalar, or (N,) for per-instance designs
    running = _Running(A, b, float(step / L) if L.dim() == 0 else (step / L).unsqueeze(-1))
    x_out = b.new_zeros(N, n)
    iterations = torch.full((N,), max_iter, dtype=torch.long, device=b.device)
    converged = torch.zeros(N, dtype=torch.bool, device=b.device)
    x = x_out.clone()
    y = x.clone()
    t = b.new_ones(N)
    path = [] if trajectory else None
    for k in range(1, max_iter + 2):
        if k > max_iter and not tol > 0:
            break
        point = y if accelerated else x
        descent = running.gradient(point)
        due = k > 1 and (running.shared or (k - 1) % CHECK_EVERY == 0 or k == max_iter + 1)
        if tol > 0 and due:
            # ``point`` is the iterate after k - 1 steps.
            gap = running.gap(point, descent, lam)
            done = _confirmed(gap, running.A, running.b, point, lam, tol)
            if done.any():
                finished = torch.nonzero(done).flatten()
                where = running.index.index_select(0, finished)
                x_out.index_copy_(0, where, point.index_select(0, finished))
                iterations[where] = k - 1
                converged[where] = True
                if path:  # the trajectory ends at the certified point
                    path[-1].index_copy_(0, where, point.index_select(0, finished))
                rows = torch.nonzero(~done).flatten()
                running.keep(rows)
                x, y, t, descent = (v.index_select(0, rows) for v in (x, y, t, descent))
                point = y if accelerated else x
                if rows.numel() == 0:
                    break
        if k == max_iter + 1:
            break
        step_k = running.step
        # Buffers are reused in place: the loop is bound by memory traffic, not flops.
        if isinstance(step_k, float):
            torch.add(point, descent, alpha=-step_k, out=descent)
        else:
            descent.mul_(-step_k).add_(point)
        x_new = soft_threshold(descent, step_k * lam)
        if accelerated:
            d = torch.sub(x_new, x, out=x)  # the old x is not needed any more
            t_new = (1 + torch.sqrt(1 + 4 * t * t)) / 2
            momentum = (t - 1) / t_new
            if restart:
                # O'Donoghue & Candes: restart where the step opposes the momentum direction,
                # (y - x_new).d > 0, computed as two batched dot products without a temporary.
                reset = vecdot(point, d) > vecdot(x_new, d)
                momentum = momentum.masked_fill(reset, 0.0)
                t_new = t_new.masked_fill(reset, 1.0)
            y = torch.addcmul(x_new, momentum.unsqueeze(-1), d, out=point)
            t = t_new
        x = x_new
        if path is not None:
            if running.index.numel() == N:
                path.append(x.clone())
            else:
                path.append(x_out.clone().index_copy_(0, running.index, x))
    converged = converged if tol > 0 else None
    if running.index.numel() == N:
        return Solution(x, path, iterations, converged=converged)
    x_out.index_copy_(0, running.index, x)
    return Solution(x_out, path, iterations, converged=converged)


class ISTA(ClassicalSolver):
    """Iterative shrinkage-thresholding: ``x <- soft(x - s A^T(Ax - b), s lam)``, ``s = step / L``.

    Hyper-parameters (see ``l2obench list``): ``lam``, ``step`` (in units of
    ``1/L``, ``L = ||A||_2^2``), ``max_iter``, ``tol``. Steps of ``2 / L`` and
    more are tuned only with a fixed iteration count (``tol = 0``): run to
    convergence they do not converge, and would only spend ``max_iter``.
    """

    def fit(self, context: FitContext) -> "ISTA":
        if self.tol > 0 and "step" in context.tune:
            context = replace(context, tune={**context.tune, "step": [s for s in context.tune["step"] if s < 2]})
        return super().fit(context)

    def solve(self, observation, trajectory=False) -> Solution:
        with torch.no_grad():
            return proximal_gradient(LeastSquares.from_observation(observation), self.lam, self.step,
                                     self.max_iter, self.tol, accelerated=False, restart=False,
                                     trajectory=trajectory)


class FISTA(ClassicalSolver):
    """Beck-Teboulle acceleration of ISTA with step ``1/L`` and optional adaptive restart.

    Hyper-parameters: ``lam``, ``restart``, ``max_iter``, ``tol``.
    """

    def solve(self, observation, trajectory=False) -> Solution:
        with torch.no_grad():
            return proximal_gradient(LeastSquares.from_observation(observation), self.lam, 1.0, self.max_iter,
                                     self.tol, accelerated=True, restart=self.restart, trajectory=trajectory)
