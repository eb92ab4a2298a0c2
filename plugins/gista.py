"""G-ISTA: proximal gradient for the graphical lasso, batched over instances.

Rolfs, Rajaratnam, Guillot, Wong & Maleki (NIPS 2012), "Iterative thresholding
algorithm for sparse inverse covariance estimation", Algorithm 1, for

    min_Theta  g(Theta) + alpha ||Theta||_{1,off},   g(Theta) = -logdet(Theta) + tr(S Theta),

(the off-diagonal penalty of scikit-learn's graphical lasso; the paper
penalises the diagonal too). One iteration, with ``W = Theta^{-1}``:

    Theta+ = offdiag_soft(Theta - zeta (S - W), zeta alpha),

where the step ``zeta`` starts at the Barzilai-Borwein value
``tr(D D) / tr(D (W_prev - W))``, ``D = Theta - Theta_prev``, and is
multiplied by ``shrink`` until ``Theta+`` is positive definite (Cholesky) and
the sufficient-decrease condition
``g(Theta+) <= g(Theta) + tr((Theta+ - Theta) (S - W)) + ||Theta+ - Theta||_F^2 / (2 zeta)``
holds. Each instance has its own step and backtracks on its own: the
instances still backtracking are a shrinking subset of the batch, and
finished instances leave it.
"""
from __future__ import annotations

import torch

from l2obench.contracts import Solution
from l2obench.precision import (cholesky_inverse, diagonal_precision, glasso_duality_gap, offdiag_soft_threshold,
                                offdiag_l1, smooth_objective, symmetrize, trace_product)
from l2obench.tuning import ClassicalSolver

# Sufficient-decrease tests allow this many units of rounding (eps * (|g| + d)), so a float32
# iterate near the optimum is not refused for noise in g; an instance whose step still fails
# ``max_backtrack`` times has reached the precision of its dtype and stops.
ROUNDING_UNITS = 10.0
# An accepted step decreases the objective F by at least ||D||^2 / (2 zeta) (Beck & Teboulle 2009,
# lemma 2.3), so an instance whose computed F has not gone below its best for this many iterations
# is at its dtype's precision (in float32, rounding in F is near 1e-6 |F|) and stops.
PATIENCE = 10
MAX_GROWTH = 1e4


def _select(rows: torch.Tensor, *tensors: torch.Tensor):
    return tuple(t.index_select(0, rows) for t in tensors)


def _backtrack(Theta, S, W, g, step, alpha: float, shrink: float, max_backtrack: int):
    """One G-ISTA step per instance with backtracking on its own step size.

    Returns ``(Theta+, L+, g+, step, accepted)``: the accepted iterates, their
    Cholesky factors and smooth objectives, the steps used, and which
    instances accepted a step (the others keep ``Theta``).
    """
    d = Theta.shape[-1]
    G = S - W
    slack = ROUNDING_UNITS * torch.finfo(Theta.dtype).eps * (g.abs() + d)
    new_Theta, new_L, new_g, new_step = Theta, None, g, step
    accepted = torch.zeros_like(g, dtype=torch.bool)
    pending = None  # positions of the instances still backtracking; None: all of them
    Th, Sp, Gp, gp, st, sl = Theta, S, G, g, step, slack
    for attempt in range(max_backtrack):
        candidate = offdiag_soft_threshold(torch.addcmul(Th, st.view(-1, 1, 1), Gp, value=-1.0), st * alpha)
        g_c, L_c, pd = smooth_objective(candidate, Sp)
        D = candidate - Th
        model = gp + trace_product(D, Gp) + (D * D).sum((-1, -2)) / (2 * st)
        ok = pd & (g_c <= model + sl)
        if pending is None and bool(ok.all()):
            return candidate, L_c, g_c, st, ok  # the common case: every instance accepted at once
        if pending is None:
            pending = torch.arange(Theta.shape[0], device=Theta.device)
            new_Theta, new_L, new_g, new_step = Theta.clone(), torch.empty_like(Theta), g.clone(), step.clone()
        good = torch.nonzero(ok).flatten()
        if good.numel():
            where = pending.index_select(0, good)
            new_Theta.index_copy_(0, where, candidate.index_select(0, good))
            new_L.index_copy_(0, where, L_c.index_select(0, good))
            new_g.index_copy_(0, where, g_c.index_select(0, good))
            new_step.index_copy_(0, where, st.index_select(0, good))
            accepted.index_fill_(0, where, True)
        rest = torch.nonzero(~ok).flatten()
        if rest.numel() == 0:
            break
        pending = pending.index_select(0, rest)
        Th, Sp, Gp, gp, st, sl = _select(rest, Th, Sp, Gp, gp, st, sl)
        st = st * shrink
    return new_Theta, new_L, new_g, new_step, accepted


