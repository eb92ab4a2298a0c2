"""Resuming a run: which cell files on disk still hold what the planned cells compute.

Under ``--resume`` every ``cells/*.parquet`` is read (a few columns) and compared
with the planned cell of the same labels (problem, solver, swept values) at the
file's seed:

* a file that cannot be read as a cell (truncated, not Parquet, an unknown
  schema version) is moved to ``corrupt/`` and its cell runs again;
* a file whose cell identity (``l2obench.identity``) differs from the planned
  one is moved to ``superseded/``, so it is never averaged with the new results,
  and the cell runs again when its seed is planned;
* a file written before identities were recorded (results schema 1 or 2) is
  kept when its ``cell_id`` is the planned cell's: that id already hashes the
  resolved settings, the seed, the solver's resolved and fixed parameters and a
  learned solver's budget. The code that computed it is unknown and is not held
  against it;
* files of labels no planned cell has (another ``--solvers`` selection) stay.

Each file moved aside is named in one line; the folders sit beside ``cells/``
and ``l2obench.results.read_results`` leaves them out of a run directory.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from pathlib import Path
from typing import Callable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from l2obench.hashing import canonical_json
from l2obench.identity import Identities, sweep_json
from l2obench.schema import READABLE_VERSIONS
from l2obench.suites import Cell

__all__ = ["CellFile", "CorruptCellFile", "read_cell_file", "reconcile", "set_aside"]

_COLUMNS = ("cell_id", "problem", "solver", "sweep", "seed", "setting", "status", "identity", "code_version")
_REQUIRED = ("cell_id", "problem", "solver", "seed", "setting", "status")


class CorruptCellFile(Exception):
    """A file in ``cells/`` that cannot be read as one cell's results."""


@dataclasses.dataclass(frozen=True)
class CellFile:
    """What a cell file says about the cell it holds.

    ``status`` is the cell's: ``failed`` or ``timeout`` if any row is, else
    ``diverged`` if any row is, else ``ok``. ``identity`` and ``code_version``
    are None in files written before results schema 3.
    """

    path: Path
    cell_id: str
    slot: tuple
    seed: int
    setting: str
    status: str
    identity: str | None
    code_version: str | None


def read_cell_file(path: str | Path) -> CellFile:
    """Read the identifying columns of a cell file.

    Raises
    ------
    CorruptCellFile
        If it is not a readable Parquet file of a known results schema holding one cell.
    """
    path = Path(path)
    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
        version = (schema.metadata or {}).get(b"l2obench.schema_version", b"").decode()
        if version not in READABLE_VERSIONS:
            raise CorruptCellFile(f"results schema version {version or 'missing'}")
        missing = [c for c in _REQUIRED if c not in schema.names]
        if missing:
            raise CorruptCellFile(f"no column {', '.join(missing)}")
        table = parquet.read(columns=[c for c in _COLUMNS if c in schema.names])
    except (pa.ArrowException, OSError) as exc:
        raise CorruptCellFile(f"not a readable Parquet file ({type(exc).__name__}: {exc})") from exc
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    if not table.num_rows:
        raise CorruptCellFile("no rows")
    if len(set(columns["cell_id"])) > 1:
        raise CorruptCellFile("rows of several cells")
    statuses = set(columns["status"])
    status = next((s for s in ("failed", "timeout", "diverged") if s in statuses), "ok")
    first = {name: values[0] for name, values in columns.items()}
    return CellFile(path, first["cell_id"], (first["problem"], first["solver"], first.get("sweep")),
                    first["seed"], first["setting"], status, first.get("identity"), first.get("code_version"))


def set_aside(path: Path, folder: Path) -> Path:
    """Move ``path`` into ``folder`` as ``<stem>.<UTC time>.parquet`` (never over another file)."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}"
    target, n = folder / f"{path.stem}.{stamp}{path.suffix}", 1
    while target.exists():
        target, n = folder / f"{path.stem}.{stamp}-{n}{path.suffix}", n + 1
    os.replace(path, target)
    return target


def _change(found: CellFile, cell: Cell, identities: Identities) -> str | None:
    """Why ``found`` does not hold what ``cell`` computes (None: it does)."""
    if found.identity is None and found.cell_id == cell.cell_id:
        return None
    if found.identity is not None and found.identity == identities.identity(cell):
        return None if found.path.stem == cell.cell_id else f"not at its cell's path cells/{cell.cell_id}.parquet"
    if found.setting != canonical_json(dict(cell.settings)):
        return "its problem settings changed"
    if found.cell_id != cell.cell_id:
        return "its solver parameters or training budget changed"
    recorded = json.loads(found.code_version or "{}")
    code = identities.code_version(cell)
    changed = [kind for kind in ("solver", "family") if recorded.get(kind) != code[kind]]
    return f"the code of its {' and '.join(changed)} changed" if changed else "its identity changed"


def reconcile(results_dir: str | Path, cells: Sequence[Cell], identities: Identities,
              echo: Callable[[str], None] = print) -> dict[str, str]:
    """Compare the cell files of a resumed run with the planned ``cells``; set aside those that differ.

    Parameters
    ----------
    results_dir : path
        The run directory (its ``cells/`` is read; ``superseded/`` and ``corrupt/`` receive files).
    cells : sequence of Cell
        The planned cells.
    identities : Identities
    echo : callable
        Receives one line per file moved aside, and one note on files without an identity.

    Returns
    -------
    dict
        ``cell_id -> status`` of the files left in ``cells/`` that hold a planned cell.
    """
    results_dir = Path(results_dir)
    planned = {(c.problem_label, c.solver_label, sweep_json(c)): c for c in cells}
    planned_ids = {c.cell_id for c in cells}
    on_disk: dict[str, str] = {}
    legacy = 0
    for path in sorted((results_dir / "cells").glob("*.parquet")):
        try:
            found = read_cell_file(path)
        except CorruptCellFile as exc:
            moved = set_aside(path, results_dir / "corrupt")
            echo(f"corrupt cell file {path}: {exc}; moved to {moved}, its cell runs again")
            continue
        cell = planned.get(found.slot)
        if cell is None:
            continue
        cell = dataclasses.replace(cell, seed=found.seed)
        reason = _change(found, cell, identities)
        if reason is None:
            on_disk[cell.cell_id] = found.status
            legacy += found.identity is None and cell.cell_id in planned_ids
            continue
        moved = set_aside(path, results_dir / "superseded")
        again = ", it runs again" if cell.cell_id in planned_ids else ""
        echo(f"superseded: {path} ({cell.describe()}): {reason}; moved to {moved}{again}")
    if legacy:
        echo(f"note: {legacy} cell file(s) predate cell identities (results schema < 3); kept, as their "
             "settings, parameters, budget and seed match the plan (cell_id); the code that computed them "
             "is not recorded")
    return on_disk
