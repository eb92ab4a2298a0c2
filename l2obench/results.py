"""Writing and reading results: atomic Parquet files validated against the schema."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from l2obench.atomic import write_atomically
from l2obench.errors import UsageError
from l2obench.schema import COLUMNS, SCHEMA, SCHEMA_VERSION, STATUSES


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
    """Validate ``rows`` and write them to ``path`` atomically (temp file + rename)."""
    table = to_table(rows)
    return write_atomically(path, lambda tmp: pq.write_table(table, tmp))


def result_files(paths: Iterable[str | Path]) -> list[Path]:
    """Parquet files under ``paths`` (files, or directories searched recursively)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(q for q in p.rglob("*.parquet") if not q.name.startswith("."))
        elif p.is_file():
            found.append(p)
        else:
            raise UsageError(f"no results at {p}")
    if not found:
        raise UsageError(f"no result files (*.parquet) under {', '.join(map(str, paths))}")
    return found


def read_results(paths: Iterable[str | Path]):
    """All rows under ``paths`` as a pandas DataFrame (schema version checked)."""
    tables = []
    for f in result_files(paths):
        try:
            table = pq.read_table(f)
        except (pa.ArrowInvalid, OSError) as exc:
            raise UsageError(f"{f} is not a readable Parquet file: {exc}") from exc
        version = (table.schema.metadata or {}).get(b"l2obench.schema_version", b"").decode()
        if version != SCHEMA_VERSION:
            raise UsageError(f"{f}: results schema version {version or 'missing'}, expected {SCHEMA_VERSION}")
        tables.append(table.select(list(COLUMNS)).cast(SCHEMA))
    return pa.concat_tables(tables).to_pandas()
