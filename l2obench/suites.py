"""Suites: parsing, validation and planning into cells.

A suite (built-in, or a TOML/JSON file) has this structure::

    description = "..."
    default_scale = "smoke"             # optional: the scale run without --scale (default: small)
    seeds = [0, 1]                      # or {smoke = [0], small = [0, 1], paper = [0, 1, 2]}
    [budget]                            # training budget of learned solvers (Budget fields)
    steps = 3000
    [budget.scales.smoke]               # overrides at one scale
    steps = 100
    [[problems]]
    family = "lasso"
    label = "cs-mixed"                  # optional, defaults to the family name
    settings = { m = 250, n = 500 }
    scales = { smoke = { m = 20, n = 40 } }
    only_scales = ["small", "paper"]    # optional: the scales this entry runs at (default: all)
    [[solvers]]
    solver = "fista"
    label = "FISTA (T=20)"              # optional, defaults to the solver name
    params = { max_iter = 20, tol = 0.0 }
    scales = { smoke = { max_iter = 5 } }
    budget = { batch_size = 16 }        # optional: this solver's training budget, over the suite's
    problems = ["cs-mixed"]             # optional: problem labels or families it runs on
    sweep = { max_iter = [10, 20, 50], scales = { smoke = { max_iter = [5, 10] } } }
                                        # optional: one cell per value (problems too: settings)

A solver entry runs on every problem of the suite whose family it supports
(or on those its ``problems`` names), so one suite can mix families.
A ``sweep`` table (problem or solver entry) maps parameters or settings to
lists of values; every combination of values becomes its own cell (labelled
``"<label> [key=value]"`` in the leaderboard; results carry the values in the
``sweep`` column, see ``l2obench.results.expand_sweep``). A swept key may not
also be set in ``params`` / ``settings`` at that scale; a swept solver
parameter is fixed (never tuned).
Planning checks every name, every parameter, setting and budget value (against
its ``Param``) and every solver/problem pairing before any computation, and
yields one ``Cell`` per problem x seed x solver. A solver's parameters are
resolved per problem family (a ``Param``'s ``family_defaults``).
"""
from __future__ import annotations

import itertools
import json
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from l2obench.contracts import Budget
from l2obench.errors import SuiteFileError, UnknownNameError, UsageError
from l2obench.data import data_settings
from l2obench.hashing import canonical_json, content_key
from l2obench.memory import available_bytes, check_memory
from l2obench.specs import InvalidValueError

SCALES = ("smoke", "small", "paper")
DEFAULT_SCALE = "small"

_TOP_KEYS = {"description", "default_scale", "seeds", "budget", "problems", "solvers"}
_PROBLEM_KEYS = {"family", "label", "settings", "scales", "only_scales", "sweep"}
_SOLVER_KEYS = {"solver", "label", "params", "scales", "only_scales", "budget", "problems", "sweep"}
_BUDGET_KEYS = {f.name for f in fields(Budget)} | {"scales"}


@dataclass(frozen=True)
class Cell:
    """One unit of work: a problem setting x a solver x a seed.

    ``settings`` and ``params`` are fully resolved against the specs'
    defaults (``params`` for the problem's family); ``fixed_params`` are
    those the suite set (never tuned). ``sweep`` holds the values this cell
    takes of the entries' swept keys, ``{"problem": {...}, "solver": {...}}``
    (parts without a sweep left out); labels are the entries' own.
    """

    suite: str
    scale: str
    problem_label: str
    family: str
    settings: Mapping[str, Any]
    solver_label: str
    solver: str
    params: Mapping[str, Any]
    fixed_params: tuple[str, ...]
    learned: bool
    seed: int
    budget: Budget
    sweep: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def data_key(self) -> str:
        """Identity of the data this cell uses (same for every solver)."""
        return content_key("data", self.family, data_settings(self.settings), self.seed)

    @property
    def cell_id(self) -> str:
        return content_key("cell", self.data_key, self.solver, dict(self.params), self.fixed_params,
                           vars(self.budget) if self.learned else None)

    def describe(self) -> str:
        problem = sweep_label(self.problem_label, self.sweep.get("problem", {}))
        solver = sweep_label(self.solver_label, self.sweep.get("solver", {}))
        return f"{problem} x {solver} x seed {self.seed}"


def sweep_label(label: str, values: Mapping[str, Any]) -> str:
    """``label`` with swept values appended by key, e.g. ``"GD layer [hidden=16, k=4]"`` (``label`` when none)."""
    if not values:
        return label
    shown = (f"{key}={value:g}" if isinstance(value, float) else
             f"{key}={value}" if isinstance(value, (int, str)) else f"{key}={canonical_json(value)}"
             for key, value in sorted(values.items()))
    return f"{label} [{', '.join(shown)}]"


