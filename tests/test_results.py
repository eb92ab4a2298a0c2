import datetime as dt

import pyarrow.parquet as pq
import pytest

from l2obench.errors import UsageError
from l2obench.results import read_results, write_parquet
from l2obench.schema import COLUMNS, SCHEMA, SCHEMA_VERSION


def _row(**kw):
    row = {c: None for c in COLUMNS}
    row.update(run_id="r", cell_id="c", suite="s", scale="smoke", problem="p", family="lasso", setting="{}",
               solver="FISTA", solver_name="fista", solver_params="{}", learned=False, seed=0, split="test",
               subset="all", metric="nmse_db", direction="lower", value=-10.0, status="ok", device="cpu",
               l2obench_version="0", torch_version="0", python_version="3", timestamp=dt.datetime.now(dt.timezone.utc))
    row.update(kw)
    return row


def test_round_trip_keeps_schema_and_version(tmp_path):
    path = write_parquet([_row(), _row(iteration=3, value=-5.0)], tmp_path / "cells" / "c.parquet")
    table = pq.read_table(path)
    assert table.schema.metadata[b"l2obench.schema_version"].decode() == SCHEMA_VERSION
    assert table.schema.remove_metadata().equals(SCHEMA.remove_metadata())
    df = read_results([tmp_path])
    assert list(df.columns) == list(COLUMNS) and df["iteration"].isna().sum() == 1
    assert not list(tmp_path.rglob("*.tmp"))  # atomic write leaves no temp file


def test_extra_missing_and_bad_values_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="unexpected columns \\['extra'\\]"):
        write_parquet([_row(extra=1)], tmp_path / "x.parquet")
    row = _row()
    del row["device"]
    with pytest.raises(ValueError, match="missing columns \\['device'\\]"):
        write_parquet([row], tmp_path / "x.parquet")
    with pytest.raises(ValueError, match="status 'great'"):
        write_parquet([_row(status="great")], tmp_path / "x.parquet")
    with pytest.raises(Exception):
        write_parquet([_row(seed="zero")], tmp_path / "x.parquet")
    assert not (tmp_path / "x.parquet").exists()


def test_reading_nothing_or_garbage_is_a_clear_error(tmp_path):
    with pytest.raises(UsageError, match="no results at"):
        read_results([tmp_path / "missing"])
    with pytest.raises(UsageError, match="no result files"):
        read_results([tmp_path])
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(UsageError, match="not a readable Parquet file"):
        read_results([tmp_path])


def test_cell_files_set_aside_are_left_out_of_a_run_directory_unless_named(tmp_path):
    write_parquet([_row()], tmp_path / "cells" / "c.parquet")
    write_parquet([_row(value=99.0)], tmp_path / "superseded" / "c.20261201T000000Z.parquet")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "d.20261201T000000Z.parquet").write_text("not parquet")
    assert read_results([tmp_path])["value"].tolist() == [-10.0]
    assert read_results([tmp_path / "superseded"])["value"].tolist() == [99.0]
