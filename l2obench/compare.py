"""Comparing two runs cell by cell: the same computation asked for, both values, their difference.

Two cells are the same when their ``cell_id`` is: it hashes the family, the data
settings, the seed, the solver, its planned parameters and budget, never labels.
"""
from __future__ import annotations

import math
import warnings

import pandas as pd

from l2obench.errors import UsageError
from l2obench.leaderboard import with_sweep_labels
from l2obench.pooling import one_copy_per_cell

FALLBACK_METRICS = ("nmse_db", "psnr", "l2_error")


def primary_metrics(families) -> dict[str, str | None]:
    """Each family's ``primary_metric``, from the installed plugins (None where not installed)."""
    from l2obench.registry import Registry

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        registry = Registry()
    out = {}
    for family in families:
        try:
            out[family] = registry.problem(family).load().primary_metric or None
        except Exception:  # noqa: BLE001 - a family not installed here, or broken: fall back on the rows
            out[family] = None
    return out


def primary_metric(family: str | None, metrics, known: dict | None = None) -> str | None:
    """The metric to show for ``family``: its registered primary metric when the rows hold it,
    else the first of ``FALLBACK_METRICS`` they hold, else None."""
    held = set(metrics)
    name = (known or {}).get(family)
    if name in held:
        return name
    return next((m for m in FALLBACK_METRICS if m in held), None)


def compare(a: pd.DataFrame, b: pd.DataFrame, metric: str | None = None, split: str = "test",
            subset: str = "all") -> pd.DataFrame:
    """Per cell present in both runs, the value of ``metric`` in each and ``B - A``.

    Parameters
    ----------
    a, b : DataFrame
        Result rows of run A and run B (``l2obench.results.read_results``).
    metric : str, optional
        Default: each family's primary metric.
    split, subset : str
        Which value of a cell is compared (``subset`` e.g. ``"snr=20"``).

    Returns
    -------
    DataFrame
        One row per shared cell: ``problem``, ``solver``, ``seed``, ``metric``,
        ``A``, ``B``, ``B - A``, ``same code`` (whether the cells' identities
        match: ``yes``, ``no``, or ``unknown`` for files written before identities)
        and ``same data`` (whether the split's ``data_hash`` is the same: the runs
        measured the cell on the same instances).

    Raises
    ------
    UsageError
        When the runs share no cell, or no value of the metric.
    """
    a, b = (with_sweep_labels(one_copy_per_cell(df)) for df in (a, b))
    in_b = set(b["cell_id"])
    shared = [c for c in dict.fromkeys(a["cell_id"]) if c in in_b]
    if not shared:
        raise UsageError("the two runs share no cell (same family, settings, seed, solver, parameters and budget)")
    known = primary_metrics(set(a.loc[a["cell_id"].isin(shared), "family"])) if metric is None else {}
    rows, by_a, by_b = [], dict(tuple(a.groupby("cell_id"))), dict(tuple(b.groupby("cell_id")))
    for cell in shared:
        ra, rb = by_a[cell], by_b[cell]
        first = ra.iloc[0]
        name = metric or primary_metric(first["family"], ra["metric"], known)
        values = [_value(r, name, split, subset) for r in (ra, rb)]
        if all(v is None for v in values):
            continue
        va, vb = (math.nan if v is None else v for v in values)
        rows.append({"problem": first["problem"], "solver": first["solver"], "seed": int(first["seed"]),
                     "metric": name if subset == "all" else f"{name} [{subset}]", "A": va, "B": vb,
                     "B - A": vb - va, "same code": _same(ra["identity"].iloc[0], rb["identity"].iloc[0]),
                     "same data": _same(*(_data_hash(r, split) for r in (ra, rb)))})
    if not rows:
        raise UsageError(f"no shared cell has a value of {metric or 'its primary metric'} on split {split}, "
                         f"subset {subset}")
    return pd.DataFrame(rows)


def _same(a, b) -> str:
    return "unknown" if not (isinstance(a, str) and isinstance(b, str)) else "yes" if a == b else "no"


def _data_hash(rows: pd.DataFrame, split: str) -> str | None:
    """The hash of the cell's data on ``split`` (None when not recorded)."""
    hashes = rows.loc[rows["split"] == split, "data_hash"].dropna()
    return hashes.iloc[0] if len(hashes) else None


def _value(rows: pd.DataFrame, metric: str | None, split: str, subset: str) -> float | None:
    sel = rows[(rows["metric"] == metric) & (rows["split"] == split) & (rows["subset"] == subset)
               & rows["iteration"].isna()]
    return None if sel.empty or sel["value"].isna().all() else float(sel["value"].dropna().iloc[0])


def render(table: pd.DataFrame, fmt: str = "terminal") -> str:
    """The comparison as text: terminal, Markdown or CSV."""
    if fmt == "csv":
        return table.to_csv(index=False)
    from tabulate import tabulate

    shown = table.copy()
    for column in ("A", "B", "B - A"):
        shown[column] = [f"{v:.4g}" if math.isfinite(v) else "-" for v in shown[column]]
    if fmt == "markdown":
        shown = shown.apply(lambda col: col.astype(str).str.replace("|", r"\|", regex=False))
    text = tabulate(shown, headers="keys", tablefmt={"terminal": "simple", "markdown": "pipe"}[fmt],
                    showindex=False, disable_numparse=True)
    other = int((table["same data"] == "no").sum())
    caveat = f"; {other} measured on other data in the two runs (same data: no)" if other else ""
    return text + f"\n\n{len(table)} shared cell(s); B - A per cell{caveat}\n"
