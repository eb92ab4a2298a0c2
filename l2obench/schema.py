"""The results schema: one row per measured number (long format).

This pyarrow schema is the single source of truth for results; every write is
validated against it (column set and types), and readers check its version.
Version 2 added ``sweep``; version 3 ``identity`` and ``code_version`` (see
``l2obench.identity``) and the status ``timeout``; version 4 ``wall_clock_source``
and ``plugin`` (the plugins that produced the row, ``l2obench.registry.PluginRecord.provenance``).
Readers take older files with the columns they lack as nulls.
"""
from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "4"
# Versions readers accept, with the columns each lacks (read as null).
READABLE_VERSIONS = {"1": ("sweep", "identity", "code_version", "wall_clock_source", "plugin"),
                     "2": ("identity", "code_version", "wall_clock_source", "plugin"),
                     "3": ("wall_clock_source", "plugin"), "4": ()}

STATUSES = ("ok", "failed", "diverged", "timeout")

SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("cell_id", pa.string(), nullable=False),
        pa.field("suite", pa.string(), nullable=False),
        pa.field("scale", pa.string(), nullable=False),
        pa.field("problem", pa.string(), nullable=False),       # the suite's label of the setting
        pa.field("family", pa.string(), nullable=False),        # registered problem family
        pa.field("setting", pa.string(), nullable=False),       # resolved settings, canonical JSON
        pa.field("solver", pa.string(), nullable=False),        # the suite's label of the solver
        pa.field("solver_name", pa.string(), nullable=False),   # registered solver
        pa.field("solver_params", pa.string(), nullable=False),  # hyper-parameters used, canonical JSON
        # values a suite entry swept for this cell, canonical JSON {"problem": {...}, "solver": {...}}; null: none
        pa.field("sweep", pa.string(), nullable=True),
        pa.field("learned", pa.bool_(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("split", pa.string(), nullable=True),          # train / val / test; null for cell-level rows
        pa.field("subset", pa.string(), nullable=True),         # "all" or a group such as "snr=20"
        pa.field("metric", pa.string(), nullable=False),
        pa.field("direction", pa.string(), nullable=True),      # "lower" / "higher" is better
        pa.field("value", pa.float64(), nullable=True),
        pa.field("iteration", pa.int64(), nullable=True),       # null unless a trajectory point
        pa.field("status", pa.string(), nullable=False),        # ok / failed / diverged / timeout
        pa.field("message", pa.string(), nullable=True),
        pa.field("wall_clock_s", pa.float64(), nullable=True),  # seconds behind the value (see README)
        # how wall_clock_s is known: measured / interpolated (between measured iterations of a trajectory) /
        # modelled (solve time x t/T); null where there is no wall-clock, and in files before version 4
        pa.field("wall_clock_source", pa.string(), nullable=True),
        pa.field("device", pa.string(), nullable=False),
        pa.field("l2obench_version", pa.string(), nullable=False),
        pa.field("torch_version", pa.string(), nullable=False),
        pa.field("python_version", pa.string(), nullable=False),
        pa.field("git_commit", pa.string(), nullable=True),
        pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("data_hash", pa.string(), nullable=True),      # hash of the split the value was measured on
        # hash of everything the cell computes from (l2obench.identity); null in files before version 3
        pa.field("identity", pa.string(), nullable=True),
        # source hashes of the solver's and the family's code, canonical JSON {"family": .., "solver": ..}
        pa.field("code_version", pa.string(), nullable=True),
        # the plugins that produced the row, canonical JSON {"family": .., "solver": ..}: "built-in",
        # "package <dist> <version>" or "file <path> sha256:<hash>"; null in files before version 4
        pa.field("plugin", pa.string(), nullable=True),
    ],
    metadata={"l2obench.schema_version": SCHEMA_VERSION},
)

COLUMNS = tuple(SCHEMA.names)
