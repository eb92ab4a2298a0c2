"""Training curves (validation score against step) and tuning curves (validation loss per grid point) in results."""
import json
import math

import pytest

from l2obench import leaderboard
from l2obench.results import read_results
from l2obench.training import training_curve


def _entries(steps, start=0.0, **fields):
    return [{"step": s, "train_loss": math.nan if s == 0 else 1.0 / s, "val_metric": 10.0 - s / 10,
             "seconds": start + s / 100, **fields} for s in steps]


def test_training_curve_counts_steps_and_seconds_over_the_whole_schedule():
    # train_stages: two train calls one after the other, each counting from step 0
    curve = training_curve(_entries([0, 10, 20], lr=0.01) + _entries([0, 10], lr=0.001))
    assert [p["step"] for p in curve] == [0, 10, 20, 20, 30]
    assert [p["seconds"] for p in curve] == pytest.approx([0, 0.1, 0.2, 0.2, 0.3])
    assert [p["stage"] for p in curve] == ["lr 0.01"] * 3 + ["lr 0.001"] * 2
    # a learned-stopping history: named stages, and a stop_support that is no curve
    curve = training_curve({"stage1": _entries([0, 5], lr=0.1), "stage2": _entries([0, 5, 10]),
                            "stop_support": {"q_phi_mean": [0.5, 0.5], "stop_layers": [1]}})
    assert [(p["stage"], p["step"]) for p in curve] == [("stage1 lr 0.1", 0), ("stage1 lr 0.1", 5), ("stage2", 5),
                                                        ("stage2", 10), ("stage2", 15)]
    # calls that nothing tells apart are numbered, so that no two rows share a stage and a step
    curve = training_curve(_entries([0, 5]) + _entries([0, 5]))
    assert [p["stage"] for p in curve] == ["", "", "#2", "#2"]
    assert training_curve([]) == [] and training_curve({"stop_support": {}}) == []


SUITE = {
    "seeds": [0],
    "problems": [{"family": "lasso", "label": "tiny",
                  "settings": {"m": 10, "n": 20, "n_train": 32, "n_val": 16, "n_test": 16}}],
    "solvers": [
        {"solver": "ista", "label": "ISTA", "params": {"max_iter": 20, "tol": 0.0}},
        {"solver": "lista", "label": "LISTA", "params": {"n_layers": 3},
         "budget": {"steps": 20, "batch_size": 16, "eval_every": 5}},
    ],
}


def test_training_and_tuning_curves_are_written_with_the_cell_and_kept_from_the_cache(cli, tmp_path):
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps(SUITE))
    runs = []
    for name in ("first", "cached"):
        code, out, err = cli("run", "--suite", str(suite), "--results", str(tmp_path / name), "--no-progress")
        assert code == 0, out + err
        runs.append(read_results([tmp_path / name]))
    assert "(cached)" in out
    df = runs[0]

    training = df[df["metric"] == "training_val_score"].sort_values("iteration", kind="stable")
    assert set(training["solver"]) == {"LISTA"} and set(training["split"]) == {"val"}
    assert training["iteration"].iloc[0] == 0 and training["iteration"].is_monotonic_increasing
    assert training["wall_clock_s"].is_monotonic_increasing and training["value"].notna().all()
    loss = df[df["metric"] == "training_loss"]
    # the running training loss exists from each stage's first step on (not at a stage's step 0)
    assert set(loss["split"]) == {"train"} and 0 < len(loss) < len(training)
    assert set(loss["iteration"]) <= set(training["iteration"])

    tuning = df[df["metric"] == "tuning_val_loss"].sort_values("iteration")
    assert set(tuning["solver"]) == {"ISTA"} and list(tuning["iteration"]) == list(range(1, len(tuning) + 1))
    points = [json.loads(p) for p in tuning["solver_params"]]
    tuned = [k for k in points[0] if len({json.dumps(p[k]) for p in points}) > 1]
    assert tuned and len(tuning) == len({json.dumps([p[k] for k in tuned]) for p in points})
    # the point the tuning chose is the one of least validation loss, and it is what the cell ran with
    chosen = json.loads(df.loc[(df["solver"] == "ISTA") & (df["metric"] == "solve_seconds"), "solver_params"].item())
    best = points[int(tuning["value"].to_numpy().argmin())]
    assert {k: chosen[k] for k in tuned} == {k: best[k] for k in tuned}

    cached = runs[1]
    for metric in ("training_val_score", "tuning_val_loss"):
        def values(frame):
            return frame[frame["metric"] == metric].sort_values(["solver", "iteration"])["value"].tolist()
        assert values(cached) == values(df) and values(df), metric

    # curves are not results: no leaderboard column, not even on the validation split
    board = leaderboard.table(df, split="val")
    headings = set(board.columns.get_level_values(1))
    assert not headings & {"training_val_score", "training_loss", "tuning_val_loss"}
