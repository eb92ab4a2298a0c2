"""Helpers for testing plugins, for l2obench itself and for plugin authors.

- ``registered(plugin)``: a context manager giving a ``Registry`` with a plugin
  object registered on top of the installed plugins, for one test.
- ``check_solver(registry, name)``: the conformance check every solver should
  pass (in the spirit of scikit-learn's ``check_estimator``), on tiny problems of
  every family it declares.
- ``tiny_settings(registry, family)`` and ``smoke_context(...)``: a tiny problem
  and the ``FitContext`` a solver is fitted on, for a solver's own tests.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping

from l2obench.contracts import Budget, FitContext, Instances, Solution, check_estimate, hidden_from
from l2obench.errors import InvalidEstimateError, UsageError
from l2obench.registry import Registry

__all__ = ["TINY_BUDGET", "check_solver", "registered", "smoke_context", "tiny_settings"]

#: The training budget ``check_solver`` and ``smoke_context`` give a learned solver by default.
TINY_BUDGET = Budget(steps=50, batch_size=32, eval_every=25, patience=2)

# The suite whose smoke-scale problems are the tiny problems of their families (then any other).
TINY_SUITE = "smoke"


@contextmanager
def registered(plugin: Any, name: str = "test-plugin", entry_points: bool = True) -> Iterator[Registry]:
    """Register a plugin object in a fresh ``Registry``, for the duration of a ``with`` block.

    Parameters
    ----------
    plugin : module or object
        Has ``@l2obench.hookimpl`` functions (``l2obench.hookspecs``).
    name : str
        The plugin's name in the registry (and in ``l2obench list``).
    entry_points : bool
        Also load the installed plugins (the ``l2obench`` entry-point group,
        built-ins included), so that the plugin's solvers find their problem families.

    Yields
    ------
    Registry
        The registry with the plugin registered; nothing global is changed.

    Examples
    --------
    >>> with registered(my_plugin) as registry:          # doctest: +SKIP
    ...     check_solver(registry, "my_ista")
    """
    registry = Registry(entry_points=entry_points)
    registry.register_plugin(plugin, name=name, origin="test")
    yield registry


def tiny_settings(registry: Registry, family: str) -> dict[str, Any]:
    """Settings of a tiny problem of ``family``, that a solver fits and solves in about a second.

    A family offers tiny settings through a problem of a registered suite at the ``smoke``
    scale: the first such problem of the built-in ``smoke`` suite (one per built-in family),
    else of any other registered suite, resolved against the family's defaults.

    Raises
    ------
    UsageError
        When no registered suite has a problem of ``family`` at the smoke scale (then pass
        ``settings`` to ``check_solver`` / ``smoke_context``).
    """
    from l2obench.suites import plan

    registry.problem(family)  # an unknown family is an UnknownNameError
    names = sorted(registry.suites, key=lambda name: name != TINY_SUITE)
    for name in names:
        try:
            cells = plan(registry, name, registry.suite(name).definition, scale="smoke", problems=[family])
        except UsageError:  # no problem of that family, or a suite that does not plan here
            continue
        for cell in cells:
            if cell.family == family and not cell.sweep.get("problem"):
                return dict(cell.settings)
    raise UsageError(f"no registered suite has a problem of family {family!r} at the smoke scale, so it has no "
                     "tiny settings: pass settings=... (a small problem of that family)")


def smoke_context(registry: Registry, family: str, settings: Mapping[str, Any] | None = None,
                  budget: Budget | None = None, seed: int = 0, tune: Mapping[str, Any] | None = None,
                  solver: Any = None):
    """A ``FitContext`` (CPU) on a small problem of ``family``, and its test split.

    Parameters
    ----------
    registry : Registry
    family : str
        Registered problem family.
    settings : mapping, optional
        The problem's settings (over the family's defaults); default: ``tiny_settings``.
    budget : Budget, optional
        Training budget; default ``TINY_BUDGET``.
    seed : int
        Seed of the data and of the context.
    tune : mapping of str to list, optional
        Hyper-parameters a classical solver tunes on validation, with their grids.
    solver : Solver, optional
        The solver the context is for: the family's side information it does not declare
        (``l2obench.contracts.hidden_from``) is hidden from the splits, as the runner hides it.

    Returns
    -------
    (FitContext, Instances)
    """
    from l2obench.cache import Cache
    from l2obench.data import make_splits

    spec = registry.problem(family)
    settings = tiny_settings(registry, family) if settings is None else settings
    data = make_splits(spec, spec.resolve(settings), seed, Cache(enabled=False))
    if solver is not None:
        data = data.hiding(hidden_from(solver, data.family))
    context = FitContext(problem=data.family, train=data.splits["train"], val=data.splits["val"],
                         budget=budget or TINY_BUDGET, tune=dict(tune or {}), seed=seed,
                         draw_train=data.train_stream("cpu"))
    return context, data.splits["test"]


class _Observation(dict):
    """An observation that names the target when a solver asks it for a target key."""

    target_keys: frozenset = frozenset()

    def __missing__(self, key):
        if key in self.target_keys:
            raise AssertionError(f"solve read observation[{key!r}], the target: a solver sees only the observation "
                                 f"({', '.join(map(repr, self))})")
        raise KeyError(key)


def _observation(instances: Instances) -> _Observation:
    observation = _Observation(instances.observation())
    observation.target_keys = frozenset(instances.target)
    return observation


def check_solver(registry: Registry, solver: str, family: str | None = None,
                 settings: Mapping[str, Any] | None = None, params: Mapping[str, Any] | None = None,
                 budget: Budget | None = None, seed: int = 0, rtol: float = 1e-3,
                 atol: float = 1e-4) -> Solution | dict[str, Solution]:
    """Check that a registered solver keeps the solver contract, on tiny problems.

    For each family checked, ``fit`` on a tiny problem (``tiny_settings``; a classical solver's
    hyper-parameters are its defaults or ``params``, not tuned, to keep the check short), then:

    - ``fit`` returns the solver and leaves the splits' tensors unchanged;
    - ``solve`` sees the observation only (reading a target key fails, naming it), does not
      change it, and returns a ``Solution`` whose estimate is finite, of exactly the shape and
      dtype of the target tensor it estimates, and accepted by
      ``l2obench.contracts.check_estimate`` (the rule the runner applies);
      ``iterations`` and ``converged`` (if any) hold one integer / boolean per instance,
      ``stop_distribution`` (if any) one row per instance, ``extras`` one entry per instance;
      a trajectory (if any) is a list of iterates shaped like the estimate, ending at it;
    - determinism: a second fit under the same seed (with torch's global generator moved)
      solves identically;
    - the state survives ``torch.save`` / ``torch.load(weights_only=True)`` into a new
      instance (same estimate, same extras);
    - a batch of one: the first and the last instance, each solved alone, match their rows of
      the batched solve within ``rtol`` / ``atol`` (``atol`` relative to the largest entry).

    Parameters
    ----------
    registry : Registry
        Where the solver and the problem families are registered (see ``registered``).
    solver : str
        Registered solver name.
    family : str, optional
        Check this family only; default: every family the solver declares (each must be registered).
    settings : mapping, optional
        Problem settings (over the family's defaults) of ``family``; default: ``tiny_settings``.
    params : mapping, optional
        Hyper-parameters of the solver (over its defaults for the family).
    budget : Budget, optional
        Training budget of a learned solver; default ``TINY_BUDGET``.
    seed : int
        Seed of the data and of the fit.
    rtol, atol : float
        Tolerance of the batch-of-one comparison.

    Returns
    -------
    Solution or dict of str to Solution
        The solution of the test split: for ``family`` when given, else by family.

    Raises
    ------
    AssertionError
        Naming the first broken rule.
    """
    spec = registry.solver(solver)
    if family is not None:
        return _check_family(registry, spec, family, settings, params, budget, seed, rtol, atol)
    if settings is not None:
        raise TypeError("check_solver: settings belong to one family; pass family=... with them")
    missing = [name for name in spec.families if name not in registry.problems]
    assert spec.families, f"{solver} declares no problem family"
    assert not missing, f"{solver} declares families that no loaded plugin registers: {', '.join(missing)}"
    return {name: _check_family(registry, spec, name, None, params, budget, seed, rtol, atol)
            for name in spec.families}


def _check_family(registry, spec, family, settings, params, budget, seed, rtol, atol) -> Solution:
    import io

    import torch

    name = spec.name
    assert spec.supports(family), f"{name} does not declare support for {family}"
    params = dict(params or {})

    def fitted(global_seed: int):
        model = spec.build(family, **params)
        context, test = smoke_context(registry, family, settings, budget, seed, solver=model)
        before = _snapshot(context.train, context.val, test)
        torch.manual_seed(global_seed)  # a solver must draw from its own seeded generators, not torch's
        assert model.fit(context) is model, f"{name}.fit must return self"
        assert _same(before, _snapshot(context.train, context.val, test)), \
            f"{name}.fit changed the training or validation data in place"
        return model, context, test

    model, context, test = fitted(1)
    observation = _observation(test)
    assert not set(observation) & set(test.target), f"the {family} observation must not hold the target"
    before = _snapshot(test)
    solution = model.solve(observation)
    assert _same(before, _snapshot(test)), f"{name}.solve changed the observation in place"
    _check_solution(name, context.problem, solution, test)

    with_trajectory = model.solve(_observation(test), trajectory=True)
    if with_trajectory.trajectory is not None:
        assert isinstance(with_trajectory.trajectory, list) and with_trajectory.trajectory, \
            f"{name}: a trajectory is a non-empty list of iterates"
        for t, point in enumerate(with_trajectory.trajectory):
            assert point.shape == solution.estimate.shape and point.dtype == solution.estimate.dtype, \
                f"{name}: trajectory[{t}] has shape {tuple(point.shape)} {point.dtype}, the estimate " \
                f"{tuple(solution.estimate.shape)} {solution.estimate.dtype}"
        assert torch.allclose(with_trajectory.trajectory[-1], with_trajectory.estimate), \
            f"{name}: the last trajectory point must be the estimate"

    again, _, _ = fitted(2)
    assert _close(again.solve(_observation(test)).estimate, solution.estimate, 1e-5, 1e-6), \
        f"{name} is not deterministic: two fits under seed {seed} solve differently"

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    clone = spec.build(family, **params).load_state_dict(torch.load(buffer, weights_only=True))
    reloaded = clone.solve(_observation(test))
    assert _close(reloaded.estimate, solution.estimate, 1e-5, 1e-6), f"a reloaded {name} must solve identically"
    assert reloaded.extras.keys() == solution.extras.keys() and all(
        _close(reloaded.extras[k], v, 1e-5, 1e-6) for k, v in solution.extras.items()), \
        f"a reloaded {name} must expose the same extras"

    scale = float(solution.estimate.abs().max()) or 1.0
    for i in sorted({0, len(test) - 1}):
        one = test.subset(slice(i, i + 1))
        alone = model.solve(_observation(one))
        _check_solution(f"{name} (a batch of one)", context.problem, alone, one)
        assert _close(alone.estimate, solution.estimate[i:i + 1], rtol, atol * scale), \
            f"{name}: instance {i} solved alone differs from its row of the batched solve " \
            f"(largest difference {float((alone.estimate - solution.estimate[i:i + 1]).abs().max()):.3g})"
    return solution


def _check_solution(name: str, problem, solution: Solution, instances: Instances) -> None:
    """The shapes and dtypes of a ``Solution`` of ``instances``."""
    import torch

    assert isinstance(solution, Solution), f"{name}.solve must return an l2obench.contracts.Solution"
    estimate, n = solution.estimate, len(instances)
    try:
        check_estimate(problem, estimate, instances)
    except InvalidEstimateError as exc:
        raise AssertionError(f"{name}: {exc}") from None
    like = [key for key, value in instances.target.items() if value.shape == estimate.shape]
    assert like, f"{name}: an estimate of shape {tuple(estimate.shape)} matches no target tensor " \
                 f"({', '.join(f'{k} {tuple(v.shape)}' for k, v in instances.target.items())})"
    dtype = instances.target[like[0]].dtype
    assert estimate.dtype == dtype, f"{name}: the estimate is {estimate.dtype}, the target {like[0]!r} {dtype}"
    assert torch.isfinite(estimate).all(), f"{name}: the estimate must be finite"
    for field, kind in (("iterations", "integer"), ("converged", "boolean")):
        value = getattr(solution, field)
        if value is None:
            continue
        assert torch.is_tensor(value) and tuple(value.shape) == (n,), \
            f"{name}: Solution.{field} must be a tensor of shape ({n},), one per instance"
        ok = value.dtype == torch.bool if kind == "boolean" else not (value.is_floating_point() or value.is_complex())
        assert ok, f"{name}: Solution.{field} must be {kind}, got {value.dtype}"
    if solution.stop_distribution is not None:
        stops = solution.stop_distribution
        assert torch.is_tensor(stops) and stops.dim() == 2 and stops.shape[0] == n and stops.is_floating_point(), \
            f"{name}: Solution.stop_distribution must be a float tensor (N, T), one row per instance"
    for key, value in solution.extras.items():
        assert torch.is_tensor(value) and value.shape[:1] == (n,), \
            f"{name}: extras[{key!r}] must be a tensor with one entry per instance"


def _snapshot(*splits: Instances) -> list:
    return [value.clone() for split in splits for value in split.tensors().values()]


def _same(a: list, b: list) -> bool:
    import torch

    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def _close(a, b, rtol: float, atol: float) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=rtol, atol=atol, equal_nan=False))
