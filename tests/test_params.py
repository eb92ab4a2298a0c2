"""Typed parameters: ``Param.check``, per-family defaults, ``Budget`` and the built-in declarations."""
import math
import re

import pytest

from l2obench import Param, SolverSpec
from l2obench.contracts import Budget
from l2obench.errors import UsageError
from l2obench.registry import Registry
from l2obench.specs import InvalidValueError

REGISTRY = Registry()
MAX_ITER = Param(1000, help="maximum iterations", type=int, ge=1)


def test_positional_use_is_unchanged_and_new_fields_are_keyword_only():
    p = Param(0.1, (0.1, 0.2), "l1 weight")
    assert (p.default, p.grid, p.help, p.type, p.choices) == (0.1, (0.1, 0.2), "l1 weight", None, None)
    with pytest.raises(TypeError):
        Param(0.1, None, "help", float)


@pytest.mark.parametrize("value", [1, 20, 10**12])
def test_int_accepts_ints_in_bounds(value):
    assert MAX_ITER.check("max_iter", value) == value


@pytest.mark.parametrize("value", [0, -1, True, False, 2.0, "twenty", None, [3]])
def test_int_rejects_bools_floats_strings_and_out_of_bounds(value):
    with pytest.raises(InvalidValueError) as info:
        MAX_ITER.check("max_iter", value)
    assert str(info.value) == f"max_iter must be an int >= 1, got {value!r}"
    assert info.value.name == "max_iter" and info.value.reason == f"must be an int >= 1, got {value!r}"


def test_the_error_is_a_value_error_and_a_usage_error():
    with pytest.raises(ValueError):
        MAX_ITER.check("max_iter", 0)
    with pytest.raises(UsageError) as info:
        MAX_ITER.check("max_iter", 0)
    assert info.value.exit_code == 2


def test_float_accepts_ints_as_given_but_not_bools_or_nan():
    p = Param(0.5, type=float, ge=0)
    assert p.check("tol", 1) == 1 and isinstance(p.check("tol", 1), int)
    assert p.check("tol", 0.0) == 0.0 and p.check("tol", math.inf) == math.inf
    for bad in (True, math.nan, "0.1", -1e-9):
        with pytest.raises(InvalidValueError, match="tol must be a number >= 0"):
            p.check("tol", bad)


def test_bool_accepts_only_bools():
    p = Param(True, type=bool)
    assert p.check("restart", False) is False
    for bad in (0, 1, "true", None):
        with pytest.raises(InvalidValueError, match="restart must be a bool, got"):
            p.check("restart", bad)


@pytest.mark.parametrize("kwargs, inside, outside, text", [
    ({"gt": 0}, [1e-12, 5], [0, -1], "a number > 0"),
    ({"ge": 0, "lt": 1}, [0, 0.999], [1, -0.1], "a number in [0, 1)"),
    ({"gt": 0, "le": 1}, [1, 0.5], [0, 1.5], "a number in (0, 1]"),
    ({"gt": 0, "lt": 2}, [1.6], [0, 2], "a number in (0, 2)"),
    ({"le": 100}, [-5, 100], [100.5], "a number <= 100"),
])
def test_bounds_read_as_inclusive_or_exclusive(kwargs, inside, outside, text):
    p = Param(1.0, type=float, **kwargs)
    assert p.describe() == text
    for value in inside:
        p.check("x", value)
    for value in outside:
        with pytest.raises(InvalidValueError, match=re.escape(f"x must be {text}, got")):
            p.check("x", value)


def test_at_most_one_bound_per_side():
    with pytest.raises(ValueError, match="at most one lower bound"):
        Param(1.0, type=float, ge=0, gt=0)
    with pytest.raises(ValueError, match="one upper bound"):
        Param(1.0, type=float, le=1, lt=1)


def test_choices():
    p = Param("threshold", type=str, choices=("threshold", "sample", "never"))
    assert p.check("stop_rule", "never") == "never"
    with pytest.raises(InvalidValueError) as info:
        p.check("stop_rule", "nope")
    assert str(info.value) == "stop_rule must be one of threshold, sample, never, got 'nope'"
    with pytest.raises(InvalidValueError):
        p.check("stop_rule", None)


def test_none_is_allowed_when_nullable_or_by_a_none_default():
    assert Param(None, type=int, ge=1).check("policy_steps", None) is None
    assert Param(None, type=int, ge=1).describe() == "an int >= 1 or null"
    assert Param(3, type=int, nullable=True).check("n", None) is None
    with pytest.raises(InvalidValueError, match="n_blocks must be an int >= 1, got None"):
        Param(None, type=int, ge=1, nullable=False).check("n_blocks", None)
    with pytest.raises(InvalidValueError, match="got 0"):
        Param(None, type=int, ge=1).check("policy_steps", 0)