def load_suite_file(path: str | Path) -> dict:
    """Read a suite from a ``.toml`` or ``.json`` file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SuiteFileError(f"cannot read suite file {path}: {exc.strerror}") from exc
    language = "JSON" if path.suffix == ".json" else "TOML"  # any other name is read as TOML
    try:
        if language == "JSON":
            return json.loads(text)
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib
        return tomllib.loads(text)
    except ValueError as exc:
        raise SuiteFileError(f"suite file {path} is not valid {language}: {exc}") from exc


def _check_keys(where: str, entry: Any, allowed: set[str], required: Sequence[str] = ()) -> None:
    if not isinstance(entry, Mapping):
        raise SuiteFileError(f"{where}: expected a table, got {type(entry).__name__}")
    for key in entry:
        if key not in allowed:
            raise SuiteFileError(f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")
    for key in required:
        if key not in entry:
            raise SuiteFileError(f"{where}: missing key {key!r}")


def _at_scale(where: str, base: Mapping | None, scales: Any, scale: str) -> dict:
    """``base`` updated by the overrides that ``scales`` gives for ``scale``."""
    scales = scales or {}
    if not isinstance(scales, Mapping):
        raise SuiteFileError(f"{where}.scales: expected a table of scales")
    for name, overrides in scales.items():
        if name not in SCALES:
            raise SuiteFileError(f"{where}.scales: unknown scale {name!r} (scales: {', '.join(SCALES)})")
        if not isinstance(overrides, Mapping):
            raise SuiteFileError(f"{where}.scales.{name}: expected a table")
    return {**dict(base or {}), **dict(scales.get(scale) or {})}


def _origin(where: str, table: str | None, entry: Mapping, scale: str, key: str) -> str:
    """Where the value of ``key`` at ``scale`` is written: ``entry``'s scale overrides, else ``table``."""
    if key in ((entry.get("scales") or {}).get(scale) or {}):
        return f"{where}.scales.{scale}.{key}"
    return f"{where}.{table}.{key}" if table else f"{where}.{key}"


def _budget_at(where: str, entry: Any, scale: str) -> dict:
    """The ``Budget`` fields a (suite or solver) ``budget`` table sets at ``scale``, checked."""
    entry = entry or {}
    _check_keys(where, entry, _BUDGET_KEYS)
    values = _at_scale(where, {k: v for k, v in entry.items() if k != "scales"}, entry.get("scales"), scale)
    _check_keys(f"{where}.scales.{scale}", values, _BUDGET_KEYS - {"scales"})
    for key, value in values.items():
        try:
            Budget.params[key].check(key, value)
        except InvalidValueError as exc:
            raise SuiteFileError(f"{_origin(where, None, entry, scale, key)}: {exc.reason}") from exc
    return values


def _overrides_at(where: str, spec, entry: Mapping, table: str, scale: str) -> dict:
    """The values ``entry[table]`` sets at ``scale``, each checked against ``spec``'s parameters."""
    values = _at_scale(where, entry.get(table), entry.get("scales"), scale)
    try:
        spec.resolve(values)
    except UnknownNameError as exc:
        raise SuiteFileError(f"{where}: {exc}") from exc
    except InvalidValueError as exc:
        raise SuiteFileError(f"{_origin(where, table, entry, scale, exc.name)}: {exc.reason}") from exc
    return values


def _sweep_at(where: str, spec, entry: Mapping, table: str, scale: str) -> list[dict]:
    """The points of ``entry``'s ``sweep`` at ``scale`` (every combination of the swept values),
    each value checked against ``spec``'s parameters; ``[{}]`` without a sweep."""
    sweep = entry.get("sweep")
    if sweep is None:
        return [{}]
    where = f"{where}.sweep"
    if not isinstance(sweep, Mapping):
        raise SuiteFileError(f"{where}: expected a table of value lists, e.g. sweep = {{ k = [1, 2, 4] }}")
    lists = _at_scale(where, {k: v for k, v in sweep.items() if k != "scales"}, sweep.get("scales"), scale)
    fixed = _at_scale(where, entry.get(table), entry.get("scales"), scale)
    for key, values in lists.items():
        origin = _origin(where, None, sweep, scale, key)
        if key not in spec.params:
            raise SuiteFileError(f"{origin}: {UnknownNameError(f'parameter of {spec.name}', key, spec.params)}")
        if not isinstance(values, list) or not values:
            raise SuiteFileError(f"{origin}: expected a non-empty list of values, got {values!r}")
        if key in fixed:
            raise SuiteFileError(f"{origin}: {key!r} is also set in {table} (at scale {scale}); set it in one place")
        for i, value in enumerate(values):
            try:
                spec.params[key].check(key, value)
            except InvalidValueError as exc:
                raise SuiteFileError(f"{origin}[{i}]: {exc.reason}") from exc
        if len({canonical_json(v) for v in values}) != len(values):
            raise SuiteFileError(f"{origin}: a value is listed twice in {values!r}")
    return [dict(zip(lists, point)) for point in itertools.product(*lists.values())]


