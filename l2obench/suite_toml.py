"""A suite as a TOML file: what ``l2obench suite show`` prints, to copy, edit and run with ``--suite FILE``.

``suite_toml`` writes a suite's definition as it is (every scale), or resolved at one
scale: the entries that run at that scale, each with its ``scales`` overrides merged
into its ``settings``, ``params``, ``budget`` and ``sweep``, the scale's seeds, and
``default_scale`` set to it. Either file plans into the same cells as the suite it
comes from (at every scale, or at that scale).
"""
from __future__ import annotations

from typing import Any, Mapping

from l2obench.errors import UsageError
from l2obench.suites import SCALES, _at_scale, _budget_at, _runs_at, _seeds


def suite_toml(suite: str, definition: Mapping[str, Any], scale: str | None = None, header: str = "") -> str:
    """The suite file (TOML) of ``definition``, at ``scale`` or at every scale.

    Parameters
    ----------
    suite : str
        Suite name, used in messages.
    definition : mapping
        The suite body (see ``l2obench.suites``).
    scale : {"smoke", "small", "paper"}, optional
        Resolve the suite at this scale; ``None``: the definition as it is.
    header : str
        Comment lines written first (each prefixed with ``# ``).

    Raises
    ------
    UsageError
        For an unknown scale, or a null value, which TOML cannot hold (the message names its key).
    """
    import tomli_w

    if scale is not None:
        if scale not in SCALES:
            raise UsageError(f"unknown scale {scale!r}; scales: {', '.join(SCALES)}")
        definition = at_scale(suite, definition, scale)
    _refuse_nulls(suite, definition)
    comments = "".join(f"# {line}\n".replace("# \n", "#\n") for line in header.splitlines())
    return comments + ("\n" if comments else "") + tomli_w.dumps(definition)


def at_scale(suite: str, definition: Mapping[str, Any], scale: str) -> dict:
    """``definition`` resolved at ``scale``: a suite without ``scales`` or ``only_scales`` that plans
    into the same cells at ``scale`` and runs at it by default."""
    problems = [(i, entry) for i, entry in enumerate(definition.get("problems", []))
                if _runs_at(f"{suite}.problems[{i}]", entry, scale)]
    kept = {name for _, entry in problems for name in (entry.get("label"), entry.get("family"))}
    out = {key: definition[key] for key in ("description",) if key in definition}
    out["default_scale"] = scale
    out["seeds"] = _seeds(suite, definition.get("seeds", [0]), scale)
    budget = _budget_at(f"{suite}.budget", definition.get("budget"), scale)
    if budget:
        out["budget"] = budget
    out["problems"] = [_entry_at(f"{suite}.problems[{i}]", entry, "settings", scale) for i, entry in problems]
    solvers = []
    for i, entry in enumerate(definition.get("solvers", [])):
        where = f"{suite}.solvers[{i}]"
        if not _runs_at(where, entry, scale):
            continue
        resolved = _entry_at(where, entry, "params", scale)
        if "budget" in entry:
            resolved["budget"] = _budget_at(f"{where}.budget", entry["budget"], scale)
        if "problems" in entry:  # problems that do not run at this scale are no longer declared
            resolved["problems"] = [name for name in entry["problems"] if name in kept]
            if not resolved["problems"]:
                continue
        solvers.append(resolved)
    out["solvers"] = solvers
    return out


def _entry_at(where: str, entry: Mapping[str, Any], table: str, scale: str) -> dict:
    """A problem (``table = "settings"``) or solver (``"params"``) entry with its overrides at ``scale`` merged."""
    out = {key: value for key, value in entry.items() if key not in ("scales", "only_scales", "sweep", table)}
    values = _at_scale(where, entry.get(table), entry.get("scales"), scale)
    if values or table in entry:
        out[table] = values
    sweep = entry.get("sweep")
    if isinstance(sweep, Mapping):
        out["sweep"] = _at_scale(f"{where}.sweep", {k: v for k, v in sweep.items() if k != "scales"},
                                 sweep.get("scales"), scale)
    return out


def _refuse_nulls(where: str, value: Any) -> None:
    if value is None:
        raise UsageError(f"{where} is null, which a TOML file cannot hold; write that suite as JSON instead")
    if isinstance(value, Mapping):
        for key, item in value.items():
            _refuse_nulls(f"{where}.{key}", item)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _refuse_nulls(f"{where}[{i}]", item)
