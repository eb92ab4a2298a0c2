"""Break-even cost: hand-computed values on a synthetic table, and a real tiny run."""
import datetime as dt
import html
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from l2obench import breakeven
from l2obench.breakeven import NEVER, NONE_AS_GOOD, break_even_instances
from l2obench.results import read_results
from l2obench.schema import COLUMNS
from test_cli import TINY_SUITE

REPO = Path(__file__).resolve().parents[1]

KNOWN = {"lasso": "nmse_db"}


@pytest.mark.parametrize("fit_l, solve_l, fit_c, solve_c, expected", [
    (100.0, 0.25, 10.5, 1.25, 90.0),   # ceil(89.5 / 1.0)
    (100.0, 0.25, 0.0, 0.5, 400.0),    # exactly 400: equal cost there, so no more than from 400 on
    (2.0, 0.25, 10.5, 1.25, 0.0),      # cheaper to fit and to solve
    (2.0, 2.0, 10.5, 1.5, NEVER),      # cheaper to fit, slower to solve: costs more from some N on
    (100.0, 1.0, 10.0, 1.0, NEVER),    # as fast, dearer to fit
    (10.0, 1.0, 10.0, 1.0, 0.0),       # the same costs
])
def test_break_even_instances_follows_the_formula(fit_l, solve_l, fit_c, solve_c, expected):
    assert break_even_instances(fit_l, solve_l, fit_c, solve_c) == expected


def _rows(solver, learned, nmse, fit, solve, seed=0, problem="p", direction="lower", metric="nmse_db"):
    base = {c: None for c in COLUMNS}
    base.update(run_id="r", cell_id=f"{problem}-{solver}-{seed}", suite="s", scale="small", problem=problem,
                family="lasso", setting=json.dumps({"label": problem}), solver=solver, solver_name=solver,
                solver_params="{}", learned=learned, seed=seed, status="ok", device="cpu",
                l2obench_version="0", torch_version="0", python_version="3",
                timestamp=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), identity=f"{solver}{seed}")
    return [{**base, "metric": metric, "split": "test", "subset": "all", "value": nmse, "direction": direction},
            {**base, "metric": "fit_seconds", "split": "train" if learned else "val", "value": fit},
            {**base, "metric": "solve_seconds_per_instance", "split": "test", "value": solve}]


def test_table_takes_the_largest_break_even_over_classical_solvers_at_least_as_good():
    rows = (_rows("C1", False, -18.0, 5.0, 1.5) + _rows("C2", False, -21.0, 10.5, 1.25)
            + _rows("C3", False, -20.0, 0.0, 0.5)
            + _rows("L1", True, -20.0, 100.0, 0.25)   # as good: C2 (N* 90) and C3 (400, equal metric)
            + _rows("L2", True, -22.0, 100.0, 0.25)   # better than every classical solver
            + _rows("L3", True, -17.0, 1.0, 2.0)      # slower than all three, worse than all three
            + _rows("L4", True, -20.5, 2.0, 0.25))    # only C2 as good; cheaper on both counts
    board = breakeven.table(pd.DataFrame(rows), KNOWN).set_index("solver")
    assert board["break_even"].to_dict() == pytest.approx({"L1": 400.0, "L2": math.nan, "L3": NEVER, "L4": 0.0},
                                                          nan_ok=True)
    assert board["against"].to_dict() == {"L1": "C3", "L2": NONE_AS_GOOD, "L3": "C1", "L4": "C2"}
    assert board["as_good"].to_dict() == {"L1": 2, "L2": 0, "L3": 3, "L4": 1}
    assert set(board["classical"]) == {3}
    text = breakeven.render(board.reset_index(), "terminal")
    assert [line.split()[1] for line in text.splitlines()[3:7]] == ["L1", "L2", "L3", "L4"]
    assert "400" in text and "never" in text and "—" in text and NONE_AS_GOOD in text
    latex = breakeven.render(board.reset_index(), "latex")
    assert "\\begin{tabular}" in latex and "---" in latex and "—" not in latex


