"""Pooling rows of several runs: one copy of each cell, labels split by what they name.

Tables and reports read rows from one or more run directories. A cell present in
two of them (the same ``cell_id``) is counted once, from the run that wrote it
last; a problem label naming different settings in different runs (a setting is
its resolved content, the ``setting`` column), or a solver label naming different
registered solvers, names different things, shown apart and marked with ``‡``. A
setting whose data differ between runs (another ``data_hash`` for the same settings, seed
and split) is warned about: its solvers were not measured on the same instances.
"""
from __future__ import annotations

import json
import warnings

import pandas as pd

SHARED_MARK = "‡"


class PoolingWarning(UserWarning):
    """Rows of several runs were pooled with a correction (a repeated cell, a shared label)."""


def one_copy_per_cell(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with each cell's rows from one run only, warning when a cell was repeated.

    A cell present in several runs is counted once, from the run that wrote it
    last: the same computation when its ``identity`` is the same, a recomputation
    (other code or inputs) when not, which is never averaged with the older one,
    as ``--resume`` never does. Rows read twice (the same cell file in two places)
    are kept once.
    """
    row_key = ["cell_id", "identity", "run_id", "metric", "split", "subset", "iteration", "timestamp"]
    copied = df.duplicated(subset=row_key)
    if copied.any():
        cells = df.loc[copied, "cell_id"].nunique()
        df = df[~copied]
        warnings.warn(f"{cells} cell(s) read twice (a cell file in two places, e.g. a copied run "
                      "directory) counted once", PoolingWarning, stacklevel=2)
    cells = df[["cell_id", "identity", "run_id", "timestamp"]].astype({"identity": object}).fillna({"identity": ""})
    runs = cells.groupby(["cell_id", "identity", "run_id"], sort=False)["timestamp"].max().reset_index()
    if not runs["cell_id"].duplicated().any():
        return df
    for same, what in ((True, "the same cell_id and identity"),
                       (False, "the same cell_id, another identity: recomputed with other code or inputs")):
        identities = runs.groupby("cell_id")["identity"].nunique()
        repeated = [c for c, n in runs["cell_id"].value_counts().items() if n > 1 and (identities[c] == 1) == same]
        if repeated:
            named = df.drop_duplicates("cell_id").set_index("cell_id").loc[repeated[:3]]
            examples = "; ".join(f"{r.problem} / {r.solver} / seed {r.seed}" for r in named.itertuples())
            warnings.warn(f"{len(repeated)} cell(s) present in several runs ({what}) counted once, from the run "
                          f"that wrote them last: {examples}{' ...' if len(repeated) > 3 else ''}",
                          PoolingWarning, stacklevel=2)
    keep = runs.sort_values("timestamp").drop_duplicates("cell_id", keep="last")
    chosen = set(zip(keep["cell_id"], keep["run_id"]))
    return df[[key in chosen for key in zip(cells["cell_id"], cells["run_id"])]]


def split_shared_labels(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` whose ``problem`` labels name one setting each, and ``solver`` labels one solver each.

    A problem label shared by different settings becomes ``"label ‡ key=value, ..."``
    (the settings' differing keys) per setting; a solver label shared by different
    registered solvers ``"label ‡ solver_name"``. Either is warned about.
    """
    out = df
    problem = _relabel(df, "problem", "setting", _setting_difference)
    solver = _relabel(df, "solver", "solver_name", lambda values: {v: v for v in values})
    if problem is not None or solver is not None:
        out = df.copy()
        for column, labels in (("problem", problem), ("solver", solver)):
            if labels is not None:
                out[column] = labels
    return out


def _relabel(df: pd.DataFrame, label: str, content: str, describe) -> list[str] | None:
    kinds = df.groupby(label, sort=False)[content].unique()
    shared = {name: describe(list(values)) for name, values in kinds.items() if len(values) > 1}
    if not shared:
        return None
    warnings.warn(f"{label} label(s) {', '.join(map(repr, shared))} name different {content}s in these rows: "
                  f"shown apart, marked {SHARED_MARK}", PoolingWarning, stacklevel=3)
    return [f"{name} {SHARED_MARK} {shared[name][value]}" if name in shared else name
            for name, value in zip(df[label], df[content])]


def _setting_difference(settings: list[str]) -> dict[str, str]:
    """Each setting JSON -> its values of the keys on which the settings differ."""
    parsed = [json.loads(s) for s in settings]
    keys = sorted({k for p in parsed for k in p if any(p.get(k) != q.get(k) for q in parsed)})
    return {s: ", ".join(f"{k}={json.dumps(p.get(k), separators=(',', ':'))}" for k in keys)
            for s, p in zip(settings, parsed)}


def warn_if_different_data(df: pd.DataFrame) -> None:
    """Warn when one problem setting and seed holds different data in ``df`` (a split's ``data_hash``
    differs between rows): the solvers of that setting were then measured on different instances.

    A setting's data are drawn from its seed, so within a run they never differ; across runs they
    do when the runs drew them under other CPU kernels (MKL's code path changes the generated
    matrices, README "Reproducibility across CPUs") or with another version of the family's code.
    """
    keys = ["family", "setting", "seed", "split"]
    rows = df.dropna(subset=["data_hash"])
    hashes = rows.groupby(keys, sort=False)["data_hash"].nunique()
    differing = list(hashes[hashes > 1].index)
    if not differing:
        return
    labels = rows.drop_duplicates(keys).set_index(keys)["problem"]
    examples = "; ".join(f"{labels[key]} / seed {key[2]} / {key[3]}" for key in differing[:3])
    warnings.warn(f"{len(differing)} problem setting(s) hold different data in different runs (the same "
                  f"settings, seed and split, another data_hash: drawn under other CPU kernels or other code), "
                  f"so their solvers were not measured on the same instances: {examples}"
                  f"{' ...' if len(differing) > 3 else ''}", PoolingWarning, stacklevel=3)


def pooled(df: pd.DataFrame) -> pd.DataFrame:
    """``one_copy_per_cell``, ``warn_if_different_data``, then ``split_shared_labels``: the rows a
    table or report reads."""
    df = one_copy_per_cell(df)
    warn_if_different_data(df)
    return split_shared_labels(df)
