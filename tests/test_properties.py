"""Property-based tests (hypothesis): generated suite files run when valid and are refused cleanly when not.

Valid suites (tiny LASSO or sparse-regression settings, classical solvers) run to the end with every
cell ok. Invalid ones (a value that a setting's, parameter's or budget's ``Param`` does not allow, for
every problem family and solver; settings allowed one by one but not together; an unknown key; absurd
sizes) exit 2 with one line naming the file, the entry and the key, no traceback, and no results
directory.
"""
import contextlib
import io
import json
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from l2obench.cli import main
from l2obench.contracts import Budget
from l2obench.registry import Registry

REGISTRY = Registry()
SOLVER_OF = {"lasso": "fista", "slr": "ista", "spe": "g_ista", "quadratic": "gd", "denoising": "bm3d"}


def examples(n: int):
    """Hypothesis settings: ``n`` examples, no deadline (a run's first call imports a lot), no example database."""
    return settings(max_examples=n, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"
    if isinstance(value, (int, float, str)):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def toml_suite(problems: list[dict], solvers: list[dict], budget: dict | None = None, seeds=(0,)) -> str:
    """A suite file's text (the structure of ``l2obench.suites``) from entry tables."""
    lines = [f"seeds = {toml_value(list(seeds))}"]
    if budget:
        lines += ["[budget]"] + [f"{k} = {toml_value(v)}" for k, v in budget.items()]
    for kind, entries in (("problems", problems), ("solvers", solvers)):
        for entry in entries:
            lines.append(f"[[{kind}]]")
            lines += [f"{k} = {toml_value(v)}" for k, v in entry.items()]
    return "\n".join(lines) + "\n"


def run_cli(*args) -> tuple[int, str, str]:
    """``l2obench ARGS`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def run_suite(text: str, folder: Path) -> tuple[int, str, str, Path]:
    """``l2obench run`` of the suite file ``text``, written in ``folder``, with results in ``folder / "run"``."""
    path = folder / "suite.toml"
    path.write_text(text)
    results = folder / "run"
    code, out, err = run_cli("run", "--suite", str(path), "--results", str(results), "--no-progress", "--no-cache")
    return code, out, err, results


# -- valid suites ----------------------------------------------------------------------------
lasso_settings = st.fixed_dictionaries({
    "m": st.integers(2, 12), "n": st.integers(2, 16),
    "p": st.floats(0.05, 1.0),
    "snr": st.one_of(st.just(math.inf), st.lists(st.sampled_from([10, 20.5, 40]), min_size=1, max_size=3)),
    "n_train": st.integers(1, 12), "n_val": st.integers(1, 6), "n_test": st.integers(1, 6),
})


@st.composite
def slr_settings(draw):
    d = draw(st.integers(1, 10))
    lo = draw(st.integers(1, 8))
    return {"d": d, "s": draw(st.integers(1, d)), "n_samples": [lo, draw(st.integers(lo, 10))],
            "rho": draw(st.floats(0.0, 0.9)), "snr": draw(st.sampled_from([10, 40, math.inf])),
            "n_train": draw(st.integers(1, 8)), "n_val": draw(st.integers(1, 4)), "n_test": draw(st.integers(1, 4))}


problem_entry = st.one_of(st.builds(lambda settings: {"family": "lasso", "label": "cs", "settings": settings},
                                    lasso_settings),
                          st.builds(lambda settings: {"family": "slr", "label": "reg", "settings": settings},
                                    slr_settings()))
classical = st.fixed_dictionaries({
    "solver": st.sampled_from(["ista", "fista"]),
    "params": st.fixed_dictionaries({"max_iter": st.integers(1, 5), "tol": st.just(0.0),
                                     "lam": st.floats(0.01, 0.5)}),
})


def valid_suite():
    return st.builds(lambda problem, solvers, seeds: toml_suite(
        [problem], [{**s, "label": f"{s['solver']} {i}"} for i, s in enumerate(solvers)], seeds=seeds),
        problem_entry, st.lists(classical, min_size=1, max_size=2, unique_by=lambda s: s["solver"]),
        st.lists(st.integers(0, 2**31), min_size=1, max_size=2, unique=True))


def _check_runs(text):
    with tempfile.TemporaryDirectory(prefix="l2obench-property-") as folder:
        code, out, err, results = run_suite(text, Path(folder))
        assert code == 0, text + out + err
        assert "Traceback" not in out + err
        cells = list((results / "cells").glob("*.parquet"))
        assert cells and f"{len(cells)} ok, 0 diverged, 0 failed" in out, text + out
        assert (results / "leaderboard.md").is_file()


@examples(6)
@given(valid_suite())
def test_valid_suites_run_at_smoke_size(text):
    _check_runs(text)


@pytest.mark.slow
@examples(60)
@given(valid_suite())
def test_many_valid_suites_run_at_smoke_size(text):
    _check_runs(text)


# -- invalid suites ----------------------------------------------------------------------------
def disallowed(param) -> st.SearchStrategy:
    """Values ``param`` (an ``l2obench.Param``) refuses: another type, or a number out of its bounds."""
    text = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=5)
    candidates = [text.filter(lambda s: param.choices is None or s not in param.choices),
                  st.just([{}]), st.just({"nested": 1})]
    types = param.types
    if types and bool not in types:
        candidates.append(st.booleans())
    if int in types and float not in types:
        candidates.append(st.floats(0.5, 1e6).filter(lambda v: v != int(v)))
    for bound, step in ((param.ge, -1), (param.gt, 0), (param.le, 1), (param.lt, 0)):
        if bound is not None and (int in types or float in types):
            candidates.append(st.just(int(bound) + step if int in types and float not in types else bound + step))
    if not param.nullable and (types or param.choices is not None):
        candidates.append(st.just(float("nan")) if float in types else st.just("null"))
    return st.one_of(candidates).filter(lambda v: not param._allows(v) if not isinstance(v, list) or not param.many
                                        else not all(param._allows(x) for x in v))


@st.composite
def invalid_setting(draw):
    """A suite whose one problem setting is a value its Param refuses, in any family."""
    family = draw(st.sampled_from(sorted(SOLVER_OF)))
    spec = REGISTRY.problem(family)
    key = draw(st.sampled_from(sorted(spec.params)))
    value = draw(disallowed(spec.params[key]))
    text = toml_suite([{"family": family, "settings": {key: value}}], [{"solver": SOLVER_OF[family]}])
    return text, f"problems[0].settings.{key}: must be "


@st.composite
def invalid_parameter(draw):
    """A suite whose one solver parameter, or budget value, is a value its Param refuses."""
    if draw(st.booleans()):
        solver = draw(st.sampled_from(sorted(REGISTRY.solvers)))
        spec = REGISTRY.solver(solver)
        key = draw(st.sampled_from(sorted(spec.params)))
        value = draw(disallowed(spec.params[key]))
        return (toml_suite([{"family": spec.families[0]}], [{"solver": solver, "params": {key: value}}]),
                f"solvers[0].params.{key}: must be ")
    key = draw(st.sampled_from(sorted(Budget.params)))
    value = draw(disallowed(Budget.params[key]))
    return toml_suite([{"family": "lasso"}], [{"solver": "lista"}], budget={key: value}), f".budget.{key}: must be "


absurd = st.builds(lambda m, n: (toml_suite([{"family": "lasso", "settings": {"m": m, "n": n}}],
                                            [{"solver": "fista"}]), "problems[0].settings: these sizes need"),
                   st.integers(10**6, 10**8), st.integers(10**6, 10**8))
unknown_key = st.builds(lambda key: (toml_suite([{"family": "lasso", "settings": {key: 1}}], [{"solver": "fista"}]),
                                     f"problems[0]: unknown parameter of lasso {key!r}"),
                        st.from_regex(r"[a-z]{3,8}", fullmatch=True).filter(
                            lambda k: k not in REGISTRY.problem("lasso").params))
inconsistent = st.one_of(  # each value allowed by its Param, the combination not
    st.builds(lambda d, extra: ({"family": "slr", "settings": {"d": d, "s": d + extra}}, "s (non-zeros of beta*)"),
              st.integers(1, 50), st.integers(1, 10)),
    st.builds(lambda mu, ratio: ({"family": "quadratic", "settings": {"mu": mu, "L": mu * ratio}}, "need 0 < mu < L"),
              st.floats(0.01, 10), st.floats(0.1, 1.0)),
    st.builds(lambda lo, gap: ({"family": "spe", "settings": {"edge_prob": [lo + gap, lo]}}, "edge_prob must be"),
              st.floats(0, 0.5), st.floats(0.01, 0.5)),
    st.builds(lambda n, extra: ({"family": "quadratic", "settings": {"n_train": n + extra, "pool": n}},
                                "pool ("), st.integers(1, 100), st.integers(1, 100)),
)
inconsistent_suite = inconsistent.map(lambda pair: (
    toml_suite([pair[0]], [{"solver": SOLVER_OF[pair[0]["family"]]}]), f"problems[0].settings: {pair[1]}"))
invalid_suite = st.one_of(invalid_setting(), invalid_parameter(), inconsistent_suite, absurd, unknown_key)


def _check_refused(case):
    text, where = case
    with tempfile.TemporaryDirectory(prefix="l2obench-property-") as folder:
        code, out, err, results = run_suite(text, Path(folder))
        assert code == 2, text + out + err
        assert "Traceback" not in out + err and len(err.strip().splitlines()) == 1, text + err
        assert err.startswith("l2obench: error: ") and "suite.toml" in err and where in err, text + err
        assert not results.exists()  # no partial results


@examples(25)
@given(invalid_suite)
def test_invalid_suites_are_refused_cleanly(case):
    _check_refused(case)


@pytest.mark.slow
@examples(300)
@given(invalid_suite)
def test_many_invalid_suites_are_refused_cleanly(case):
    _check_refused(case)
