"""Pooling and comparing runs: one copy per cell, shared labels split, ``l2obench compare``."""
import json
import shutil
import warnings

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from l2obench import leaderboard
from l2obench.pooling import PoolingWarning
from l2obench.report import write_report
from l2obench.results import read_results

SUITE = {
    "seeds": [0],
    "problems": [{"family": "lasso", "label": "tiny",
                  "settings": {"m": 10, "n": 20, "n_train": 16, "n_val": 16, "n_test": 24}}],
    "solvers": [{"solver": "fista", "label": "FISTA (T=10)", "params": {"max_iter": 10, "tol": 0.0, "lam": 0.05}},
                {"solver": "ista", "label": "ISTA (T=10)", "params": {"max_iter": 10, "tol": 0.0, "lam": 0.05}}],
}


@pytest.fixture
def runs(cli, tmp_path):
    """Run A (seed 0), run B (seeds 0 and 1, the same suite) and run C (label "tiny" with n_test = 32)."""
    def run(name, body, *extra):
        suite = tmp_path / f"{name}.json"
        suite.write_text(json.dumps(body))
        code, out, err = cli("run", "--suite", str(suite), "--results", str(tmp_path / name), "--no-progress", *extra)
        assert code == 0, out + err
        return tmp_path / name

    other = json.loads(json.dumps(SUITE))
    other["problems"][0]["settings"]["n_test"] = 32
    return run("a", SUITE), run("b", SUITE, "--seeds", "0,1"), run("c", other)


def test_a_cell_in_two_runs_counts_once_with_a_warning(runs, tmp_path):
    a, b, _ = runs
    with pytest.warns(PoolingWarning, match="2 cell\\(s\\) present in several runs .* counted once"):
        board = leaderboard.table(read_results([a, b]))
    assert board[("tiny", "nmse_db")]["FISTA (T=10)"]["n"] == 2  # seeds 0 and 1, not seed 0 twice
    copy = tmp_path / "copy"
    shutil.copytree(a, copy)
    with pytest.warns(PoolingWarning, match="read twice"):
        board = leaderboard.table(read_results([a, copy]))
    assert board[("tiny", "nmse_db")]["FISTA (T=10)"]["n"] == 1


def test_a_label_naming_different_settings_shows_as_separate_marked_blocks(runs, cli):
    a, _, c = runs
    with pytest.warns(PoolingWarning, match="'tiny' name different settings"):
        board = leaderboard.table(read_results([a, c]))
    assert set(board.columns.get_level_values(0)) == {"tiny ‡ n_test=24", "tiny ‡ n_test=32"}
    code, out, err = cli("leaderboard", str(a), str(c))
    assert code == 0 and "tiny ‡ n_test=24" in out and "tiny ‡ n_test=32" in out
    assert "l2obench: warning: problem label(s) 'tiny' name different settings" in err


def test_compare_shows_both_values_and_the_difference_per_shared_cell(runs, cli):
    a, b, c = runs
    code, out, err = cli("compare", str(a), str(b), "--format", "csv")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "problem,solver,seed,metric,A,B,B - A,same code,same data"
    assert len(lines) == 3  # FISTA and ISTA at seed 0; seed 1 is in B only
    for line in lines[1:]:
        problem, solver, seed, metric, va, vb, diff, same, data = line.split(",")
        assert (problem, seed, metric, same, data) == ("tiny", "0", "nmse_db", "yes", "yes")
        assert float(diff) == pytest.approx(float(vb) - float(va), abs=1e-12)
    code, out, _ = cli("compare", str(a), str(b), "--subset", "snr=20")
    assert code == 0 and "nmse_db [snr=20]" in out and "2 shared cell(s)" in out
    code, _, err = cli("compare", str(a), str(c))
    assert code == 2 and "share no cell" in err


def test_a_cell_recomputed_with_other_code_is_never_averaged_with_the_older_one(runs):
    a, b, _ = runs
    old, new = read_results([a]), read_results([b])
    new = new.assign(identity=new["identity"] + "-edited")  # as if a plugin's code had changed
    with pytest.warns(PoolingWarning, match="another identity: recomputed"):
        board = leaderboard.table(pd.concat([old, new], ignore_index=True))
    assert board[("tiny", "nmse_db")]["FISTA (T=10)"]["n"] == 2


def _drawn_elsewhere(rows: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """``rows`` as if their data had been drawn under other CPU kernels: another ``data_hash`` on ``split``."""
    other = rows["split"] == split
    return rows.assign(data_hash=rows["data_hash"].where(~other, "elsewhere-" + rows["data_hash"]))


def _copy_drawn_elsewhere(run, copy, keep=lambda rows: True):
    """A copy of run directory ``run`` whose cell files say their test data were drawn elsewhere; the
    cells whose rows ``keep`` refuses are left out."""
    shutil.copytree(run, copy)
    for path in (copy / "cells").glob("*.parquet"):
        table = pq.read_table(path)
        if not keep(table.to_pandas()):
            path.unlink()
            continue
        hashes = _drawn_elsewhere(table.to_pandas())["data_hash"]
        column = table.schema.get_field_index("data_hash")
        pq.write_table(table.set_column(column, table.schema.field(column), pa.array(hashes, pa.string())), path)
    return copy


def test_solvers_pooled_from_runs_with_different_data_are_warned_about_in_tables_and_reports(runs, cli, tmp_path):
    a, b, _ = runs
    rows_a, rows_b = read_results([a]), _drawn_elsewhere(read_results([b]))
    fista_a = rows_a[rows_a["solver"] == "FISTA (T=10)"]
    ista_b = rows_b[(rows_b["solver"] == "ISTA (T=10)") & (rows_b["seed"] == 0)]
    with pytest.warns(PoolingWarning, match=r"1 problem setting\(s\) hold different data .* tiny / seed 0 / test"):
        leaderboard.table(pd.concat([fista_a, ista_b], ignore_index=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PoolingWarning)  # the same data in both: nothing to say
        leaderboard.table(pd.concat([fista_a, read_results([b]).query("solver == 'ISTA (T=10)' and seed == 0")]))
    ista = _copy_drawn_elsewhere(b, tmp_path / "ista", keep=lambda rows: set(rows["solver"]) == {"ISTA (T=10)"})
    code, out, err = cli("report", str(a), str(ista), "-o", str(tmp_path / "report"))
    assert code == 0, err
    assert "hold different data in different runs" in err
    page = (tmp_path / "report" / "index.html").read_text()
    assert "<h2>Pooling the runs</h2>" in page and "hold different data in different runs" in page
    assert "present in several runs" in page  # ISTA's seed 0 is in both runs: counted once, said there too
    with warnings.catch_warnings(record=True) as caught:  # a library caller gets each warning once
        warnings.simplefilter("always")
        write_report(read_results([a, ista]), tmp_path / "again")
    messages = [str(w.message) for w in caught if issubclass(w.category, PoolingWarning)]
    assert len(messages) == 2 and "present in several runs" in messages[0] and "different data" in messages[1]


def test_compare_says_when_a_shared_cell_was_measured_on_other_data(runs, cli, tmp_path):
    a, b, _ = runs
    moved = _copy_drawn_elsewhere(b, tmp_path / "moved")
    code, out, err = cli("compare", str(a), str(moved))
    assert code == 0, err
    assert "2 shared cell(s); B - A per cell; 2 measured on other data in the two runs" in out
    code, out, _ = cli("compare", str(a), str(moved), "--format", "csv")
    assert code == 0 and all(line.endswith(",yes,no") for line in out.strip().splitlines()[1:])
