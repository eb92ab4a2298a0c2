"""Leaderboards: solvers as rows, metrics per problem setting as columns.

Each cell of the table is the mean over seeds, with the standard deviation
when there are several seeds; the best value of each column is marked.
Swept values (the ``sweep`` column) are part of the labels: one row per
swept solver value, ``"GD layer [k=4]"``, one block per swept problem setting.
Rows of several runs are pooled by ``l2obench.pooling``: a cell present twice is
counted once, and a label naming different settings is split and marked ``‡``.
A solver run to a tolerance shows the fraction of test instances that met it
(``conv``); its name is marked ``†`` where some did not.
"""
from __future__ import annotations

import json
import math
from typing import Sequence

import pandas as pd
from tabulate import tabulate

from l2obench.errors import UsageError
from l2obench.pooling import pooled
from l2obench.suites import sweep_label

FORMATS = ("terminal", "markdown", "latex", "csv")

# Columns appended for every problem: (metric, split, heading, scale factor).
TIMING_COLUMNS = (
    ("iterations_mean", "test", "iters", 1.0),
    ("fit_seconds", None, "fit s", 1.0),
    ("solve_seconds_per_instance", "test", "solve ms/inst", 1e3),
)
# The fraction of test instances that met a solver's stopping tolerance, shown where recorded.
CONVERGED = ("converged_fraction", "test", "conv", 1.0)
NOT_CONVERGED_MARK = "†"
_NOT_QUALITY = {m for m, *_ in TIMING_COLUMNS} | {"solve_seconds", "latency_seconds", "error", "solve_seconds_full_depth",
                                                  "wall_clock_saved_fraction", CONVERGED[0]}


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

    Rows of several runs are pooled first (``l2obench.pooling.pooled``: a
    repeated cell counted once, a shared label split; each with a
    ``PoolingWarning``).

    Returns
    -------
    DataFrame
        Index: solver labels in order of appearance; columns: MultiIndex
        ``(problem, heading)``; values: dicts with ``mean``, ``std``, ``n``,
        ``status`` and ``best`` keys (rendered by ``render``).

    Raises
    ------
    UsageError
        No rows, an unknown metric, or a split the rows do not hold.
    """
    if df.empty:
        raise UsageError("no result rows to tabulate")
    splits = set(df["split"].dropna())
    if split not in splits | {"train", "val", "test"}:  # a standard split may be absent: every cell failed
        raise UsageError(f"split {split!r} not in these results; splits: {', '.join(sorted(splits))}")
    df = pooled(with_sweep_labels(df))
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
        if (rows["metric"] == CONVERGED[0]).any():
            specs.append((CONVERGED[0], CONVERGED[1], None, CONVERGED[2], CONVERGED[3]))
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
            if finite and not tied and direction in ("lower", "higher") and metric not in _NOT_QUALITY:
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


def format_entry(entry: dict, fmt: str) -> str:
    """One table entry as text in ``fmt`` (terminal, markdown, latex or html): mean ± std,
    status, undefined values, and the best of its column marked."""
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
        text = {"markdown": f"**{text}**", "latex": f"\\textbf{{{text}}}",
                "html": f"<strong>{text}</strong>"}.get(fmt, f"{text} *")
    return text


def _escape(text: str, fmt: str) -> str:
    """``text`` as literal table text in ``fmt`` (labels and headings, never rendered cells)."""
    if fmt == "latex":
        for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("_", r"\_"), ("%", r"\%"),
                              ("#", r"\#"), ("$", r"\$"), ("|", r"\textbar{}")):
            text = text.replace(char, escaped)
    elif fmt == "markdown":
        text = text.replace("|", r"\|")
    return text


def not_converged(entry) -> bool:
    """Whether a ``conv`` entry shows test instances that missed the solver's tolerance."""
    return isinstance(entry, dict) and entry["n"] > 0 and entry["mean"] < 1


def render(board: pd.DataFrame, fmt: str = "terminal") -> str:
    """The leaderboard as text: terminal, Markdown, LaTeX or CSV (raw means and stds).

    Labels and headings are escaped for Markdown (``|``) and LaTeX (``_``, ``&``,
    ``|``, ``%``, ``#``, ``$``, backslash). A solver whose ``conv`` is below 1 is
    marked ``†``, with a footnote.
    """
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
    blocks, flagged = [], False
    for problem in problems:
        sub = board[problem]
        ran = [solver for solver in sub.index if isinstance(sub.loc[solver].iloc[0], dict)]  # solvers of this problem
        marked = {solver for solver in ran if CONVERGED[2] in sub.columns and not_converged(sub.loc[solver, CONVERGED[2]])}
        flagged |= bool(marked)
        mark = " $^\\dagger$" if fmt == "latex" else f" {NOT_CONVERGED_MARK}"
        rows = [[_escape(solver, fmt) + (mark if solver in marked else "")]
                + [format_entry(sub.loc[solver, h], fmt) for h in sub.columns] for solver in ran]
        headers = ["solver"] + [_escape(h, fmt) for h in sub.columns]
        tablefmt = {"terminal": "simple", "markdown": "pipe", "latex": "latex_raw"}[fmt]
        title = {"markdown": f"### {_escape(problem, fmt)}\n", "latex": f"% {problem}\n"}.get(fmt, f"{problem}\n")
        blocks.append(title + tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True))
    note = {"terminal": "mean ± std over seeds; * best per column",
            "markdown": "Mean ± standard deviation over seeds; **bold**: best per column.",
            "latex": "% mean $\\pm$ std over seeds; bold: best per column"}[fmt]
    if flagged:
        footnote = (f"{NOT_CONVERGED_MARK} some test instances did not meet the solver's stopping tolerance "
                    "(conv: the fraction that did)")
        note += {"markdown": f"  \n{footnote}.", "latex": f"\n% {footnote}"}.get(fmt, f"\n{footnote}")
    return "\n\n".join(blocks) + f"\n\n{note}\n"
