"""Plugin loading and the registry of problems, solvers and suites.

Plugins come from the ``l2obench`` entry-point group (built-ins included) and
from files given with ``--plugin``. Unlike pluggy's own loader, a broken plugin
does not stop the others: its failure is recorded, shown by ``l2obench list``,
and re-raised only in strict mode.
"""
from __future__ import annotations

import importlib.util
import sys
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import pluggy

from l2obench import hookspecs
from l2obench.errors import PluginError, UnknownNameError, UsageError
from l2obench.hashing import file_digest
from l2obench.specs import ProblemSpec, SolverSpec, SuiteSpec

# The distribution whose entry points are the built-in plugins.
BUILT_IN = "l2obench"


@dataclass
class PluginRecord:
    """One plugin as seen by the registry: where it came from and its state."""

    name: str
    origin: str  # "package <dist> <version>" or "file <path>"
    error: str | None = None
    provides: list[str] = field(default_factory=list)
    source_file: str | None = None  # a plugin file's absolute path
    source_hash: str | None = None  # and its hash (l2obench.hashing.file_digest)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def provenance(self) -> str:
        """What rows record as their producer (the ``plugin`` column): ``"built-in"`` (l2obench's
        own distribution), ``"package <dist> <version>"``, ``"file <path> sha256:<hash>"``, or the
        origin given to ``Registry.register_plugin``."""
        if self.origin.startswith(f"package {BUILT_IN} "):
            return "built-in"
        if self.source_file is not None:
            return f"file {self.source_file} sha256:{self.source_hash}"
        return self.origin


@dataclass
class Registered:
    """A registered spec with the plugin that provided it."""

    spec: Any
    plugin: PluginRecord


def _short_error(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {Path(last[0].filename).name}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"


class Registry:
    """Problems, solvers and suites registered by all loaded plugins.

    Parameters
    ----------
    plugin_files : iterable of path, optional
        Python files to register as plugins (``--plugin``).
    entry_points : bool
        Load the ``l2obench`` entry-point group (built-ins and installed
        third-party packages).
    strict : bool
        Re-raise the first plugin failure instead of recording it.
    """

    def __init__(self, plugin_files: Iterable[str | Path] = (), entry_points: bool = True,
                 strict: bool = False):
        self.strict = strict
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginRecord] = []
        self._records: dict[str, PluginRecord] = {}  # pluggy's plugin name -> record
        self.problems: dict[str, Registered] = {}
        self.solvers: dict[str, Registered] = {}
        self.suites: dict[str, Registered] = {}
        if entry_points:
            self._load_entry_points()
        for path in plugin_files:
            self._load_file(Path(path))
        self._collect()

    # -- loading ---------------------------------------------------------
    def _fail(self, record: PluginRecord, exc: BaseException) -> None:
        record.error = _short_error(exc)
        if self.strict:
            raise PluginError(f"plugin {record.name!r} ({record.origin}) failed: {record.error}") from exc
        print(f"l2obench: warning: plugin {record.name!r} ({record.origin}) is broken: {record.error}",
              file=sys.stderr)

    def _load_entry_points(self) -> None:
        for ep in sorted(metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            origin = f"package {dist.name} {dist.version}" if dist else f"entry point {ep.value}"
            record = self._add_record(ep.name, ep.name, origin)
            try:
                self.pm.register(ep.load(), name=ep.name)
            except Exception as exc:  # noqa: BLE001 - any import failure is reported
                self._fail(record, exc)

    def _load_file(self, path: Path) -> None:
        if not path.is_file():
            raise UsageError(f"plugin file not found: {path}")
        name = f"l2obench_file_plugin_{path.stem}"
        record = self._add_record(f"file:{path}", path.stem, f"file {path}")
        record.source_file, record.source_hash = str(path.resolve()), file_digest(path)
        try:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            self.pm.register(module, name=f"file:{path}")
        except Exception as exc:  # noqa: BLE001
            sys.modules.pop(name, None)
            self._fail(record, exc)

    def register_plugin(self, plugin: Any, name: str, origin: str = "object") -> None:
        """Register a plugin object (module or instance) after construction."""
        self._add_record(name, name, origin)
        self.pm.register(plugin, name=name)
        self._collect()

    def _add_record(self, pm_name: str, name: str, origin: str) -> PluginRecord:
        record = PluginRecord(name, origin)
        self.plugins.append(record)
        self._records[pm_name] = record
        return record

    def _collect(self) -> None:
        self.problems, self.solvers, self.suites = {}, {}, {}
        for r in self.plugins:
            r.provides = []
        kinds = [
            ("l2obench_register_problems", ProblemSpec, self.problems, "problem"),
            ("l2obench_register_solvers", SolverSpec, self.solvers, "solver"),
            ("l2obench_register_suites", SuiteSpec, self.suites, "suite"),
        ]
        for hook_name, spec_type, table, kind in kinds:
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                record = self._records[impl.plugin_name]
                if not record.ok:
                    continue
                found: list = []
                try:
                    impl.function(register=found.append)
                    for spec in found:
                        if not isinstance(spec, spec_type):
                            raise TypeError(f"{hook_name} registered {spec!r}, expected {spec_type.__name__}")
                        if spec.name in table:
                            other = table[spec.name].plugin
                            raise PluginError(f"{kind} {spec.name!r} is registered twice: by "
                                              f"{other.name} ({other.origin}) and {record.name} ({record.origin})")
                except Exception as exc:  # noqa: BLE001
                    self._fail(record, exc)
                    continue
                for spec in found:
                    table[spec.name] = Registered(spec, record)
                    record.provides.append(f"{kind}:{spec.name}")
        for table in (self.problems, self.solvers, self.suites):
            ordered = dict(sorted(table.items()))
            table.clear()
            table.update(ordered)

    # -- look-ups ----------------------------------------------------------
    def problem(self, name: str) -> ProblemSpec:
        if name not in self.problems:
            raise UnknownNameError("problem", name, self.problems)
        return self.problems[name].spec

    def solver(self, name: str) -> SolverSpec:
        if name not in self.solvers:
            raise UnknownNameError("solver", name, self.solvers)
        return self.solvers[name].spec

    def suite(self, name: str) -> SuiteSpec:
        if name not in self.suites:
            raise UnknownNameError("suite", name, self.suites)
        return self.suites[name].spec

    @property
    def broken(self) -> list[PluginRecord]:
        return [r for r in self.plugins if not r.ok]
