"""Writing and reading results: atomic Parquet files validated against the schema."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from l2obench.atomic import write_atomically
from l2obench.errors import UsageError
from l2obench.schema import COLUMNS, READABLE_VERSIONS, SCHEMA, SCHEMA_VERSION, STATUSES


def to_table(rows: Sequence[Mapping]) -> pa.Table:
    """Rows as a table of ``SCHEMA``; a missing or extra column is an error."""
    expected = set(COLUMNS)
    for i, row in enumerate(rows):
        keys = set(row)
        if keys != expected:
            missing, extra = sorted(expected - keys), sorted(keys - expected)
            raise ValueError(f"result row {i}: missing columns {missing}, unexpected columns {extra}")
        if row["status"] not in STATUSES:
            raise ValueError(f"result row {i}: status {row['status']!r} not in {STATUSES}")
    return pa.Table.from_pylist(list(rows), schema=SCHEMA)


def write_parquet(rows: Sequence[Mapping], path: str | Path) -> Path:
    """Validate ``rows`` and write them to ``path`` atomically (temp file + rename).

    A failed write (a full disk, say) is an ``OSError`` naming ``path``.
    """
    table = to_table(rows)
    try:
        return write_atomically(path, lambda tmp: pq.write_table(table, tmp))
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, os.strerror(exc.errno) if exc.errno else str(exc), str(path)) from exc


# Folders of a run directory holding cell files set aside on --resume (l2obench.resume), never results.
SET_ASIDE = ("superseded", "corrupt")


def result_files(paths: Iterable[str | Path]) -> list[Path]:
    """Parquet files under ``paths`` (files, or directories searched recursively).

    Below a directory, files in a ``SET_ASIDE`` folder are left out (name that
    folder itself to read them).
    """
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(q for q in p.rglob("*.parquet") if not q.name.startswith(".")
                            and not set(q.relative_to(p).parts[:-1]) & set(SET_ASIDE))
        elif p.is_file():
            found.append(p)
        else:
            raise UsageError(f"no results at {p}")
    if not found:
        raise UsageError(f"no result files (*.parquet) under {', '.join(map(str, paths))}")
    return list({f.resolve(): f for f in found}.values())  # a file named twice is read once


def read_results(paths: Iterable[str | Path]):
    """All rows under ``paths`` as a pandas DataFrame (schema version checked).

    Files of an older readable version (``schema.READABLE_VERSIONS``) get the
    columns they lack as nulls.
    """
    tables = []
    for f in result_files(paths):
        try:
            table = pq.read_table(f)
        except (pa.ArrowInvalid, OSError) as exc:
            raise UsageError(f"{f} is not a readable Parquet file: {exc}") from exc
        version = (table.schema.metadata or {}).get(b"l2obench.schema_version", b"").decode()
        if version not in READABLE_VERSIONS:
            raise UsageError(f"{f}: results schema version {version or 'missing'}, expected {SCHEMA_VERSION}")
        for name in (n for n in READABLE_VERSIONS[version] if n not in table.column_names):
            table = table.append_column(SCHEMA.field(name), pa.nulls(len(table), SCHEMA.field(name).type))
        tables.append(table.select(list(COLUMNS)).cast(SCHEMA))
    return pa.concat_tables(tables).to_pandas()


def expand_sweep(df):
    """``df`` with one column per swept parameter or setting (from the ``sweep`` column).

    A curve over a swept value is then one query, e.g.
    ``expand_sweep(df).query("metric == 'l2_error' and split == 'train'").groupby(["solver", "k"])["value"].mean()``.
    A column is named after the key (``k``, ``n_train``), or ``problem.<key>`` /
    ``solver.<key>`` when the name is taken (by a result column, or by the
    same key swept on both sides); rows of cells that did not sweep it hold NaN.
    """
    import json

    parsed = [json.loads(s) if isinstance(s, str) else {} for s in df["sweep"]]
    keys = list(dict.fromkeys((part, key) for p in parsed for part in ("problem", "solver") for key in p.get(part, {})))
    names = [key for _, key in keys]
    out = df.copy()
    for part, key in keys:
        name = key if names.count(key) == 1 and key not in df.columns else f"{part}.{key}"
        out[name] = [p.get(part, {}).get(key) for p in parsed]
    return out
