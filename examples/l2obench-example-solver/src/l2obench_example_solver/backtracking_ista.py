"""ISTA with a backtracking line search, batched over instances.

For ``min_x L(x) + lam ||x||_1`` with ``L`` the family's smooth data term
(least squares for ``lasso`` and ``slr``), each instance keeps its own step
``t``: starting from ``1 / c`` (``c`` the largest squared column norm, a lower
bound of the Lipschitz constant, so an optimistic first step), a trial point
``z = prox_{t lam ||.||_1}(x - t grad L(x))`` is accepted when the quadratic
upper bound holds,

    L(z) <= L(x) + <grad L(x), z - x> + ||z - x||^2 / (2 t),

else ``t`` shrinks by ``shrink`` and the trial is repeated (Beck & Teboulle
2009, section 3.1). An instance stops when its iterate moves by at most
``tol * max(||x||, 1)``; every operation is per instance, so a batch solves
each instance exactly as it would alone.
"""
from __future__ import annotations

import torch

from l2obench.contracts import Solution
from l2obench.tuning import ClassicalSolver

# Trial steps per iteration at most: shrink^40 is below 1e-12 for shrink = 0.5.
MAX_BACKTRACKS = 40


class BacktrackingISTA(ClassicalSolver):
    """ISTA with backtracking; ``lam`` tuned on validation (see the spec's grid)."""

    needs = ("start", "value", "gradient", "prox_l1", "curvature_scale", "finish")

    def solve(self, observation, trajectory=False) -> Solution:
        term = self.data_term_for(observation)
        x = term.start()
        n = x.shape[0]
        step = 1.0 / term.curvature_scale()
        iterations = torch.zeros(n, dtype=torch.long, device=x.device)
        converged = torch.zeros(n, dtype=torch.bool, device=x.device)
        path = []
        for _ in range(self.max_iter):
            active = ~converged
            value, grad = term.value(x), term.gradient(x)
            z, accepted = x, torch.zeros_like(active)
            for _ in range(MAX_BACKTRACKS):
                trial = term.prox_l1(x - step[:, None] * grad, step * self.lam)
                d = trial - x
                bound = value + (grad * d).sum(-1) + (d * d).sum(-1) / (2 * step)
                ok = ~accepted & (term.value(trial) <= bound * (1 + 1e-6) + 1e-12)
                z = torch.where(ok[:, None], trial, z)
                accepted |= ok
                if bool(accepted[active].all()):
                    break
                step = torch.where(accepted, step, step * self.shrink)
            moved = (z - x).norm(dim=-1)
            x = torch.where(active[:, None], z, x)
            iterations += active.long()
            if self.tol > 0:
                converged |= active & (moved <= self.tol * x.norm(dim=-1).clamp(min=1.0))
            if trajectory:
                path.append(term.finish(x))
            if bool(converged.all()):
                break
        return Solution(term.finish(x), path if trajectory else None, iterations,
                        converged=converged if self.tol > 0 else None)
