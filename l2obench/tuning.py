"""Classical solvers: hyper-parameters tuned by grid search on the validation split.

Classical solvers get the same chance as learned ones: whatever a solver's spec
gives a grid for, and the suite did not fix, is searched on validation, and the
search time is reported as the solver's fit time.
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Mapping, Sequence

from l2obench.contracts import FitContext, Solver
from l2obench.errors import DivergedError


def grid_points(tune: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Cartesian product of the grids: one dict per point (``[{}]`` for no grid)."""
    names = list(tune)
    return [dict(zip(names, values)) for values in itertools.product(*(tune[n] for n in names))]


class ClassicalSolver(Solver):
    """A solver whose ``fit`` tunes hyper-parameters on the validation split.

    The score of a grid point is the sum over validation instances of the
    problem's ``loss``; the lowest wins (the first on ties). Attributes set by
    ``fit``: ``tuning_``, the list of evaluated points with their ``val_loss``.
    """

    def fit(self, context: FitContext) -> "ClassicalSolver":
        import torch

        points = grid_points(context.tune)
        if points == [{}]:
            self.tuning_ = []
            return self
        observation, target = context.val.observation(), context.val.target
        table, best = [], None
        with torch.no_grad():
            for point in points:
                self.set_params(**point)
                loss = float(context.problem.loss(self.solve(observation).estimate, target).sum())
                table.append({**point, "val_loss": loss})
                if math.isfinite(loss) and (best is None or loss < best[1]):
                    best = (point, loss)
        if best is None:
            raise DivergedError(f"every tuning point diverged on validation: {points}")
        self.set_params(**best[0])
        self.tuning_ = table
        context.log["tuning"] = table
        return self