def test_lists_of_values_each_checked():
    levels = Param(100, type=int, ge=1, many=True)
    assert levels.check("M", [10, 40]) == [10, 40] and levels.check("M", 5) == 5 and levels.check("M", (1, 2))
    assert levels.check("M", []) == []  # emptiness is the family's to judge
    for bad in ([10, 2.5], [0], 0, [True], "10", [[10]]):
        with pytest.raises(InvalidValueError, match="M must be an int >= 1 or a list of them, got"):
            levels.check("M", bad)
    snr = Param([20, 30], type=float, many=True, nullable=True)
    assert snr.check("snr", [None, 20, math.inf]) and snr.check("snr", None) is None
    assert snr.describe() == "a number, a list of them or null"
    with pytest.raises(InvalidValueError):
        Param(1.0, type=float).check("snr", [20, 30])


def test_tuples_of_types_unchecked_params_and_tables():
    holdout = Param(None, type=(int, float), gt=0)
    assert holdout.check("holdout", 4) == 4 and holdout.check("holdout", 0.25) == 0.25
    assert holdout.describe() == "a number > 0 or null"
    for bad in (0, True, "4"):
        with pytest.raises(InvalidValueError):
            holdout.check("holdout", bad)
    anything = Param(1.0, help="third-party, untyped")
    for value in ("x", None, [1], True):
        assert anything.check("scale", value) == value
    table = Param(None, type=dict)
    assert table.check("ood", {"snr": [10]}) == {"snr": [10]}
    with pytest.raises(InvalidValueError, match="ood must be a table or null"):
        table.check("ood", [10])


def _spec(**params):
    return SolverSpec(name="two_family", factory="x:y", families=("slr", "spe"), params=params)


def test_family_defaults_are_resolved_per_family_and_overrides_win():
    spec = _spec(n_blocks=Param(None, type=int, ge=1, nullable=False, family_defaults={"slr": 20, "spe": 5}),
                 lr=Param(0.03, type=float, gt=0))
    assert spec.resolve(family="slr") == {"n_blocks": 20, "lr": 0.03}
    assert spec.resolve({}, "spe") == {"n_blocks": 5, "lr": 0.03}
    assert spec.resolve({"n_blocks": 7}, family="spe") == {"n_blocks": 7, "lr": 0.03}
    assert spec.resolve() == spec.defaults == {"n_blocks": None, "lr": 0.03}
    with pytest.raises(InvalidValueError, match="n_blocks must be an int >= 1, got 'many'"):
        spec.resolve({"n_blocks": "many"}, family="slr")
    with pytest.raises(InvalidValueError, match="lr must be a number > 0, got 0"):
        spec.resolve({"lr": 0})


def test_family_defaults_must_name_supported_families():
    with pytest.raises(ValueError, match="defaults for families it does not support: lasso"):
        _spec(n=Param(1, type=int, family_defaults={"lasso": 2}))


def test_plisa_family_defaults_are_the_thesis_numbers():
    spec = REGISTRY.solver("plisa")
    keys = ("lam_init", "n_blocks", "n_layers")
    assert {k: spec.resolve(family="slr")[k] for k in keys} == {"lam_init": 0.05, "n_blocks": 20, "n_layers": 5}
    assert {k: spec.resolve(family="spe")[k] for k in keys} == {"lam_init": 0.5, "n_blocks": 5, "n_layers": 4}


@pytest.mark.parametrize("field, value, message", [
    ("steps", -1, "steps must be an int >= 1, got -1"),
    ("steps", 10.0, "steps must be an int >= 1, got 10.0"),
    ("batch_size", 0, "batch_size must be an int >= 1"),
    ("eval_every", True, "eval_every must be an int >= 1"),
    ("patience", "5", "patience must be an int >= 1"),
    ("max_seconds", 0, "max_seconds must be a number > 0 or null, got 0"),
])
def test_budget_fields_are_checked_on_construction(field, value, message):
    with pytest.raises(InvalidValueError, match=message):
        Budget(**{field: value})


def test_budget_params_match_the_dataclass_defaults():
    assert Budget(max_seconds=1).max_seconds == 1
    assert {k: p.default for k, p in Budget.params.items()} == vars(Budget())


def _registered():
    for kind in ("problems", "solvers"):
        for name, reg in getattr(REGISTRY, kind).items():
            yield kind, name, reg


@pytest.mark.parametrize("kind, name, reg", list(_registered()), ids=lambda x: x if isinstance(x, str) else "")
def test_every_registered_default_and_grid_value_passes_its_own_check(kind, name, reg):
    spec = reg.spec
    for family in getattr(spec, "families", None) or [None]:
        for key, value in spec.resolve(family=family).items():
            spec.params[key].check(key, value)
    for key, param in spec.params.items():
        for value in param.grid or ():
            param.check(key, value)


@pytest.mark.parametrize("kind, name, reg", [row for row in _registered() if row[2].plugin.name.startswith("builtin")],
                         ids=lambda x: x if isinstance(x, str) else "")
def test_every_builtin_param_declares_what_it_allows_in_one_help_line(kind, name, reg):
    for key, param in reg.spec.params.items():
        assert param.types or param.choices is not None, f"{name}.{key} declares no type"
        assert param.help and "\n" not in param.help, f"{name}.{key}"
