"""Declarations that plugins register: light objects, importable without torch.

A spec names its implementation by a ``"module:attribute"`` string (or the
object itself), so that listing plugins never imports numerical code.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from l2obench.errors import UnknownNameError, UsageError


@dataclass(frozen=True)
class Param:
    """One hyper-parameter (of a solver) or setting (of a problem family).

    Parameters
    ----------
    default : Any
        Value used when a suite does not set it.
    grid : sequence, optional
        Values searched on the validation split when a suite does not fix the
        parameter (classical solvers' tuning). ``None``: never tuned.
    help : str
        One line shown by ``l2obench list``.
    """

    default: Any
    grid: Sequence[Any] | None = None
    help: str = ""


def _load_object(factory: Any) -> Any:
    if not isinstance(factory, str):
        return factory
    module_name, _, attribute = factory.partition(":")
    if not attribute:
        raise ValueError(f"factory {factory!r} must read 'module:attribute'")
    return getattr(importlib.import_module(module_name), attribute)


@dataclass(frozen=True)
class _Spec:
    name: str
    factory: Any
    params: Mapping[str, Param] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self):
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"invalid name {self.name!r}: use letters, digits, '-' and '_'")
        for key, value in self.params.items():
            if not isinstance(value, Param):
                raise TypeError(f"{self.name}: parameter {key!r} must be a l2obench.Param")

    @property
    def defaults(self) -> dict[str, Any]:
        """Default value of every parameter."""
        return {key: p.default for key, p in self.params.items()}

    def resolve(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults updated by ``overrides``; unknown names raise a clear error."""
        overrides = dict(overrides or {})
        for key in overrides:
            if key not in self.params:
                raise UnknownNameError(f"parameter of {self.name}", key, self.params)
        return {**self.defaults, **overrides}

    def load(self) -> Any:
        """Import and return the implementation named by ``factory``."""
        return _load_object(self.factory)

    def build(self, **overrides):
        """Instantiate the implementation with resolved parameters."""
        return self.load()(**self.resolve(overrides))


@dataclass(frozen=True)
class SolverSpec(_Spec):
    """A solver as registered by a plugin.

    Parameters
    ----------
    name : str
        Registry name, used in suites and on the command line.
    factory : str or type
        ``"package.module:Class"`` (imported lazily) or the class; called with
        the resolved hyper-parameters as keyword arguments.
    families : sequence of str
        Problem families the solver supports.
    learned : bool
        Whether ``fit`` trains parameters on the training split (else it tunes
        hyper-parameters on the validation split).
    params : mapping of str to Param
        Hyper-parameters with defaults and optional tuning grids.
    description : str
        One line for ``l2obench list``.
    """

    families: Sequence[str] = ()
    learned: bool = False

    def supports(self, family: str) -> bool:
        return family in self.families


@dataclass(frozen=True)
class ProblemSpec(_Spec):
    """A problem family as registered by a plugin.

    ``params`` are the family's settings (dimensions, noise, split sizes); the
    factory is called with resolved settings and returns a ``ProblemFamily``.
    """


@dataclass(frozen=True)
class SuiteSpec:
    """A named suite: problem settings x solvers x seeds at several scales.

    Parameters
    ----------
    name : str
        Suite name for ``l2obench run --suite``.
    definition : mapping
        The suite body, in the same structure as a suite file (see
        ``l2obench.suites``); validated when the suite is planned.
    description : str
        One line for ``l2obench list``.
    """

    name: str
    definition: Mapping[str, Any]
    description: str = ""


def check_choice(kind: str, value: str, valid: Sequence[str]) -> str:
    """Return ``value`` if it is in ``valid``, else raise ``UsageError``."""
    if value not in valid:
        raise UsageError(f"invalid {kind} {value!r}; choose one of: {', '.join(valid)}")
    return value