def default_scale(suite: str, definition: Mapping[str, Any]) -> str:
    """The scale a suite runs at when none is given: its ``default_scale``, else ``DEFAULT_SCALE``.

    Raises
    ------
    SuiteFileError
        When ``default_scale`` is not one of ``SCALES``.
    """
    scale = definition.get("default_scale", DEFAULT_SCALE) if isinstance(definition, Mapping) else DEFAULT_SCALE
    if scale not in SCALES:
        raise SuiteFileError(f"{suite}.default_scale: expected one of {', '.join(SCALES)}, got {scale!r}")
    return scale


def _runs_at(where: str, entry: Mapping, scale: str) -> bool:
    """Whether a problem or solver entry runs at ``scale`` (its ``only_scales``)."""
    only = entry.get("only_scales")
    if only is None:
        return True
    if not isinstance(only, list) or not all(name in SCALES for name in only):
        raise SuiteFileError(f"{where}.only_scales: expected a list of scales among {', '.join(SCALES)}")
    return scale in only


def _seeds(where: str, seeds: Any, scale: str) -> list[int]:
    if isinstance(seeds, Mapping):
        for name in seeds:
            if name not in SCALES:
                raise SuiteFileError(f"{where}.seeds: unknown scale {name!r} (scales: {', '.join(SCALES)})")
        seeds = seeds.get(scale, [0])
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise SuiteFileError(f"{where}.seeds: expected a list of integers")
    return _in_seed_range(f"{where}.seeds", seeds)


MAX_SEED = 2**63 - 1  # the results' seed column is int64


def _in_seed_range(where: str, seeds: Sequence[int]) -> list[int]:
    outside = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if outside:
        raise SuiteFileError(f"{where}: seed {outside[0]} is outside 0 .. 2**63 - 1 (results store seeds as int64)")
    return list(seeds)


