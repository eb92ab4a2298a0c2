"""ISTA and FISTA for the LASSO ``min_x 0.5 ||A x - b||^2 + lam ||x||_1``, batched.

``A`` is shared ``(m, n)`` or per instance ``(N, m, n)``. Instances whose
relative duality gap falls below ``tol`` leave the active set, so stopping
saves real computation; ``tol = 0`` runs exactly ``max_iter`` iterations.
"""
from __future__ import annotations

import torch

from l2obench.contracts import Solution
from l2obench.ops import lipschitz, matvec, per_instance, rmatvec, soft_threshold
from l2obench.tuning import ClassicalSolver

# Iterations between duality-gap checks (each costs about one extra iteration).
CHECK_EVERY = 10
FLOAT32_GAP_RESOLUTION = 1e-4


def relative_duality_gap(A: torch.Tensor, b: torch.Tensor, x: torch.Tensor, lam: float) -> torch.Tensor:
    """``(P(x) - D(theta)) / P(x)`` per instance, for the dual-feasible point
    ``theta = s r``, ``r = b - A x``, ``s = min(1, lam / ||A^T r||_inf)``.

    Uses ``P - D = 0.5 (1 - s)^2 ||r||^2 + lam ||x||_1 - s x.A^T r``, which
    avoids the cancellation against ``||b||^2`` of the textbook form, so the
    gap is resolved in float32 down to about 1e-6 relative.
    """
    r = b - matvec(A, x)
    Atr = rmatvec(A, r)
    s = torch.clamp(lam / Atr.abs().amax(-1).clamp_min(1e-30), max=1.0)
    r2, l1 = (r * r).sum(-1), x.abs().sum(-1)
    gap = 0.5 * (1 - s) ** 2 * r2 + lam * l1 - s * (x * Atr).sum(-1)
    return gap / (0.5 * r2 + lam * l1).clamp_min(1e-30)


def _confirmed(gap: torch.Tensor, A: torch.Tensor, b: torch.Tensor, x: torch.Tensor, lam: float,
               tol: float) -> torch.Tensor:
    """Instances whose relative duality ``gap`` (computed in ``x``'s dtype) is at most ``tol``.

    In float32 the residual's rounding limits the computed gap to about 1e-5
    relative, so below ``FLOAT32_GAP_RESOLUTION`` instances within 10x of
    ``tol`` are confirmed in float64. (Float32 iterates themselves may stall
    near a 1e-5 gap on ill-conditioned supports: use float64 data for more.)
    """
    if x.dtype == torch.float64 or tol >= FLOAT32_GAP_RESOLUTION:
        return gap <= tol
    done = torch.zeros_like(gap, dtype=torch.bool)
    near = torch.nonzero(gap <= 10 * tol).flatten()
    if near.numel():
        A64 = A.double() if A.dim() == 2 else A[near].double()
        done[near] = relative_duality_gap(A64, b[near].double(), x[near].double(), lam) <= tol
    return done


