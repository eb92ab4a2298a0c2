"""Break-even cost: after how many instances a learned solver's training has paid off.

Solving N instances of a problem setting with solver S costs ``F_S + N s_S``: its fit
time ``F`` (a learned solver's training; a classical solver's tuning on the validation
split, zero when it has nothing to tune) and its solve time per test instance ``s``.
A learned solver L costs no more than a classical solver C for every N >= N*(L, C)::

    N*(L, C) = 0                                if F_L <= F_C and s_L <= s_C
             = ceil((F_L - F_C) / (s_C - s_L))  if F_L >  F_C and s_L <  s_C
             = never                            if s_L > s_C, or s_L = s_C and F_L > F_C

Only classical solvers whose primary metric (test split, all instances) is at least as
good as L's are compared, each over the seeds both ran (means of the metric, F and s
over those seeds). L's break-even is the largest N* over them: from there on, L costs
no more than whichever of them is cheapest at that N. Where no classical solver is as
good, L has no break-even: nothing classical reaches its metric at any cost.
"""
from __future__ import annotations

import math

import pandas as pd
from tabulate import tabulate

from l2obench.compare import primary_metric, primary_metrics
from l2obench.errors import UsageError
from l2obench.leaderboard import with_sweep_labels
from l2obench.pooling import pooled

FORMATS = ("terminal", "markdown", "latex", "csv")
COLUMNS = ("problem", "solver", "metric", "value", "fit_seconds", "solve_seconds_per_instance", "break_even",
           "against", "as_good", "classical")
NEVER = math.inf
NONE_AS_GOOD = "no classical as good"


def break_even_instances(fit_learned: float, solve_learned: float, fit_classical: float,
                         solve_classical: float) -> float:
    """N*(L, C): the number of instances from which L's total cost is no more than C's.

    Parameters
    ----------
    fit_learned, solve_learned : float
        The learned solver's fit time and solve time per instance (seconds).
    fit_classical, solve_classical : float
        The classical solver's (its tuning time and solve time per instance).

    Returns
    -------
    float
        A whole number of instances, or ``NEVER`` (infinity).
    """
    if solve_learned > solve_classical:
        return NEVER
    if fit_learned <= fit_classical:
        return 0.0
    if solve_learned == solve_classical:
        return NEVER
    return float(math.ceil((fit_learned - fit_classical) / (solve_classical - solve_learned)))