def plan(registry, suite: str, definition: Mapping[str, Any], scale: str = DEFAULT_SCALE,
         seeds: Sequence[int] | None = None, solvers: Sequence[str] | None = None,
         problems: Sequence[str] | None = None) -> list[Cell]:
    """Validate a suite and expand it into cells.

    Parameters
    ----------
    registry : l2obench.registry.Registry
        Where problem families and solvers are looked up.
    suite : str
        Suite name (or file path), used in messages and results.
    definition : mapping
        The suite body (see the module docstring).
    scale : {"smoke", "small", "paper"}
    seeds, solvers, problems : sequence, optional
        Restrict the run to these seeds, solver names or labels, problem
        family names or labels.

    Returns
    -------
    list of Cell
        Ordered problem, seed, solver so that data are generated once.
    """
    if scale not in SCALES:
        raise UsageError(f"unknown scale {scale!r}; scales: {', '.join(SCALES)}")
    _check_keys(suite, definition, _TOP_KEYS, required=("problems", "solvers"))
    default_scale(suite, definition)
    budget_values = _budget_at(f"{suite}.budget", definition.get("budget"), scale)
    suite_seeds = _seeds(suite, definition.get("seeds", [0]), scale)
    run_seeds = _in_seed_range("--seeds", seeds) if seeds else suite_seeds

    problem_rows, problem_labels = [], {}
    available = available_bytes()
    for i, entry in enumerate(definition["problems"]):
        where = f"{suite}.problems[{i}]"
        with _labelled(entry):
            _check_keys(where, entry, _PROBLEM_KEYS, required=("family",))
            if not _runs_at(where, entry, scale):
                continue
            with _located(where):
                spec = registry.problem(entry["family"])
            overrides = _overrides_at(where, spec, entry, "settings", scale)
            for point in _sweep_at(where, spec, entry, "settings", scale):
                settings = spec.resolve({**overrides, **point})
                try:  # the family validates its settings' values, and their memory, before any compute
                    check_memory(spec.build(**settings), available)
                except ValueError as exc:
                    raise SuiteFileError(f"{where}.settings{sweep_label('', point)}: {exc}") from exc
                problem_rows.append((entry.get("label", spec.name), spec, settings, point))
            _claim_label(f"{suite}.problems", problem_labels, i, entry.get("label", spec.name), None)
    declared = {name for entry in definition["problems"] if isinstance(entry, Mapping)
                for name in (entry.get("label"), entry.get("family")) if isinstance(name, str)}
    solver_rows, solver_labels = [], {}
    for i, entry in enumerate(definition["solvers"]):
        where = f"{suite}.solvers[{i}]"
        with _labelled(entry):
            _check_keys(where, entry, _SOLVER_KEYS, required=("solver",))
            if not _runs_at(where, entry, scale):
                continue
            with _located(where):
                spec = registry.solver(entry["solver"])
            overrides = _overrides_at(where, spec, entry, "params", scale)
            label = entry.get("label", spec.name)
            own = Budget(**{**budget_values, **_budget_at(f"{where}.budget", entry.get("budget"), scale)})
            targets = _solver_problems(where, entry, label, spec, problem_rows, declared)
            _claim_label(f"{suite}.solvers", solver_labels, i, label, targets)
            solver_rows += [(label, spec, {**overrides, **point}, own, targets, point)
                            for point in _sweep_at(where, spec, entry, "params", scale)]

    problem_rows = _select("problem", problems, problem_rows, lambda row: (row[0], row[1].name))
    solver_rows = _select("solver", solvers, solver_rows, lambda row: (row[0], row[1].name))
    cells = [
        Cell(suite, scale, plabel, pspec.name, settings, slabel, sspec.name,
             sspec.resolve(overrides, family=pspec.name), tuple(sorted(overrides)), sspec.learned, seed,
             solver_budget, {part: values for part, values in (("problem", ppoint), ("solver", spoint)) if values})
        for plabel, pspec, settings, ppoint in problem_rows
        for seed in run_seeds
        for slabel, sspec, overrides, solver_budget, targets, spoint in solver_rows
        if plabel in targets
    ]
    _refuse_duplicates(suite, cells)
    return cells


def _refuse_duplicates(suite: str, cells: Sequence[Cell]) -> None:
    """Refuse two cells that compute the same thing under different labels.

    A cell is stored by what it computes (``cell_id``: the family, settings and seed, the solver,
    its parameters and budget), so two problem entries with the same settings, or two solver
    entries with the same parameters, would run one cell twice and keep it once, under one of
    the labels: a leaderboard row would silently stand for both. A ``SuiteFileError`` names the
    two. Two problem entries may share settings when no solver runs the same way on both (a swept
    problem whose sweep passes through another entry's settings, say).
    """
    seen: dict[str, Cell] = {}
    for cell in cells:
        other = seen.setdefault(cell.cell_id, cell)
        if other is not cell:
            what = "parameters and budget" if cell.learned else "parameters"
            raise SuiteFileError(
                f"{suite}: {cell.describe()!r} computes the same cell as {other.describe()!r} (family "
                f"{cell.family} with the same settings and seed, solver {cell.solver} with the same {what}); "
                "it would be stored once, under one label: drop one entry, or make them differ")


def with_solvers(registry, suite: str, definition: Mapping[str, Any], names: Sequence[str] | None,
                 scale: str) -> Mapping[str, Any]:
    """``definition`` with an entry ``{"solver": name}`` added for each of ``names`` that the suite lacks.

    This is how ``l2obench run --solvers`` runs a registered solver (a plugin's, say) on a suite
    that does not list it: a name that is neither the label nor the solver of one of the suite's
    solver entries, but a registered solver, becomes a plain entry, so it runs with its default
    parameters (those with a grid tuned on validation), the suite's budget, on every problem of
    the suite whose family it supports (see ``plan``).

    Parameters
    ----------
    registry : l2obench.registry.Registry
        Where solvers are looked up.
    suite : str
        Suite name (or file path), used in messages.
    definition : mapping
        The suite body (see the module docstring).
    names : sequence of str, optional
        The ``--solvers`` selection; ``None`` or empty: ``definition`` unchanged.
    scale : {"smoke", "small", "paper"}
        The scale of the run: an added solver must support a family of the suite's problems at it.

    Returns
    -------
    mapping
        ``definition`` itself when nothing is added, else a copy with the entries appended.

    Raises
    ------
    UsageError
        For a name that is neither in the suite nor registered, or a registered solver that
        supports none of the families of the suite's problems at ``scale``.
    """
    if not names or not isinstance(definition, Mapping):
        return definition
    entries = [entry for entry in definition.get("solvers") or () if isinstance(entry, Mapping)]
    in_suite = {name for entry in entries for name in (entry.get("label"), entry.get("solver")) if isinstance(name, str)}
    added = []
    for name in dict.fromkeys(names):
        if name in in_suite:
            continue
        if name not in registry.solvers:
            raise UsageError(f"unknown solver {name!r} in --solvers: neither a solver (or label) of suite {suite} "
                             f"({', '.join(sorted(in_suite))}) nor a registered solver "
                             f"({', '.join(sorted(registry.solvers))})")
        spec = registry.solver(name)
        families = sorted({entry.get("family") for entry in definition.get("problems") or ()
                           if isinstance(entry, Mapping) and _runs_at(suite, entry, scale)} - {None})
        if not any(spec.supports(family) for family in families):
            raise UsageError(f"solver {name!r} supports {', '.join(spec.families) or 'no family'}; suite {suite} "
                             f"has no problem of those families at scale {scale} (its families: "
                             f"{', '.join(families) or 'none'})")
        added.append({"solver": name})
    if not added:
        return definition
    return {**definition, "solvers": [*definition["solvers"], *added]}


