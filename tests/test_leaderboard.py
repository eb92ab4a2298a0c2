"""The leaderboard on the published small run: per-problem solvers and metrics, best marks."""
from pathlib import Path

import pandas as pd
import pytest

from l2obench import leaderboard
from l2obench.results import read_results

PUBLISHED = Path(__file__).resolve().parent.parent / "results" / "sparse-small"


def test_each_problem_shows_its_own_solvers_and_metrics_and_no_best_on_ties():
    board = leaderboard.table(read_results([PUBLISHED]))
    text = leaderboard.render(board, "markdown")
    blocks = {block.split("\n", 1)[0][4:]: block for block in text.split("\n\n") if block.startswith("### ")}
    assert set(blocks) == {"l2s-kappa5", "slr", "spe-er", "spe-grid-sweep"}
    assert "LISTA (T=20)" in blocks["l2s-kappa5"] and "LISTA (T=20)" not in blocks["slr"]
    assert "GLAD" in blocks["spe-er"] and "GLAD" not in blocks["slr"]
    assert "support_f1" in blocks["slr"] and "success" in blocks["spe-er"] and "nmse_db [ood]" in blocks["l2s-kappa5"]
    assert "nmse |" not in blocks["slr"]  # the linear twin of nmse_db is left out
    exact = board[("spe-er", "exact_recovery")].dropna()
    assert {entry["mean"] for entry in exact} == {0.0}  # every solver fails at d = 20, M = 20 ...
    assert not any(entry["best"] for entry in exact)  # ... so none is marked best
    nmse = board[("spe-er", "nmse_db")].dropna()
    assert [s for s, entry in nmse.items() if entry["best"]] == ["GLAD"]


def _published_rows(problem="slr"):
    df = read_results([PUBLISHED])
    return df[df["problem"] == problem]


def test_converged_fraction_shows_as_conv_and_marks_rows_below_one():
    df = _published_rows()
    df = df[df["metric"] != "converged_fraction"]  # the published ones are all 1 on slr
    template = df[(df["metric"] == "iterations_mean") & df["solver"].isin(["FISTA (converged)", "ISTA (converged)"])]
    conv = template.assign(metric="converged_fraction", direction="higher",
                           value=[1.0 if s == "FISTA (converged)" else 0.9 for s in template["solver"]])
    board = leaderboard.table(pd.concat([df, conv], ignore_index=True))
    assert board[("slr", "conv")]["ISTA (converged)"]["mean"] == pytest.approx(0.9)
    assert not any(isinstance(e, dict) and e["best"] for e in board[("slr", "conv")])
    text = leaderboard.render(board, "markdown")
    names = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")]
    assert "ISTA (converged) †" in names and "FISTA (converged)" in names
    assert "† some test instances did not meet the solver's stopping tolerance" in text
    assert ("slr", "conv") not in leaderboard.table(df).columns  # only where recorded


def test_labels_are_escaped_in_latex_and_markdown():
    df = _published_rows()
    df = df.assign(solver=df["solver"].replace({"APF": "APF_mcp & l1|x"}))
    latex = leaderboard.render(leaderboard.table(df), "latex")
    assert r"APF\_mcp \& l1\textbar{}x" in latex
    assert r"support\_f1" in latex and "support_f1" not in latex
    markdown = leaderboard.render(leaderboard.table(df), "markdown")
    assert r"APF_mcp & l1\|x" in markdown


def test_unknown_split_is_an_error_with_exit_2(cli):
    code, out, err = cli("leaderboard", str(PUBLISHED), "--split", "nope")
    assert code == 2 and out == ""
    assert "split 'nope' not in these results; splits: ood, test, train, val" in err
