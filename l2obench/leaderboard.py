"""Leaderboards: solvers as rows, metrics per problem setting as columns.

Each cell of the table is the mean over seeds, with the standard deviation
when there are several seeds; the best value of each column is marked.
Swept values (the ``sweep`` column) are part of the labels: one row per
swept solver value, ``"GD layer [k=4]"``, one block per swept problem setting.
"""
from __future__ import annotations

import json
import math
from typing import Sequence

import pandas as pd
from tabulate import tabulate

from l2obench.errors import UsageError
from l2obench.suites import sweep_label

FORMATS = ("terminal", "markdown", "latex", "csv")

# Columns appended for every problem: (metric, split, heading, scale factor).
TIMING_COLUMNS = (
    ("iterations_mean", "test", "iters", 1.0),
    ("fit_seconds", None, "fit s", 1.0),
    ("solve_seconds_per_instance", "test", "solve ms/inst", 1e3),
)
_NOT_QUALITY = {m for m, *_ in TIMING_COLUMNS} | {"solve_seconds", "latency_seconds", "error", "solve_seconds_full_depth",
                                                  "wall_clock_saved_fraction"}


def _default_metrics(final: pd.DataFrame) -> tuple[list[str], list[str]]:
    """A problem's default columns: its dB metrics, per subset, then its other quality
    metrics (support recovery, probability of success, ...) over the whole split; a linear
    metric whose dB twin is shown (``nmse`` beside ``nmse_db``) is left out."""
    present = [m for m in dict.fromkeys(final["metric"]) if m not in _NOT_QUALITY and m == m
               and not m.startswith("generalization_gap")]
    per_subset = [m for m in present if m.endswith("_db")]
    overall = [m for m in present if m not in per_subset and f"{m}_db" not in present]
    return (per_subset, overall) if per_subset else (present, [])


def table(df: pd.DataFrame, metrics: Sequence[str] | None = None, split: str = "test") -> pd.DataFrame:
    """Aggregate result rows into a leaderboard.

    Returns
    -------
    DataFrame
        Index: solver labels in order of appearance; columns: MultiIndex
        ``(problem, heading)``; values: dicts with ``mean``, ``std``, ``n``,
        ``status`` and ``best`` keys (rendered by ``render``).
    """
    if df.empty:
        raise UsageError("no result rows to tabulate")
    df = with_sweep_labels(df)
    final = df[df["iteration"].isna()]
    if metrics:
        missing = [m for m in metrics if m not in set(final["metric"])]
        if missing:
            raise UsageError(f"metric(s) {', '.join(missing)} not in these results; "
                             f"available: {', '.join(sorted(set(final['metric']) - {'error'}))}")
    ordered = df.sort_values("timestamp", kind="stable")
    problems = list(dict.fromkeys(ordered["problem"]))
    columns: dict[tuple[str, str], dict[str, dict]] = {}
    bad = df[df["status"] != "ok"].groupby(["problem", "solver"])["status"].first().to_dict()
    solvers_of = {problem: list(dict.fromkeys(ordered.loc[ordered["problem"] == problem, "solver"]))
                  for problem in problems}
    for problem in problems:
        rows = final[final["problem"] == problem]
        tested = rows[rows["split"] == split]
        if metrics:
            per_subset, overall = [m for m in metrics if m in set(rows["metric"])], []
        else:
            per_subset, overall = _default_metrics(tested)
        specs = []
        for metric in per_subset:
            subsets = list(dict.fromkeys(tested.loc[tested["metric"] == metric, "subset"]))
            specs += [(metric, split, sub, f"{metric}" + ("" if sub == "all" else f" [{sub}]"), 1.0) for sub in subsets]
        specs += [(metric, split, "all", metric, 1.0) for metric in overall]
        gap = [m for m in dict.fromkeys(rows["metric"]) if m.startswith("generalization_gap")]
        specs += [(m, split, "all", "gap", 1.0) for m in gap]
        for other in dict.fromkeys(rows["split"].dropna()):  # extra test splits, e.g. out of distribution
            if other not in ("train", "val", split):
                specs += [(metric, other, "all", f"{metric} [{other}]", 1.0) for metric in per_subset]
                specs += [(m, other, "all", f"gap [{other}]", 1.0) for m in gap]
        specs += [(m, s, None, heading, factor) for m, s, heading, factor in TIMING_COLUMNS]
        solvers = solvers_of[problem]
        for metric, sp, subset, heading, factor in specs:
            sel = rows[rows["metric"] == metric]
            if sp is not None:
                sel = sel[sel["split"] == sp]
            if subset is not None:
                sel = sel[sel["subset"] == subset]
            direction = sel["direction"].dropna().iloc[0] if sel["direction"].notna().any() else None
            column = {}
            for solver in solvers:
                recorded = sel.loc[sel["solver"] == solver, "value"]
                values = recorded.dropna() * factor
                # Rows without a value where the cell ran: the metric is undefined (e.g. 0/0), never a score.
                column[solver] = {"mean": values.mean() if len(values) else math.nan,
                                  "std": values.std(ddof=1) if len(values) > 1 else math.nan,
                                  "n": len(values), "status": bad.get((problem, solver)), "best": False,
                                  "undefined": len(values) < len(recorded)}
            finite = {s: c["mean"] for s, c in column.items()
                      if math.isfinite(c["mean"]) and not c["undefined"]}
            # No best when every solver ties (e.g. a probability of success of 0 for all).
            tied = len(finite) > 1 and len(set(finite.values())) == 1
            if finite and not tied and direction in ("lower", "higher") and metric not in {m for m, *_ in TIMING_COLUMNS}:
                pick = min if direction == "lower" else max
                best = pick(finite.values())
                for s, v in finite.items():
                    column[s]["best"] = v == best
            columns[(problem, heading)] = column
    every_solver = list(dict.fromkeys(ordered["solver"]))
    out = pd.DataFrame(columns, index=every_solver)
    out.columns = pd.MultiIndex.from_tuples(out.columns, names=["problem", "metric"])
    out.index.name = "solver"
    return out