def _per_seed(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (solver, seed): the metric, fit seconds and solve seconds per instance of ok cells."""
    final = rows[rows["iteration"].isna() & (rows["status"] == "ok")]
    picks = {
        "value": final[(final["metric"] == metric) & (final["split"] == "test") & (final["subset"] == "all")],
        "fit": final[final["metric"] == "fit_seconds"],
        "solve": final[(final["metric"] == "solve_seconds_per_instance") & (final["split"] == "test")],
    }
    series = [sel.groupby(["solver", "seed"])["value"].mean().rename(name) for name, sel in picks.items()]
    return pd.concat(series, axis=1).dropna()


def table(df: pd.DataFrame, known: dict | None = None) -> pd.DataFrame:
    """The break-even of every learned solver on every problem setting of result rows ``df``.

    Rows of several runs are pooled as by the leaderboard (``l2obench.pooling.pooled``).

    Parameters
    ----------
    df : DataFrame
        Result rows (``l2obench.results.read_results``).
    known : dict, optional
        Each family's primary metric (default: from the installed plugins,
        ``l2obench.compare.primary_metrics``).

    Returns
    -------
    DataFrame
        One row per (problem, learned solver) with ``COLUMNS``: the learned
        solver's ``value`` of ``metric``, ``fit_seconds`` and
        ``solve_seconds_per_instance`` (means over its seeds); ``break_even``,
        the largest N* over the ``as_good`` classical solvers (of ``classical``
        compared), ``NEVER`` (infinity) or NaN when none is as good; ``against``,
        the classical solver that sets it (``NONE_AS_GOOD`` when none).

    Raises
    ------
    UsageError
        No rows.
    """
    if df.empty:
        raise UsageError("no result rows to compute break-even costs from")
    df = pooled(with_sweep_labels(df)).sort_values("timestamp", kind="stable")  # the leaderboard's order
    known = primary_metrics(set(df["family"])) if known is None else known
    out = []
    for problem, rows in df.groupby("problem", sort=False):
        metric = primary_metric(rows["family"].iloc[0], rows["metric"].unique(), known)
        if metric is None:
            continue
        directions = rows.loc[rows["metric"] == metric, "direction"].dropna()
        sign = -1.0 if len(directions) and directions.iloc[0] == "higher" else 1.0  # sign * value: lower is better
        learned = rows.groupby("solver", sort=False)["learned"].first()
        seeds = _per_seed(rows, metric)
        ran = set(seeds.index.get_level_values("solver"))
        classical = [s for s in learned.index if not learned[s] and s in ran]
        for solver in (s for s in learned.index if learned[s] and s in ran):
            mine = seeds.loc[solver]
            best, against, as_good = None, NONE_AS_GOOD, 0
            for other in classical:
                common = mine.index.intersection(seeds.loc[other].index)
                if common.empty:
                    continue
                a, b = mine.loc[common].mean(), seeds.loc[other].loc[common].mean()
                if sign * b["value"] > sign * a["value"]:
                    continue
                as_good += 1
                n = break_even_instances(a["fit"], a["solve"], b["fit"], b["solve"])
                if best is None or n > best:
                    best, against = n, other
            means = mine.mean()
            out.append({"problem": problem, "solver": solver, "metric": metric, "value": means["value"],
                        "fit_seconds": means["fit"], "solve_seconds_per_instance": means["solve"],
                        "break_even": math.nan if best is None else best, "against": against,
                        "as_good": as_good, "classical": len(classical)})
    return pd.DataFrame(out, columns=list(COLUMNS))


def format_instances(n: float) -> str:
    """A break-even as shown: a whole number, ``never``, or ``—`` (no classical solver as good)."""
    if math.isnan(n):
        return "—"
    return "never" if math.isinf(n) else f"{int(n):,}"


def displayed(board: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Headings and text rows of a break-even table, as the leaderboard and the report show it."""
    headers = ["problem", "learned solver", "metric", "fit s", "solve ms/inst", "break-even N", "against",
               "as good / classical"]
    rows = [[r.problem, r.solver, f"{r.metric} {r.value:.4g}", f"{r.fit_seconds:.3g}",
             f"{r.solve_seconds_per_instance * 1e3:.3g}", format_instances(r.break_even), r.against,
             f"{r.as_good} / {r.classical}"] for r in board.itertuples()]
    return headers, rows


def render(board: pd.DataFrame, fmt: str = "terminal") -> str:
    """The break-even table as text: terminal, Markdown, LaTeX or CSV (raw values; ``inf``: never)."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    if fmt == "csv":
        return board.to_csv(index=False)
    if board.empty:
        return "break-even: no learned solver with timings in these results\n"
    headers, rows = displayed(board)
    if fmt == "latex":
        rows = [[text.replace("—", "---") for text in row] for row in rows]
    tablefmt = {"terminal": "simple", "markdown": "pipe", "latex": "latex"}[fmt]
    title = {"markdown": "### Break-even\n", "latex": "% break-even\n"}.get(fmt, "break-even\n")
    note = ("break-even N: instances after which the learned solver's fit + N solves cost no more than those of "
            "every classical solver at least as good (their tuning included); never: it solves slower; "
            "—: no classical solver is as good")
    note = {"latex": f"% {note.replace('—', '---')}", "markdown": note[0].upper() + note[1:] + "."}.get(fmt, note)
    return f"{title}{tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True)}\n\n{note}\n"
