"""Declarations that plugins register: light objects, importable without torch.

A spec names its implementation by a ``"module:attribute"`` string (or the
object itself), so that listing plugins never imports numerical code.
"""
from __future__ import annotations

import importlib
import numbers
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Mapping, Sequence

from l2obench.errors import UnknownNameError, UsageError

_TYPE_NAMES = {bool: "bool", int: "int", float: "number", str: "string", list: "list", dict: "table"}


class InvalidValueError(UsageError, ValueError):
    """A parameter value that its ``Param`` does not allow (exit code 2).

    Attributes
    ----------
    name : str
        The parameter.
    value : Any
        The value given.
    reason : str
        ``"must be <what the Param allows>, got <value>"``; the message is
        ``"<name> <reason>"``.
    """

    def __init__(self, name: str, value: Any, expected: str):
        self.name, self.value = name, value
        self.reason = f"must be {expected}, got {value!r}"
        super().__init__(f"{name} {self.reason}")


def _is_a(value: Any, kind: type) -> bool:
    """``isinstance`` in the sense of a declared type: bool is no number, an int is a float."""
    if isinstance(value, bool):
        return kind is bool
    if kind is int:
        return isinstance(value, numbers.Integral)
    if kind is float:
        return isinstance(value, numbers.Real) and value == value  # NaN is not a number here
    if kind is list:
        return isinstance(value, (list, tuple))
    if kind is dict:
        return isinstance(value, Mapping)
    return isinstance(value, kind)


