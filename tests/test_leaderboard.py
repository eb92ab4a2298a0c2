"""The leaderboard on the published small run: per-problem solvers and metrics, best marks."""
from pathlib import Path

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
