"""Classical solvers: hyper-parameters tuned by grid search on the validation split.

Classical solvers get the same chance as learned ones: whatever a solver's spec
gives a grid for, and the suite did not fix, is searched on validation, and the
search time is reported as the solver's fit time; a progress bar
(``FitContext.progress``) counts the grid's points. ``fit`` also records the
family's data term (``l2obench.datafits``) by name, so that ``solve`` can
build it from an observation and the name survives ``state_dict``.
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
    ``fit``: ``data_term_``, the name of the family's data term
    (``ProblemFamily.data_term``, ``None`` if it names none; saved by
    ``state_dict``), and ``tuning_``, the list of evaluated points with their
    ``val_loss``.

    A subclass that solves through a data term (``l2obench.datafits``) lists
    the methods it uses in ``needs`` and builds it with ``data_term_for``.
    """

    #: Methods ``solve`` uses of the data term (e.g. ``("gradient", "prox_l1")``); empty: it uses none.
    needs: tuple[str, ...] = ()

    def fit(self, context: FitContext) -> "ClassicalSolver":
        import torch

        self.with_data_term(getattr(context.problem, "data_term", None))
        points = grid_points(context.tune)
        if points == [{}]:
            self.tuning_ = []
            return self
        observation, target = context.val.observation(), context.val.target
        losses, lowest = [], math.inf
        bar = context.progress(total=len(points), desc=f"tuning {type(self).__name__}") if context.progress else None
        try:
            with torch.no_grad():
                for point in points:
                    self.set_params(**point)
                    losses.append(context.problem.loss(self.solve(observation).estimate, target))
                    if bar is not None:
                        total = float(losses[-1].sum())
                        lowest = min(lowest, total) if math.isfinite(total) else lowest
                        bar.update(1)
                        bar.set_postfix(best=f"{lowest:.4g}" if math.isfinite(lowest) else "-")
        finally:
            if bar is not None:
                bar.close()
        self.tuning_ = self.choose(points, losses, observation)
        context.log["tuning"] = self.tuning_
        return self

    def choose(self, points: list[dict[str, Any]], losses: list[Any], observation: Mapping[str, Any]) -> list[dict]:
        """Set the grid point of the lowest validation loss summed over instances (the first on ties).

        ``losses[i]`` holds the validation instances' losses at ``points[i]``; returns the
        tuning table (each point with its ``val_loss``). A subclass may choose otherwise
        (e.g. per noise level, ``l2obench_plugins.denoisers``).

        Raises
        ------
        DivergedError
            If every point's loss is infinite or NaN.
        """
        table, best = [], None
        for point, loss in zip(points, losses):
            total = float(loss.sum())
            table.append({**point, "val_loss": total})
            if math.isfinite(total) and (best is None or total < best[1]):
                best = (point, total)
        if best is None:
            raise DivergedError(f"every tuning point diverged on validation: {points}")
        self.set_params(**best[0])
        return table

    def with_data_term(self, name: str | None) -> "ClassicalSolver":
        """Solve with the data term ``name`` (``l2obench.datafits.DATA_TERMS``); ``fit`` calls it.

        Lets a solver that was not fitted solve, e.g. ``APF(...).with_data_term("logdet")``.
        Returns ``self``.

        Raises
        ------
        ValueError
            If the solver ``needs`` a data term and ``name`` is ``None`` or unknown.
        NotImplementedError
            If the data term lacks a method in ``needs`` (the message names it).
        """
        if self.needs:
            from l2obench.datafits import data_term, require

            if name is None:
                raise ValueError(f"{type(self).__name__} solves through a data term, but the problem family "
                                 "names none (set ProblemFamily.data_term)")
            require(data_term(name), self.needs, type(self).__name__)
        self.data_term_ = name
        return self

    def data_term_class(self) -> type:
        """The class of the data term named at ``fit`` (checked against ``needs``).

        Raises
        ------
        RuntimeError
            If the solver knows no data term yet: ``fit(context)`` or
            ``load_state_dict(state)`` (or ``with_data_term(name)``) must come first.
        """
        from l2obench.datafits import data_term, require

        name = getattr(self, "data_term_", None)
        if name is None:
            solver = type(self).__name__
            if hasattr(self, "data_term_"):
                raise RuntimeError(f"{solver} knows no data term: its fitted state names none (a family without "
                                   "ProblemFamily.data_term, or a state saved before data terms); fit it again")
            raise RuntimeError(f"{solver}.solve needs the problem's data term: call fit(context) or "
                               "load_state_dict(state) first, or with_data_term(name) to solve without fitting")
        cls = data_term(name)
        require(cls, self.needs, type(self).__name__)
        return cls

    def data_term_for(self, observation: Mapping[str, Any], dtype=None):
        """The data term of ``observation`` (see ``data_term_class``) in ``dtype`` (default: the observation's)."""
        return self.data_term_class().from_observation(observation, dtype=dtype)

    def state_dict(self) -> dict[str, Any]:
        """Hyper-parameters and the data term's name (``""`` when none)."""
        return {**super().state_dict(), "data_term": getattr(self, "data_term_", None) or ""}

    def load_state_dict(self, state: Mapping[str, Any]) -> "ClassicalSolver":
        super().load_state_dict(state)
        self.data_term_ = state.get("data_term") or None
        return self
