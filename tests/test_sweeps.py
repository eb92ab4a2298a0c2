"""Sweeps: a suite entry sweeps solver parameters or problem settings; every value is its own cell."""
import datetime as dt
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from l2obench import leaderboard
from l2obench.errors import SuiteFileError
from l2obench.registry import Registry
from l2obench.results import expand_sweep, read_results
from l2obench.schema import COLUMNS, SCHEMA
from l2obench.suites import load_suite_file, plan, sweep_label

REGISTRY = Registry()
_TINY = {"d": 5, "m": 4, "n_train": 16, "n_val": 16, "n_test": 32, "pool": 100}


def test_solver_sweep_makes_one_cell_per_combination_with_the_values_fixed():
    body = {"problems": [{"family": "quadratic", "label": "q", "settings": {**_TINY, "mode": "given"}}],
            "solvers": [{"solver": "gd_layer", "label": "GD layer", "params": {"lr": 0.01},
                         "sweep": {"k": [1, 2, 4], "hidden": [0, 16]}},
                        {"solver": "gd", "sweep": {"step": [0.5, 1.0]}}]}
    cells = plan(REGISTRY, "s", body, scale="smoke")
    layers = [c for c in cells if c.solver == "gd_layer"]
    assert [(c.params["k"], c.params["hidden"]) for c in layers] == [(k, h) for k in (1, 2, 4) for h in (0, 16)]
    assert {c.solver_label for c in layers} == {"GD layer"}
    assert layers[1].sweep == {"solver": {"k": 1, "hidden": 16}}
    assert layers[1].fixed_params == ("hidden", "k", "lr")
    assert layers[1].describe() == "q x GD layer [hidden=16, k=1] x seed 0"
    assert len({c.cell_id for c in cells}) == len(cells) == 8
    # a swept tuned parameter is fixed: the step grid is not searched
    assert [(c.params["step"], "step" in c.fixed_params) for c in cells if c.solver == "gd"] == [(0.5, True),
                                                                                                (1.0, True)]


def test_problem_sweep_makes_one_setting_per_value_and_scales_choose_the_values():
    settings = {k: v for k, v in _TINY.items() if k != "n_train"}
    body = {"problems": [{"family": "quadratic", "label": "q", "settings": settings,
                          "sweep": {"n_train": [8, 16, 32], "scales": {"smoke": {"n_train": [8, 16]}}}}],
            "solvers": [{"solver": "gd_layer", "sweep": {"k": [1, 2]}}]}
    smoke = plan(REGISTRY, "s", body, scale="smoke")
    assert [(c.settings["n_train"], c.params["k"]) for c in smoke] == [(8, 1), (8, 2), (16, 1), (16, 2)]
    assert smoke[0].sweep == {"problem": {"n_train": 8}, "solver": {"k": 1}}
    assert {c.problem_label for c in smoke} == {"q"} and len({c.data_key for c in smoke}) == 2
    assert [c.settings["n_train"] for c in plan(REGISTRY, "s", body, scale="small")][::2] == [8, 16, 32]
    # problem selection and the solvers' `problems` use the entry's label
    assert len(plan(REGISTRY, "s", body, scale="smoke", problems=["q"])) == 4


_QUAD = '[[problems]]\nfamily = "quadratic"\nsettings = {d = 5, m = 4, mode = "given"}\n'


@pytest.mark.parametrize("body, where", [
    (_QUAD + '[[solvers]]\nsolver = "gd"\nsweep = [1, 2]\n',
     "solvers[0].sweep: expected a table of value lists, e.g. sweep = { k = [1, 2, 4] }"),
    (_QUAD + '[[solvers]]\nsolver = "gd"\nsweep = {k = 3}\n', "solvers[0].sweep.k: expected a non-empty list of "
                                                             "values, got 3"),
    (_QUAD + '[[solvers]]\nsolver = "gd"\nsweep = {k = []}\n', "solvers[0].sweep.k: expected a non-empty list of "
                                                              "values, got []"),
    (_QUAD + '[[solvers]]\nsolver = "gd"\nsweep = {kk = [1]}\n',
     "solvers[0].sweep.kk: unknown parameter of gd 'kk'; valid parameter of gds: k, step"),
    (_QUAD + '[[solvers]]\nsolver = "gd"\nsweep = {k = [1, 0]}\n', "solvers[0].sweep.k[1]: must be an int >= 1, "
                                                                  "got 0"),
    (_QUAD + '[[solvers]]\nsolver = "gd"\nparams = {k = 2}\nsweep = {k = [1, 3]}\n',
     "solvers[0].sweep.k: 'k' is also set in params (at scale smoke); set it in one place"),
    (_QUAD + '[[solvers]]\nsolver = "gd"\nsweep = {k = [1, 1]}\n', "solvers[0].sweep.k: a value is listed twice "
                                                                  "in [1, 1]"),
    (_QUAD + '[[solvers]]\nsolver = "gd"\nsweep = {k = [1], scales = {huge = {k = [2]}}}\n',
     "solvers[0].sweep.scales: unknown scale 'huge' (scales: smoke, small, paper)"),
    (_QUAD + '[[solvers]]\nsolver = "gd"\nsweep = {k = [1], scales = {smoke = {k = [true]}}}\n',
     "solvers[0].sweep.scales.smoke.k[0]: must be an int >= 1, got True"),
    ('[[problems]]\nfamily = "quadratic"\nsweep = {mode = ["given", "both"]}\n[[solvers]]\nsolver = "gd"\n',
     "problems[0].sweep.mode[1]: must be one of hybrid, given, got 'both'"),
    ('[[problems]]\nfamily = "quadratic"\nsweep = {mu = [0.1, 2.0]}\n[[solvers]]\nsolver = "gd"\n',
     "problems[0].settings [mu=2]: need 0 < mu < L (the eigenvalue range of Q*), got mu = 2.0, L = 1.0"),
])
def test_bad_sweeps_are_rejected_at_planning_naming_file_entry_and_key(tmp_path, body, where):
    path = tmp_path / "suite.toml"
    path.write_text(body)
    with pytest.raises(SuiteFileError) as info:
        plan(REGISTRY, str(path), load_suite_file(path), scale="smoke")
    assert str(info.value) == f"{path}.{where}"