def gista(S: torch.Tensor, alpha: float, max_iter: int, tol: float, shrink: float = 0.5, max_backtrack: int = 40,
          trajectory: bool = False) -> Solution:
    """Run G-ISTA on every instance of ``S`` ``(N, d, d)``; see ``GISTA``.

    An instance stops when the duality gap of its iterate (``glasso_duality_gap``,
    dual point ``Theta^{-1}`` projected on the dual feasible set) is at most
    ``tol``, scikit-learn's graphical-lasso rule (an absolute gap, so ``tol``
    means the same as scikit-learn's), or when it has reached its dtype's
    precision: no step passes the backtracking test, or the computed
    objective has not decreased for ``PATIENCE`` iterations (in float32 the
    objective is resolved to about ``1e-6 |F|`` and the gap to a few
    ``1e-7 d``). ``tol = 0`` runs at most ``max_iter`` iterations, stopping
    only at the precision limit.
    Returns the estimates, the trajectory ``Theta_1 .. Theta_T`` if asked
    (finished instances stay at their last iterate), and the iterations used.
    """
    N, d = S.shape[0], S.shape[-1]
    S = symmetrize(S)  # only the symmetric part of S enters the objective; iterates stay exactly symmetric
    Theta = diagonal_precision(S)
    diag = torch.diagonal(S, dim1=-2, dim2=-1)
    W = torch.diag_embed(diag)
    g = torch.log(diag).sum(-1) + d  # g(diag(1 / S_ii)) = sum log S_ii + tr(I)
    best = g  # the lowest objective F so far; F(Theta_0) = g(Theta_0), the penalty of a diagonal matrix is 0
    stale = torch.zeros(N, dtype=torch.long, device=S.device)  # iterations since F last went below best
    # First step 1 / L_0 with L_0 = max_i S_ii^2, the largest eigenvalue of the Hessian W (x) W of
    # -logdet at Theta_0 (= lambda_min(Theta_0)^2, the scale of the paper's safe step).
    step = diag.amax(-1) ** -2
    out = Theta.clone()
    iterations = torch.full((N,), max_iter, dtype=torch.long, device=S.device)
    converged = torch.zeros(N, dtype=torch.bool, device=S.device)  # duality gap at most tol
    index = torch.arange(N, device=S.device)  # batch positions of the running instances
    path = [] if trajectory else None

    def finish(done: torch.Tensor, count: int):
        """Write the instances flagged ``done`` to the output and drop them from the batch."""
        nonlocal index, Theta, S, W, g, best, stale, step
        rows = torch.nonzero(done).flatten()
        where = index.index_select(0, rows)
        out.index_copy_(0, where, Theta.index_select(0, rows))
        iterations[where] = count
        keep = torch.nonzero(~done).flatten()
        index = index.index_select(0, keep)
        Theta, S, W, g, best, stale, step = _select(keep, Theta, S, W, g, best, stale, step)

    for k in range(1, max_iter + 2):
        if tol > 0:
            done = glasso_duality_gap(Theta, S, alpha, W, g) <= tol  # Theta: the iterate after k - 1 steps
            if done.any():
                converged[index.index_select(0, torch.nonzero(done).flatten())] = True
                finish(done, k - 1)
                if index.numel() == 0:
                    break
        if k > max_iter:
            break
        Theta_new, L_new, g_new, step_used, accepted = _backtrack(Theta, S, W, g, step, alpha, shrink, max_backtrack)
        if not bool(accepted.all()):
            finish(~accepted, k - 1)  # no step passes the test: at the dtype's precision
            if index.numel() == 0:
                break
            keep = torch.nonzero(accepted).flatten()
            Theta_new, L_new, g_new, step_used = _select(keep, Theta_new, L_new, g_new, step_used)
        W_new = cholesky_inverse(L_new)
        # Barzilai-Borwein step for the next iteration; tr(D (W - W_new)) > 0 by strict convexity of g,
        # unless the iterate did not move. It may grow by at most MAX_GROWTH over the accepted step (a
        # tiny D in float32 makes the ratio noisy), so max_backtrack halvings always reach a safe step.
        D = Theta_new - Theta
        curvature = trace_product(D, W - W_new)
        bb = (D * D).sum((-1, -2)) / curvature
        bb = torch.minimum(bb, MAX_GROWTH * step_used)
        step = torch.where((curvature > 0) & torch.isfinite(bb), bb, step_used)
        Theta, W, g = Theta_new, W_new, g_new
        F = g + alpha * offdiag_l1(Theta)
        improved = F < best
        best = torch.minimum(F, best)
        stale = torch.where(improved, 0, stale + 1)
        if path is not None:
            path.append(Theta.clone() if index.numel() == N else out.clone().index_copy_(0, index, Theta))
        if bool((stale >= PATIENCE).any()):
            finish(stale >= PATIENCE, k)
            if index.numel() == 0:
                break
    if index.numel():
        out.index_copy_(0, index, Theta)
    if path is not None and not tol > 0:
        path.extend(out.clone() for _ in range(max_iter - len(path)))  # every instance stalled: T points all the same
    return Solution(out, path, iterations, converged=converged if tol > 0 else None)


class GISTA(ClassicalSolver):
    """G-ISTA (Rolfs et al. 2012) for the graphical lasso, batched over instances.

    Proximal gradient on ``-logdet(Theta) + tr(S Theta) + alpha ||Theta||_{1,off}``
    with Barzilai-Borwein initial steps and backtracking that keeps every
    iterate positive definite; starts from ``diag(1 / S_ii)`` (the paper's
    diagonal start, for an unpenalised diagonal).

    Hyper-parameters (see ``l2obench list``): ``alpha`` (penalty), ``tol``
    (duality gap at most ``tol``, as scikit-learn's), ``max_iter``, ``shrink``
    (backtracking factor), ``max_backtrack``.
    """

    def solve(self, observation, trajectory=False) -> Solution:
        with torch.no_grad():
            return gista(observation["S"], self.alpha, self.max_iter, self.tol, self.shrink, self.max_backtrack,
                         trajectory)