def _article(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def _alternatives(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


@dataclass(frozen=True)
class Param:
    """One hyper-parameter (of a solver) or setting (of a problem family).

    Parameters
    ----------
    default : Any
        Value used when a suite does not set it (and ``family_defaults`` has
        none for the problem family).
    grid : sequence, optional
        Values searched on the validation split when a suite does not fix the
        parameter (classical solvers' tuning). ``None``: never tuned.
    help : str
        One line shown by ``l2obench list``.
    type : type or tuple of types, optional
        Allowed type(s) among ``int``, ``float``, ``bool``, ``str``, ``list``,
        ``dict`` (or any class). ``bool`` is never an ``int`` nor a ``float``;
        an ``int`` passes as a ``float`` (and is kept as given). ``None``: unchecked.
    choices : sequence, optional
        The allowed values.
    ge, gt, le, lt : float, optional
        Bounds on numbers: ``>=``, ``>``, ``<=``, ``<`` (at most one lower
        and one upper bound).
    nullable : bool, optional
        Whether ``None`` (null) is allowed; by default when ``default`` is
        ``None``. An unchecked parameter (no ``type``, no ``choices``) allows it.
    many : bool
        The value may also be a list (or tuple) of values, each checked; an
        empty list passes (the implementation decides what it means).
    family_defaults : mapping of str to Any
        Defaults that differ by problem family, e.g. ``{"slr": 20, "spe": 5}``,
        used by ``resolve(..., family=...)`` instead of ``default``.
    """

    default: Any
    grid: Sequence[Any] | None = None
    help: str = ""
    _: KW_ONLY
    type: Any = None
    choices: Sequence[Any] | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    nullable: bool | None = None
    many: bool = False
    family_defaults: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.ge is not None and self.gt is not None or self.le is not None and self.lt is not None:
            raise ValueError("a Param takes at most one lower bound (ge, gt) and one upper bound (le, lt)")
        if self.nullable is None:
            object.__setattr__(self, "nullable", self.default is None)

    @property
    def types(self) -> tuple[type, ...]:
        """The declared types as a tuple (empty: unchecked)."""
        if self.type is None:
            return ()
        return tuple(self.type) if isinstance(self.type, tuple) else (self.type,)

    def default_for(self, family: str | None = None) -> Any:
        """The default for problem ``family`` (``family_defaults``, else ``default``)."""
        return self.family_defaults.get(family, self.default) if family is not None else self.default

    def describe(self, article: bool = True) -> str:
        """What the parameter allows, e.g. ``"an int >= 1"`` or ``"one of cd, lars"``."""
        if self.choices is not None:
            what = "one of " + ", ".join(map(str, self.choices))
        elif self.types:
            nouns = [_TYPE_NAMES.get(t, t.__name__) for t in self.types if not (t is int and float in self.types)]
            what = " or ".join(_article(n) if article else n for n in nouns)
        else:
            what = "any value"
        bounds = self._bounds()
        if bounds:
            what += f" {bounds}"
        words = [what] + ["a list of them" if article else "list"] * self.many + ["null"] * self.nullable
        return _alternatives(words) if article else " | ".join(words)

    def _bounds(self) -> str:
        low = [(op, bound) for op, bound in ((">=", self.ge), (">", self.gt)) if bound is not None]
        high = [(op, bound) for op, bound in (("<=", self.le), ("<", self.lt)) if bound is not None]
        if low and high:
            (low_op, low_bound), (high_op, high_bound) = low[0], high[0]
            return (f"in {'[' if low_op == '>=' else '('}{low_bound:g}, "
                    f"{high_bound:g}{']' if high_op == '<=' else ')'}")
        return " and ".join(f"{op} {bound:g}" for op, bound in low + high)

    def _allows(self, value: Any) -> bool:
        if value is None:
            return self.nullable or not self.types and self.choices is None
        if self.types and not any(_is_a(value, t) for t in self.types):
            return False
        if self.choices is not None and value not in self.choices:
            return False
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                    and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))
        return True

    def check(self, name: str, value: Any) -> Any:
        """Return ``value`` if the parameter allows it.

        Raises
        ------
        InvalidValueError
            (a ``ValueError`` and a ``UsageError``) naming the parameter, what
            it allows and the value, e.g. "max_iter must be an int >= 1, got 'twenty'".
        """
        values = value if self.many and isinstance(value, (list, tuple)) else (value,)
        if not all(self._allows(v) for v in values):
            raise InvalidValueError(name, value, self.describe())
        return value


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

    def resolve(self, overrides: Mapping[str, Any] | None = None, family: str | None = None) -> dict[str, Any]:
        """Defaults updated by ``overrides``, each checked against its ``Param``.

        Parameters
        ----------
        overrides : mapping, optional
            Values set by the caller (a suite entry).
        family : str, optional
            Problem family the values are for: parameters with a default for
            it in ``family_defaults`` take that default.

        Raises
        ------
        UnknownNameError
            For a name that is not a parameter.
        InvalidValueError
            For a value its ``Param`` does not allow.
        """
        overrides = dict(overrides or {})
        for key, value in overrides.items():
            if key not in self.params:
                raise UnknownNameError(f"parameter of {self.name}", key, self.params)
            self.params[key].check(key, value)
        return {**{key: p.default_for(family) for key, p in self.params.items()}, **overrides}

    def load(self) -> Any:
        """Import and return the implementation named by ``factory``."""
        return _load_object(self.factory)

    def build(self, family: str | None = None, /, **overrides):
        """Instantiate the implementation with parameters resolved for ``family`` (see ``resolve``)."""
        return self.load()(**self.resolve(overrides, family))


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
    version : str or int, optional
        The solver's version, set by its author. Fitted models are cached by
        the source of the solver's code (``l2obench.identity.code_version``);
        bump the version when its behaviour changes in a way its source does
        not show (a dependency, data files it reads), so that cells run again
        and models are fitted anew. ``None``: unversioned.
    """

    families: Sequence[str] = ()
    learned: bool = False
    version: str | int | None = None

    def __post_init__(self):
        super().__post_init__()
        for key, param in self.params.items():
            unknown = set(param.family_defaults) - set(self.families)
            if unknown:
                raise ValueError(f"{self.name}: parameter {key!r} has defaults for families it does not "
                                 f"support: {', '.join(sorted(unknown))}")

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
