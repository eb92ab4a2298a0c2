"""The same few cells on a quiet machine and next to one CPU-bound process: the busy/quiet ratio.

Runs ``l2obench run`` twice on a small suite (LASSO with FISTA and a trained
LISTA, precision estimation with G-ISTA's batched eigendecompositions), without
the cache so both runs compute everything: once quiet, once while a
subprocess spins (``while True: pass``). Prints both wall-clock times and their
ratio; with l2obench's thread policy (``l2obench.threads``) the target is a
ratio of at most about 2 on a 2-core machine. ``--spinning-threads`` runs both
with ``OMP_WAIT_POLICY=ACTIVE``, the behaviour before the policy, for
comparison.

Usage::

    python benchmarks/busy_machine.py                 # serial run
    python benchmarks/busy_machine.py -j 2            # two worker processes
    python benchmarks/busy_machine.py --max-ratio 2   # exit 1 above the target
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUITE = {
    "description": "busy-machine benchmark: thread-sensitive cells (batched matmuls, training, eigh)",
    "seeds": [0],
    "problems": [
        {"family": "lasso", "label": "cs", "settings": {"m": 50, "n": 100, "n_train": 2000, "n_val": 200,
                                                          "n_test": 500}},
        {"family": "spe", "label": "spe", "settings": {"d": 30, "M": 60, "n_train": 64, "n_val": 100,
                                                        "n_test": 200}},
    ],
    "solvers": [
        {"solver": "fista", "params": {"max_iter": 200, "tol": 0.0}},
        {"solver": "lista", "params": {"n_layers": 8},
         "budget": {"steps": 400, "batch_size": 64, "eval_every": 100, "patience": 100}},
        {"solver": "gista", "params": {"alpha": 0.1}},
    ],
}


def _l2obench() -> str:
    local = Path(sys.executable).with_name("l2obench")
    return str(local) if local.exists() else "l2obench"


def timed_run(suite: Path, results: Path, options: list[str], env: dict[str, str]) -> float:
    """Wall-clock seconds of one ``l2obench run`` of ``suite`` (raises if it fails)."""
    command = [_l2obench(), "run", "--suite", str(suite), "--results", str(results), "--no-cache",
               "--no-progress", *options]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"l2obench run failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-j", "--jobs", type=int, default=1, help="worker processes (l2obench run -j)")
    parser.add_argument("--threads", type=int, help="threads per worker (l2obench run --threads)")
    parser.add_argument("--spinning-threads", action="store_true",
                        help="OMP_WAIT_POLICY=ACTIVE in both runs (the behaviour before the thread policy)")
    parser.add_argument("--max-ratio", type=float, help="exit 1 when busy/quiet exceeds this")
    args = parser.parse_args(argv)

    options = ["-j", str(args.jobs)] + (["--threads", str(args.threads)] if args.threads else [])
    env = {**os.environ}
    if args.spinning_threads:
        env["OMP_WAIT_POLICY"] = "ACTIVE"
    with tempfile.TemporaryDirectory(prefix="l2obench-busy-") as tmp:
        suite = Path(tmp) / "busy.json"
        suite.write_text(json.dumps(SUITE))
        quiet = timed_run(suite, Path(tmp) / "quiet", options, env)
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            busy = timed_run(suite, Path(tmp) / "busy", options, env)
        finally:
            spinner.kill()
            spinner.wait()
    ratio = busy / quiet
    policy = "spinning threads (OMP_WAIT_POLICY=ACTIVE)" if args.spinning_threads else "l2obench's thread policy"
    print(f"cores {os.cpu_count()}, -j {args.jobs}, threads {args.threads or 'default'}, {policy}")
    print(f"quiet {quiet:.1f} s, next to one CPU-bound process {busy:.1f} s: ratio {ratio:.2f} (target <= 2)")
    return 1 if args.max_ratio is not None and ratio > args.max_ratio else 0


if __name__ == "__main__":
    sys.exit(main())