def _rowdot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products ``(u_i . v_i)`` via a batched matmul."""
    return torch.bmm(u.unsqueeze(1), v.unsqueeze(-1)).view(-1)


class _Gradient:
    """``A^T (A x - b)`` on the active instances; a shared ``A`` uses its Gram matrix."""

    def __init__(self, A: torch.Tensor, b: torch.Tensor):
        self.A, self.b = A, b
        self.shared = A.dim() == 2
        if self.shared:
            self.gram, self.Atb = A.T @ A, b @ A

    def __call__(self, x: torch.Tensor, active: torch.Tensor | None) -> torch.Tensor:
        if self.shared:
            Atb = self.Atb if active is None else self.Atb[active]
            return torch.addmm(Atb, x, self.gram, alpha=1.0, beta=-1.0)
        A, b = (self.A, self.b) if active is None else (self.A[active], self.b[active])
        return rmatvec(A, matvec(A, x) - b)

    def operator(self, active: torch.Tensor | None) -> torch.Tensor:
        return self.A if self.shared or active is None else self.A[active]


def _gap_from_gradient(point: torch.Tensor, grad: torch.Tensor, Atb: torch.Tensor, bb: torch.Tensor,
                       lam: float) -> torch.Tensor:
    """Relative duality gap at ``point`` from ``grad = A^T (A point - b)`` (shared ``A``).

    ``A^T r = -grad`` and ``||r||^2 = point.grad - point.A^T b + ||b||^2`` come
    for free with the iteration's gradient; in float32 the cancellation in
    ``||r||^2`` costs about ``1e-7 ||b||^2``, far below ``FLOAT32_GAP_RESOLUTION``.
    """
    s = torch.clamp(lam / grad.abs().amax(-1).clamp_min(1e-30), max=1.0)
    r2 = (_rowdot(point, grad) - _rowdot(point, Atb) + bb).clamp_min(0.0)
    l1 = point.abs().sum(-1)
    gap = 0.5 * (1 - s) ** 2 * r2 + lam * l1 + s * _rowdot(point, grad)
    return gap / (0.5 * r2 + lam * l1).clamp_min(1e-30)


def proximal_gradient(A: torch.Tensor, b: torch.Tensor, lam: float, step: float, max_iter: int, tol: float,
                      accelerated: bool, restart: bool, trajectory: bool) -> Solution:
    """Run (F)ISTA on every instance; see ``ISTA`` and ``FISTA``.

    ``active`` is ``None`` while every instance runs (no gathers), else the
    indices of the instances still running. The stopping test looks at the
    point whose gradient the iteration computes (``y`` for FISTA, ``x`` for
    ISTA): with a shared ``A`` at every iteration, nearly for free; with
    per-instance designs every ``CHECK_EVERY`` iterations.
    """
    N, n = b.shape[0], A.shape[-1]
    gradient = _Gradient(A, b)
    bb = (b * b).sum(-1)
    L = lipschitz(A)  # scalar, or (N,) for per-instance designs
    step_all = float(step / L) if L.dim() == 0 else (step / L).unsqueeze(-1)
    x_out = b.new_zeros(N, n)
    iterations = torch.full((N,), max_iter, dtype=torch.long, device=b.device)
    active = None
    x = x_out.clone()
    y = x.clone()
    t = b.new_ones(N)
    path = [] if trajectory else None
    for k in range(1, max_iter + 2):
        if k > max_iter and not tol > 0:
            break
        point = y if accelerated else x
        descent = gradient(point, active)
        due = k > 1 and (gradient.shared or (k - 1) % CHECK_EVERY == 0 or k == max_iter + 1)
        if tol > 0 and due:
            # ``point`` is the iterate after k - 1 steps.
            pick = lambda v: v if active is None else v[active]  # noqa: E731
            if gradient.shared:
                gap = _gap_from_gradient(point, descent, pick(gradient.Atb), pick(bb), lam)
            else:
                gap = relative_duality_gap(gradient.operator(active), pick(b), point, lam)
            done = _confirmed(gap, gradient.operator(active), pick(b), point, lam, tol)
            if done.any():
                index = torch.arange(N, device=b.device) if active is None else active
                x_out[index[done]] = point[done]
                iterations[index[done]] = k - 1
                if path:  # the trajectory ends at the certified point
                    path[-1][index[done]] = point[done]
                keep = ~done
                active, x, y, t, descent = index[keep], x[keep], y[keep], t[keep], descent[keep]
                point = y if accelerated else x
                if active.numel() == 0:
                    break
        if k == max_iter + 1:
            break
        step_k = step_all if isinstance(step_all, float) or active is None else step_all[active]
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
                reset = _rowdot(point, d) > _rowdot(x_new, d)
                momentum = momentum.masked_fill(reset, 0.0)
                t_new = t_new.masked_fill(reset, 1.0)
            y = torch.addcmul(x_new, momentum.unsqueeze(-1), d, out=point)
            t = t_new
        x = x_new
        if path is not None:
            if active is None:
                path.append(x.clone())
            else:
                full = x_out.clone()
                full[active] = x
                path.append(full)
    if active is None:
        x_out = x
    elif active.numel():
        x_out[active] = x
    return Solution(x_out, path, iterations)


class ISTA(ClassicalSolver):
    """Iterative shrinkage-thresholding: ``x <- soft(x - s A^T(Ax - b), s lam)``, ``s = step / L``.

    Hyper-parameters (see ``l2obench list``): ``lam``, ``step`` (in units of
    ``1/L``, ``L = ||A||_2^2``), ``max_iter``, ``tol``.
    """

    def solve(self, observation, trajectory=False) -> Solution:
        with torch.no_grad():
            return proximal_gradient(observation["A"], observation["b"], self.lam, self.step, self.max_iter,
                                     self.tol, accelerated=False, restart=False, trajectory=trajectory)


class FISTA(ClassicalSolver):
    """Beck-Teboulle acceleration of ISTA with step ``1/L`` and optional adaptive restart.

    Hyper-parameters: ``lam``, ``restart``, ``max_iter``, ``tol``.
    """

    def solve(self, observation, trajectory=False) -> Solution:
        with torch.no_grad():
            return proximal_gradient(observation["A"], observation["b"], self.lam, 1.0, self.max_iter,
                                     self.tol, accelerated=True, restart=self.restart, trajectory=trajectory)
