"""What a cell computes from, as one hash: its identity, never its labels.

A cell's identity hashes

* the problem family's name, its ``version`` and its resolved settings, and the
  seed: the inputs that determine every split's bytes (``l2obench.data.make_splits``;
  the splits' own hashes are recorded in ``data_hash`` once drawn, but are not
  part of the identity, which must be known before any data is drawn);
* the solver's name, its resolved parameters and which of them the suite fixed
  (the others are tuned on validation);
* a learned solver's training budget (classical solvers take none);
* the code version of the solver and of the family: ``l2obench.hashing.source_digest``
  of the class their factory names, i.e. the bytes of the source files of the
  modules defining it and its base classes, and of the modules of the same
  packages (or of l2obench) that those modules import. A module imported only
  inside a function is not covered. A factory that is not a class is covered by
  its defining module's file. This hash covers a ``--plugin`` file whenever the
  solver's class is defined in it; and the solver's ``SolverSpec.version``, when
  its author set one (key ``solver_version``; unversioned solvers keep the
  identities they had before versions existed).

The same code version is part of the key of cached fitted models
(``l2obench.runner``): a cell that runs again for its code fits its model again,
never loads the one fitted before the change. Which plugin produced a
row (built-in, a file and its hash, or a package and its version) is recorded
in the ``plugin`` column, not in the identity: moving a plugin file or
reinstalling the same code changes no result.

Labels, the suite's name and the scale's name are not part of it (a scale acts
through the settings and the budget), nor is the harness's own bookkeeping
(recorded per row in ``l2obench_version`` and ``git_commit``) or the machine
(``run.json``'s ``cpu_kernels``).
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Mapping

from l2obench.hashing import canonical_json, content_key, file_digest, source_digest
from l2obench.suites import Cell

__all__ = ["Identities", "SuiteSource", "code_version", "sweep_json"]


def code_version(factory: Any) -> str:
    """Hash of the source behind a solver or problem factory (a class, or a function).

    Returns ``"unavailable"`` when the source cannot be read (a factory that does
    not import fails its cell as usual); identities then cover no code.
    """
    try:
        if isinstance(factory, type):
            return source_digest(factory)
        return file_digest(getattr(sys.modules.get(getattr(factory, "__module__", "")), "__file__", None))
    except (OSError, TypeError):
        return "unavailable"


def sweep_json(cell: Cell) -> str | None:
    """The cell's swept values as stored in the ``sweep`` column (null when none)."""
    return canonical_json({part: dict(v) for part, v in cell.sweep.items()}) if cell.sweep else None


class Identities:
    """Identities of cells, with each factory's code version computed once.

    Parameters
    ----------
    registry : Registry
        Where the cells' solvers and problem families are registered.
    """

    def __init__(self, registry):
        self.registry = registry
        self._code: dict[tuple[str, str], str] = {}
        self._versions: dict[str, Any] = {}

    def _factory(self, kind: str, name: str) -> Any:
        spec = self.registry.solver(name) if kind == "solver" else self.registry.problem(name)
        try:
            return spec.load()
        except Exception:  # noqa: BLE001 - an unloadable factory fails its cell, not the plan
            return None

    def code_version(self, cell: Cell) -> dict[str, str]:
        """``{"family": .., "solver": ..}``: the source hashes of the cell's family and solver, and
        ``"solver_version"``: the solver's ``SolverSpec.version`` when it has one."""
        out = {}
        for kind, name in (("family", cell.family), ("solver", cell.solver)):
            if (kind, name) not in self._code:
                factory = self._factory(kind, name)
                self._code[kind, name] = "unavailable" if factory is None else code_version(factory)
                if kind == "family":
                    self._versions[name] = getattr(factory, "version", None)
            out[kind] = self._code[kind, name]
        version = self.registry.solver(cell.solver).version
        if version is not None:
            out["solver_version"] = str(version)
        return out

    def identity(self, cell: Cell) -> str:
        """The identity of ``cell`` (see the module's docstring)."""
        code = self.code_version(cell)
        return content_key(
            "cell-identity", 1, cell.family, self._versions.get(cell.family), dict(cell.settings), cell.solver,
            dict(cell.params), sorted(cell.fixed_params), vars(cell.budget) if cell.learned else None, code,
            cell.seed)


@dataclasses.dataclass(frozen=True)
class SuiteSource:
    """A suite as a run records it: by its content, not by the path typed.

    Parameters
    ----------
    name : str
        As given on the command line (a registered name, or a file path).
    origin : str
        The registered name, or the suite file's absolute path.
    content : str
        Hash of the suite's definition (its canonical JSON).
    """

    name: str
    origin: str
    content: str

    @classmethod
    def of(cls, name: str, definition: Mapping[str, Any], path: str | Path | None = None) -> "SuiteSource":
        """The source of a registered suite (``path`` None) or of a suite file."""
        origin = str(Path(path).resolve()) if path is not None else name
        return cls(name, origin, content_key("suite", definition))

    def matches(self, recorded: Mapping[str, Any]) -> bool:
        """Whether ``recorded`` (a ``run.json``) is a run of this suite: the same content, or the
        same origin (its content edited since; cells are then compared one by one). A run recorded
        before origins were: the same name, or a file path that resolves to this origin."""
        if "suite_origin" in recorded:
            return recorded.get("suite_content") == self.content or recorded["suite_origin"] == self.origin
        name = recorded.get("suite", "")
        return name in (self.name, self.origin) or str(Path(name).resolve()) == self.origin