def with_sweep_labels(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` whose ``problem`` and ``solver`` labels carry the swept values of their cells (``suites.sweep_label``)."""
    if "sweep" not in df.columns or df["sweep"].isna().all():
        return df
    sweeps = [json.loads(s) if isinstance(s, str) else {} for s in df["sweep"]]
    out = df.copy()
    for part in ("problem", "solver"):
        out[part] = [sweep_label(label, sweep.get(part, {})) for label, sweep in zip(df[part], sweeps)]
    return out


_ABSENT = {"mean": math.nan, "std": math.nan, "n": 0}


def _cell(entry: dict, fmt: str) -> str:
    if entry["n"] == 0:
        return entry["status"] or ("undefined" if entry.get("undefined") else "-")
    mean = entry["mean"]
    text = f"{mean:.2f}" if 1 <= abs(mean) < 1e4 else f"{mean:.3g}"
    if math.isfinite(entry["std"]):
        text += f" ± {entry['std']:.2g}" if fmt != "latex" else f" $\\pm$ {entry['std']:.2g}"
    if entry["status"]:
        text += f" ({entry['status']})"
    if entry.get("undefined"):
        text += " (undefined for some seeds)"
    if entry["best"]:
        text = {"markdown": f"**{text}**", "latex": f"\\textbf{{{text}}}"}.get(fmt, f"{text} *")
    return text


def render(board: pd.DataFrame, fmt: str = "terminal") -> str:
    """The leaderboard as text: terminal, Markdown, LaTeX or CSV (raw means and stds)."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    if fmt == "csv":
        flat = {}
        for (problem, heading), column in board.items():
            entries = [c if isinstance(c, dict) else _ABSENT for c in column]  # absent: not run on this problem
            flat[f"{problem} {heading} mean"] = [c["mean"] for c in entries]
            flat[f"{problem} {heading} std"] = [c["std"] for c in entries]
            flat[f"{problem} {heading} n"] = [c["n"] for c in entries]
        return pd.DataFrame(flat, index=board.index).to_csv()
    problems = list(dict.fromkeys(board.columns.get_level_values(0)))
    blocks = []
    for problem in problems:
        sub = board[problem]
        ran = [solver for solver in sub.index if isinstance(sub.loc[solver].iloc[0], dict)]  # solvers of this problem
        rows = [[solver] + [_cell(sub.loc[solver, h], fmt) for h in sub.columns] for solver in ran]
        headers = ["solver"] + list(sub.columns)
        tablefmt = {"terminal": "simple", "markdown": "pipe", "latex": "latex_raw"}[fmt]
        title = {"markdown": f"### {problem}\n", "latex": f"% {problem}\n"}.get(fmt, f"{problem}\n")
        blocks.append(title + tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True))
    note = {"terminal": "mean ± std over seeds; * best per column",
            "markdown": "Mean ± standard deviation over seeds; **bold**: best per column.",
            "latex": "% mean $\\pm$ std over seeds; bold: best per column"}[fmt]
    return "\n\n".join(blocks) + f"\n\n{note}\n"
