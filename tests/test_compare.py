"""Pooling and comparing runs: one copy per cell, shared labels split, ``l2obench compare``."""
import json
import shutil

import pandas as pd
import pytest

from l2obench import leaderboard
from l2obench.pooling import PoolingWarning
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
    assert lines[0] == "problem,solver,seed,metric,A,B,B - A,same code"
    assert len(lines) == 3  # FISTA and ISTA at seed 0; seed 1 is in B only
    for line in lines[1:]:
        problem, solver, seed, metric, va, vb, diff, same = line.split(",")
        assert (problem, seed, metric, same) == ("tiny", "0", "nmse_db", "yes")
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
