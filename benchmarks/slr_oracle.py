"""The oracle reference of a run's sparse-regression problems: least squares on the true support.

    python benchmarks/slr_oracle.py RUN_DIR [--cache-dir DIR]

For every ``slr`` problem and seed in the run directory (``l2obench run
--results RUN_DIR``), rebuilds the test split from the setting recorded in
the results (the data cache or the same seed streams: the same instances),
fits least squares on each instance's true support (the estimate a method
that knew ``supp(beta*)`` would return; no sparse estimator is expected to
beat it by more than a shrinkage margin) and prints its test NMSE (dB) beside
the run's solvers. A solver within a fraction of a dB of the oracle has no
room left on that distribution.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tabulate import tabulate

from l2obench.cache import Cache, default_cache_dir
from l2obench.data import make_splits
from l2obench.errors import UsageError
from l2obench.registry import Registry
from l2obench.results import read_results
from l2obench_problems.lasso import nmse, to_db


def oracle_least_squares(A: torch.Tensor, b: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Per instance, least squares of ``b`` on the columns of ``A`` in ``supp(beta)`` (float64).

    Instances are grouped by support size, so each group is one batched solve
    (``A`` is zero-padded per instance; padding rows add nothing).
    """
    A, b, beta = A.double(), b.double(), beta.double()
    out = torch.zeros_like(beta)
    support = beta != 0
    sizes = support.sum(-1)
    for size in sizes.unique().tolist():
        rows = (sizes == size).nonzero().squeeze(1)
        if size == 0:
            continue
        columns = support[rows].nonzero()[:, 1].view(len(rows), size)              # (r, size) sorted
        design = torch.gather(A[rows], 2, columns.unsqueeze(1).expand(-1, A.shape[1], -1))
        coef = torch.linalg.lstsq(design, b[rows].unsqueeze(-1)).solution.squeeze(-1)
        out[rows] = out[rows].scatter(1, columns, coef)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    args = parser.parse_args(argv)
    try:
        frame = read_results([args.run_dir])
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = frame[(frame.family == "slr") & (frame.split == "test") & (frame.subset == "all")
                 & (frame.metric == "nmse_db") & frame.iteration.isna() & (frame.status == "ok")]
    if rows.empty:
        print(f"error: no finished slr cells in {args.run_dir}", file=sys.stderr)
        return 2
    spec, cache = Registry().problem("slr"), Cache(args.cache_dir)
    for (problem, setting, seed), group in rows.groupby(["problem", "setting", "seed"]):
        test = make_splits(spec, json.loads(setting), int(seed), cache).splits["test"]
        estimate = oracle_least_squares(test.observed["A"], test.observed["b"], test.target["x"])
        table = [["oracle least squares (true support)", to_db(nmse(estimate, test.target["x"].double()))]]
        table += sorted(zip(group.solver, group.value), key=lambda r: r[1])
        print(f"\n{problem} (seed {seed}), test NMSE (dB)")
        print(tabulate(table, headers=["solver", "nmse_db"], floatfmt=".2f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