def test_higher_is_better_metrics_and_seeds_in_common():
    # C ran seeds 0 and 1; L seed 0 only: compared on seed 0, where C (0.5) is not as good as L (0.6).
    rows = (_rows("C", False, 0.5, 1.0, 0.5, seed=0, direction="higher", metric="nmse_db")
            + _rows("C", False, 0.9, 1.0, 0.5, seed=1, direction="higher", metric="nmse_db")
            + _rows("L", True, 0.6, 3.0, 0.25, seed=0, direction="higher", metric="nmse_db"))
    board = breakeven.table(pd.DataFrame(rows), KNOWN)
    assert board["as_good"].tolist() == [0] and board["against"].tolist() == [NONE_AS_GOOD]
    rows[0]["value"] = 0.6  # C as good on seed 0: N* = ceil((3 - 1) / (0.5 - 0.25)) = 8
    board = breakeven.table(pd.DataFrame(rows), KNOWN)
    assert board["break_even"].tolist() == [8.0] and board["against"].tolist() == ["C"]


def test_break_even_of_a_real_tiny_run_in_the_leaderboard(cli, tmp_path):
    body = json.loads(json.dumps(TINY_SUITE))
    body["solvers"] += [{"solver": "ista", "label": "ISTA (T=1000)", "params": {"max_iter": 1000, "tol": 0.0,
                                                                                "lam": 0.05}},
                        {"solver": "lista", "label": "LISTA (T=4)", "params": {"n_layers": 4},
                         "budget": {"steps": 20, "batch_size": 16, "eval_every": 10}}]
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps(body))
    code, out, err = cli("run", "--suite", str(suite), "--results", str(tmp_path / "run"), "--no-progress")
    assert code == 0, out + err
    code, out, err = cli("leaderboard", str(tmp_path / "run"), "--break-even")
    assert code == 0, err
    df = read_results([tmp_path / "run"])
    final = df[df["iteration"].isna()]
    value = lambda solver, metric: final.loc[(final["solver"] == solver) & (final["metric"] == metric)  # noqa: E731
                                             & (final["subset"].isin(["all"]) | final["subset"].isna())
                                             & final["split"].isin(["test", "train", "val"] if metric == "fit_seconds"
                                                                   else ["test"]), "value"].item()
    lista = "LISTA (T=4)"
    expected, against = None, NONE_AS_GOOD
    for classical in ("FISTA (T=10)", "ISTA (T=1000)"):
        if value(classical, "nmse_db") <= value(lista, "nmse_db"):
            n = break_even_instances(*(value(s, m) for s in (lista, classical)
                                       for m in ("fit_seconds", "solve_seconds_per_instance")))
            if expected is None or n > expected:
                expected, against = n, classical
    shown = breakeven.format_instances(math.nan if expected is None else expected)
    line = next(line for line in out.splitlines() if line.startswith("tiny") and lista in line)
    assert shown in line and against in line
    code, _, err = cli("report", str(tmp_path / "run"), "-o", str(tmp_path / "report"))
    assert code == 0, err
    page = (tmp_path / "report" / "index.html").read_text()
    section = page[page.index('<h2 id="break-even">'):]
    assert f"<td>{html.escape(lista)}</td>" in section and f"<td>{shown}</td><td>{html.escape(against)}</td>" in section


def test_the_readme_figure_is_that_of_the_published_run():
    board = breakeven.table(read_results([REPO / "results" / "sparse-small"]))
    row = board.set_index(["problem", "solver"]).loc[("l2s-kappa5", "LISTA (T=20)")]
    assert (row["break_even"], row["against"], row["as_good"]) == (442037, "FISTA (T=100)", 3)
    assert "442,037 instances against FISTA (T=100)" in " ".join((REPO / "README.md").read_text().split())