def test_bad_sweep_in_a_suite_file_exits_2(cli, tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(_QUAD + '[[solvers]]\nsolver = "nag"\nsweep = {k = ["one"]}\n')
    code, out, err = cli("run", "--suite", str(path), "--results", str(tmp_path / "run"), "--no-progress")
    assert code == 2 and f"{path}.solvers[0].sweep.k[0]: must be an int >= 1, got 'one'" in err
    assert not (tmp_path / "run").exists()


def test_a_swept_run_carries_the_values_to_rows_leaderboard_and_curves(cli, tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text('[[problems]]\nfamily = "quadratic"\nlabel = "q"\n'
                    'settings = {d = 5, m = 4, mode = "given", n_train = 16, n_val = 32, n_test = 64, pool = 100}\n'
                    'sweep = {mu = [0.05, 0.2]}\n'
                    '[[solvers]]\nsolver = "gd"\nlabel = "GD"\nparams = {step = 1.0}\nsweep = {k = [1, 4, 16]}\n'
                    '[[solvers]]\nsolver = "nag"\nlabel = "NAG"\nparams = {step = 1.0}\nsweep = {k = [1, 4, 16]}\n')
    results = tmp_path / "run"
    code, out, err = cli("run", "--suite", str(path), "--scale", "smoke", "--results", str(results), "--no-progress")
    assert code == 0, out + err
    assert "q [mu=0.05] x GD [k=4] x seed 0: ok" in out
    df = read_results([results])
    assert set(df["solver"]) == {"GD", "NAG"} and set(df["problem"]) == {"q"}
    assert json.loads(df["sweep"].iloc[0]).keys() == {"problem", "solver"}
    curves = (expand_sweep(df).query("metric == 'l2_error' and split == 'test' and iteration.isna()")
              .groupby(["mu", "solver", "k"])["value"].mean())
    for mu in (0.05, 0.2):
        gd, nag = curves[mu, "GD"], curves[mu, "NAG"]
        assert list(gd.index) == [1, 4, 16] and gd.is_monotonic_decreasing and nag.is_monotonic_decreasing
        assert nag[16] < gd[16]  # NAG converges faster (thesis Table 4.1)
    board = leaderboard.table(df)
    assert {"q [mu=0.05]", "q [mu=0.2]"} == set(board.columns.get_level_values(0))
    assert list(board.index) == [f"{s} [k={k}]" for s in ("GD", "NAG") for k in (1, 4, 16)]
    assert "| GD [k=16]" in (results / "leaderboard.md").read_text()


def test_expand_sweep_names_columns_after_keys_and_resolves_clashes():
    import pandas as pd

    df = pd.DataFrame({"solver": ["a", "b", "c"], "seed": [0, 0, 0], "sweep": [
        json.dumps({"solver": {"k": 1, "seed": 3}}), json.dumps({"problem": {"k": 2}, "solver": {"k": 5}}), None]})
    out = expand_sweep(df)
    assert list(out.columns) == ["solver", "seed", "sweep", "solver.k", "solver.seed", "problem.k"]
    assert out["solver.k"].tolist()[:2] == [1, 5] and out["problem.k"].tolist()[1] == 2
    assert pd.isna(out["solver.k"].iloc[2]) and sweep_label("x", {}) == "x"
    label = sweep_label("x", {"lr": [0.01, 0.001], "mu": 0.5, "mode": "given"})
    assert label == "x [lr=[0.01,0.001], mode=given, mu=0.5]"


def test_results_of_schema_version_1_read_with_a_null_sweep(tmp_path):
    row = {c: None for c in COLUMNS if c != "sweep"}
    row.update(run_id="r", cell_id="c", suite="s", scale="smoke", problem="p", family="lasso", setting="{}",
               solver="FISTA", solver_name="fista", solver_params="{}", learned=False, seed=0, metric="nmse_db",
               value=-10.0, status="ok", device="cpu", l2obench_version="0", torch_version="0", python_version="3",
               timestamp=dt.datetime.now(dt.timezone.utc))
    old = pa.schema([SCHEMA.field(c) for c in COLUMNS if c != "sweep"], metadata={"l2obench.schema_version": "1"})
    pq.write_table(pa.Table.from_pylist([row], schema=old), tmp_path / "old.parquet")
    df = read_results([tmp_path])
    assert list(df.columns) == list(COLUMNS) and df["sweep"].isna().all()
    assert list(leaderboard.table(df).index) == ["FISTA"]


def test_readme_sweep_example_plans(tmp_path):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    body = next(b for b in re.findall(r"```toml\n(.*?)```", readme, flags=re.S) if b.startswith("# sweep:"))
    path = tmp_path / "sweep.toml"
    path.write_text(body)
    small = plan(REGISTRY, str(path), load_suite_file(path), scale="small")
    assert len(small) == 2 * 3 * 3
    assert [c.describe() for c in plan(REGISTRY, str(path), load_suite_file(path), scale="smoke")][:3] == [
        f"quad [n_train=100] x GD layer [hidden={h}, k=1] x seed 0" for h in (0, 16, 32)]