def _claim_label(where: str, claimed: dict, index: int, label: str, targets: set[str] | None) -> None:
    """Record that entry ``index`` (of ``where``) has ``label``; refuse a label already taken.

    A label names one leaderboard row (solvers) or block (problems), so two entries running at
    this scale may not share one: their cells would be averaged together. Two solver entries
    may share a label when they run on different problems (``targets``, their problem labels;
    ``None`` for a problem entry).
    """
    table = where.rsplit(".", 1)[-1]
    for other, other_targets in claimed.get(label, []):
        shared = sorted(set(targets or ()) & set(other_targets or ()))
        if shared or targets is None:
            on = f" on problem {shared[0]!r}" if shared else ""
            raise SuiteFileError(f"{where}[{index}]: label {label!r} is also the label of "
                                 f"{table}[{other}]{on}; give each entry its own label")
    claimed.setdefault(label, []).append((index, targets))


def _solver_problems(where: str, entry: Mapping, label: str, spec, problem_rows: list,
                     declared: set[str]) -> set[str]:
    """Labels of the problems (at this scale) a solver entry runs on: those its ``problems``
    names, else every problem whose family it supports. Naming a problem the suite does not
    declare (at any scale), naming one it does not support, or supporting none is an error."""
    def unsupported(plabel, pspec):
        return UsageError(f"solver {spec.name!r} ({label}) does not support problem family "
                          f"{pspec.name!r} ({plabel}); it supports: {', '.join(spec.families)}")

    wanted = entry.get("problems")
    if wanted is None:
        targets = {plabel for plabel, pspec, *_ in problem_rows if spec.supports(pspec.name)}
        if problem_rows and not targets:
            raise unsupported(problem_rows[0][0], problem_rows[0][1])
        return targets
    if not isinstance(wanted, list) or not all(isinstance(name, str) for name in wanted):
        raise SuiteFileError(f"{where}.problems: expected a list of problem labels or families")
    for name in wanted:
        if name not in declared:
            raise SuiteFileError(f"{where}.problems: this suite has no problem labelled {name!r} "
                                 f"(or of family {name!r})")
    targets = set()
    for plabel, pspec, *_ in problem_rows:
        if plabel in wanted or pspec.name in wanted:
            if not spec.supports(pspec.name):
                raise unsupported(plabel, pspec)
            targets.add(plabel)
    return targets


@contextmanager
def _labelled(entry):
    """Name the entry's label in the errors its planning raises (the location names its index)."""
    try:
        yield
    except SuiteFileError as exc:
        label = entry.get("label") if isinstance(entry, Mapping) else None
        if not isinstance(label, str) or repr(label) in str(exc):
            raise
        raise SuiteFileError(f"{exc} (entry {label!r})") from exc


@contextmanager
def _located(where: str):
    """Prefix name errors raised inside with the suite entry they come from."""
    try:
        yield
    except UnknownNameError as exc:
        raise SuiteFileError(f"{where}: {exc}") from exc


def _select(kind: str, wanted: Sequence[str] | None, rows: list, names) -> list:
    if not wanted:
        return rows
    known = {n for row in rows for n in names(row)}
    for name in wanted:
        if name not in known:
            raise UnknownNameError(f"{kind} in this suite", name, known)
    return [row for row in rows if set(names(row)) & set(wanted)]
