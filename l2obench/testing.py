"""Helpers for testing plugins, for l2obench itself and for plugin authors.

``registered(plugin)`` registers a plugin object for the duration of a test;
``check_solver(...)`` is the conformance check every solver should pass.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Mapping

from l2obench.contracts import Budget, FitContext, Solution, check_estimate
from l2obench.errors import InvalidEstimateError
from l2obench.registry import Registry


@contextmanager
def registered(plugin: Any, name: str = "test-plugin", entry_points: bool = True):
    """A fresh ``Registry`` with ``plugin`` registered on top of the installed ones."""
    registry = Registry(entry_points=entry_points)
    registry.register_plugin(plugin, name=name, origin="test")
    yield registry


def smoke_context(registry: Registry, family: str, settings: Mapping[str, Any] | None = None,
                  budget: Budget | None = None, seed: int = 0, tune: Mapping[str, Any] | None = None):
    """A small ``FitContext`` and test split for ``family`` (CPU), for quick checks."""
    from l2obench.cache import Cache
    from l2obench.data import make_splits

    spec = registry.problem(family)
    data = make_splits(spec, spec.resolve(settings or {}), seed, Cache(enabled=False))
    context = FitContext(problem=data.family, train=data.splits["train"], val=data.splits["val"],
                         budget=budget or Budget(steps=50, batch_size=32, eval_every=25, patience=2),
                         tune=dict(tune or {}), seed=seed, draw_train=data.train_stream("cpu"))
    return context, data.splits["test"]


def check_solver(registry: Registry, solver: str, family: str, settings: Mapping[str, Any] | None = None,
                 params: Mapping[str, Any] | None = None, budget: Budget | None = None) -> Solution:
    """Fit and solve on a small problem and check the solver contract.

    Checks that ``fit`` returns the solver, ``solve`` returns a finite
    estimate that ``l2obench.contracts.check_estimate`` accepts (floating
    point, one row per instance, shaped so that the family's ``loss`` gives
    one value per instance, as the runner requires) and sees no target,
    extras (if any) hold one entry per instance, trajectories (if any) end at the estimate,
    and the state survives a ``torch.save``/``torch.load(weights_only=True)``
    round trip (same estimate, same extras).
    """
    import io

    import torch

    spec = registry.solver(solver)
    if not spec.supports(family):
        raise AssertionError(f"{solver} does not declare support for {family}")
    context, test = smoke_context(registry, family, settings, budget)
    model = spec.build(family, **dict(params or {}))
    assert model.fit(context) is model, "fit must return self"
    observation = test.observation()
    assert not set(observation) & set(test.target), "the observation must not hold the target"
    solution = model.solve(observation)
    assert isinstance(solution, Solution), "solve must return a Solution"
    try:
        check_estimate(context.problem, solution.estimate, test)  # the rule the runner applies
    except InvalidEstimateError as exc:
        raise AssertionError(str(exc)) from None
    assert torch.isfinite(solution.estimate).all(), "estimate must be finite"
    for key, value in solution.extras.items():
        assert torch.is_tensor(value) and value.shape[0] == len(test), \
            f"extras[{key!r}] must be a tensor with one entry per instance"
    with_trajectory = model.solve(observation, trajectory=True)
    if with_trajectory.trajectory is not None:
        assert torch.allclose(with_trajectory.trajectory[-1], with_trajectory.estimate), \
            "the last trajectory point must be the estimate"
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    clone = spec.build(family, **dict(params or {})).load_state_dict(torch.load(buffer, weights_only=True))
    again = clone.solve(observation)
    assert torch.allclose(again.estimate, solution.estimate, atol=1e-6), "a reloaded solver must solve identically"
    assert again.extras.keys() == solution.extras.keys() and all(
        torch.allclose(again.extras[k], v, atol=1e-6) for k, v in solution.extras.items()), \
        "a reloaded solver must expose the same extras"
    return solution
