"""Which CPU kernels make results differ between machines, measured on this one.

    python benchmarks/kernel_reproducibility.py [--settings NAME,...] [--setting 'VAR=VALUE ...']
        [--solvers LABEL,...] [--problems LABEL,...] [--kernels-only | --no-kernels] [--list]

Two x86 machines running the same code can train different models: torch, MKL and
oneDNN pick a code path by the CPU (its instruction sets, for MKL also its vendor), and
paths of different vector widths or thread counts add in different orders. This script
emulates other CPUs on this one: each *setting* is a set of environment variables, set
in a fresh subprocess before torch is imported (``--list`` shows them; ``--setting``
adds one by its variables):

- ``ATEN_CPU_CAPABILITY`` (``default``, ``avx2``, ``avx512``): torch's own vectorised
  kernels (reductions, elementwise, softmax, the random number generator);
- ``MKL_ENABLE_INSTRUCTIONS``, ``MKL_CBWR``: MKL's code path for BLAS (every float matmul)
  and LAPACK (Cholesky, eigh, SVD); ``MKL_CBWR`` is MKL's conditional numerical
  reproducibility, whose ISA branches (``AVX2``, ...) apply on Intel CPUs only, elsewhere
  MKL runs its ``AUTO`` branch (``MKL_VERBOSE=1`` prints ``CNR:AUTO``);
- ``ONEDNN_MAX_CPU_ISA``: oneDNN (``nn.LSTM``, convolutions);
- ``OMP_NUM_THREADS``: 1 unless a setting says otherwise.

It prints two tables, each against the first setting (the reference, ``default`` unless
``--settings`` says otherwise). ``kernel_check``: single kernels on fixed inputs (float32
unless stated), ``=`` where the output is bitwise equal to the reference's, else the largest
difference relative to the output's largest entry; its first rows are the CPU capability
torch reports and the best-of-30 milliseconds of a float32 matmul and of an LSTMCell
training step at the ``sparse`` suite's small size (the speed a setting costs).
``suite_check``: the chosen cells of the ``smoke`` suite (``l2obench run --suite smoke
--scale smoke --no-cache``), one run per setting: each cell's test NMSE (dB), marked ``=``
where every value measured for the cell (all metrics, splits and iterations, and the tuned
hyper-parameters; timings left out) is bitwise equal to the reference's; then whether the
generated data are equal (their hashes), the learned cells' summed fit seconds, and the
CPU capability recorded in the run's ``run.json``. ``default again`` repeats ``default``:
the machine reproduces itself. The default run (the LASSO problem ``cs-tiny``; add
``--problems cs-tiny,slr-tiny`` for regression, 40% longer) takes about 4 minutes on 2
cores; the ``threads=2`` setting is not in it, as two OpenMP threads on a 2-core machine
that runs other jobs make the tiny cells 10-20 times slower.
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

import numpy as np
from tabulate import tabulate

from l2obench.runner import KERNEL_ENV_VARS

# The pinned setting: what a CPU with AVX2 (and no AVX-512) computes in torch's kernels and in
# oneDNN, and MKL's CPU-independent path.
PINNED = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "AVX2"}
SETTINGS = {
    "default": {},
    "default again": {},
    "threads=2": {"OMP_NUM_THREADS": "2"},
    "aten=avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "aten=default": {"ATEN_CPU_CAPABILITY": "default"},
    "mkl-isa=avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "mkl-cbwr=avx2": {"MKL_CBWR": "AVX2"},
    "mkl-cbwr=compatible": {"MKL_CBWR": "COMPATIBLE"},
    "onednn=avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "pinned": PINNED,
    "pinned+mkl-isa=avx2": {**PINNED, "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "pinned+threads=2": {**PINNED, "OMP_NUM_THREADS": "2"},
}
# threads=2 is left out (see the module docstring; measured 433 s against 23 s on a busy machine).
DEFAULT_SETTINGS = ["default", "default again", "aten=avx2", "aten=default", "mkl-isa=avx2", "mkl-cbwr=avx2",
                    "mkl-cbwr=compatible", "onednn=avx2", "pinned"]
DEFAULT_SOLVERS = ["FISTA (T=20)", "ALISTA (T=16)", "LISTA-CPSS (T=16)", "RNN (T=20)", "RNN-l1 (T=20)"]
DEFAULT_PROBLEMS = ["cs-tiny"]
TIMING_METRICS = {"fit_seconds", "solve_seconds", "solve_seconds_per_instance", "latency_seconds",
                  "solve_seconds_full_depth", "wall_clock_saved_fraction"}


def environment(setting: dict[str, str]) -> dict[str, str]:
    """This process's environment without any kernel variable, one thread, then ``setting``."""
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_ENV_VARS}
    return {**env, "OMP_NUM_THREADS": "1", **setting}


def kernel_outputs() -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Outputs of single kernels on fixed inputs, and milliseconds of two larger ones.

    Inputs come from numpy's generator, so they are the same bytes under every setting
    (torch's own ``randn`` is not: it is one of the kernels checked). Run in a fresh
    process whose environment holds the setting.
    """
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rng = np.random.default_rng(0)

    def rand(*shape, dtype=torch.float32, grad=False):
        return torch.from_numpy(rng.standard_normal(shape)).to(dtype).requires_grad_(grad)

    def load(module):
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(0.3 * rand(*p.shape))
        return module

    def flat(*tensors):
        return np.concatenate([t.detach().double().numpy().ravel() for t in tensors])

    out = {"randn (torch.Generator)": flat(torch.randn(4096, generator=torch.Generator().manual_seed(0)))}
    a, b = rand(256, 512), rand(512, 128)
    out["matmul 256x512 @ 512x128"] = flat(a @ b)
    out["matmul 256x512 @ 512x128, float64"] = flat(a.double() @ b.double())
    out["matmul 96x40 @ 40x20"] = flat(rand(96, 40) @ rand(40, 20))
    out["matmul 128x500 @ 500x250"] = flat(rand(128, 500) @ rand(500, 250))
    out["bmm 64 x (28x32 @ 32x1)"] = flat(torch.bmm(rand(64, 28, 32), rand(64, 32, 1)))
    M = rand(512, 300)
    out["sum of 1e6"] = flat(rand(1_000_003).sum())
    out["sum dim=1"] = flat(M.sum(1))
    out["norm dim=0"] = flat(M.norm(dim=0))
    out["softmax dim=1"] = flat(torch.softmax(M, 1))
    out["tanh, sigmoid, exp"] = flat(M.tanh(), M.sigmoid(), M.exp())
    cell, x = load(torch.nn.LSTMCell(2, 20)), rand(640, 2, grad=True)
    h, c = cell(x, (rand(640, 20), rand(640, 20)))
    (h.square().sum() + c.sum()).backward()
    out["LSTMCell forward"] = flat(h, c)
    out["LSTMCell backward"] = flat(x.grad, *[p.grad for p in cell.parameters()])
    lstm, xs = load(torch.nn.LSTM(8, 32, num_layers=2)), rand(20, 64, 8, grad=True)
    y, _ = lstm(xs)
    y.square().sum().backward()
    out["nn.LSTM forward (oneDNN)"] = flat(y)
    out["nn.LSTM backward (oneDNN)"] = flat(xs.grad, *[p.grad for p in lstm.parameters()])
    params = [rand(500, 250, grad=True), rand(250, grad=True)]
    adam = torch.optim.Adam(params, lr=1e-3)
    for _ in range(3):
        for p in params:
            p.grad = rand(*p.shape)
        adam.step()
    out["Adam, 3 steps"] = flat(*params)
    C = rand(40, 60, dtype=torch.float64)
    C = C @ C.T + torch.eye(40, dtype=torch.float64)
    out["cholesky, float64"] = flat(torch.linalg.cholesky(C))
    out["eigvalsh, float64"] = flat(torch.linalg.eigvalsh(C))

    def milliseconds(fn, repeats=30):
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return 1e3 * min(times)

    W, X = rand(500, 250), rand(128, 500)
    big, inputs, state = load(torch.nn.LSTMCell(2, 20)), rand(8000, 2), (rand(8000, 20), rand(8000, 20))

    def lstm_step():
        big.zero_grad()
        h, c = big(inputs, state)
        h.sum().backward()

    ms = {"ms: matmul 128x500 @ 500x250": milliseconds(lambda: X @ W),
          "ms: LSTMCell step, 8000 rows": milliseconds(lstm_step)}
    return out, ms


def _kernel_child(path: str) -> None:
    import torch

    outputs, ms = kernel_outputs()
    np.savez(path, **outputs)
    print(json.dumps({"cpu_capability": torch.backends.cpu.get_cpu_capability(), **ms}))


def kernel_check(settings: dict[str, dict[str, str]], reference: str = "default") -> list[list]:
    """Rows of the kernel table: one per kernel, one column per setting.

    Each setting runs ``kernel_outputs`` in a subprocess; an entry is ``=`` where the output
    is bitwise equal to the ``reference`` setting's, else the largest absolute difference
    over the largest absolute entry of the reference output.
    """
    outputs, info = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, setting in settings.items():
            path = Path(tmp) / f"{len(outputs)}.npz"
            done = subprocess.run([sys.executable, __file__, "--kernel-child", str(path)], env=environment(setting),
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"kernel check under {name!r} failed:\n{done.stderr}")
            info[name] = json.loads(done.stdout.strip().splitlines()[-1])
            with np.load(path) as data:
                outputs[name] = dict(data)
    base = outputs[reference]
    rows = [["cpu capability", *[info[name]["cpu_capability"] for name in settings]]]
    rows += [[key, *[f"{info[name][key]:.2f}" for name in settings]] for key in info[reference] if key.startswith("ms:")]
    for kernel, expected in base.items():
        row = [kernel]
        for name in settings:
            got = outputs[name][kernel]
            if got.tobytes() == expected.tobytes():
                row.append("=")
            else:
                row.append(f"{np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-300):.0e}")
        rows.append(row)
    return rows


def _fingerprints(run_dir: Path) -> dict[str, dict]:
    """Per cell: test NMSE (dB), every non-timing value and the tuned parameters, and the data hashes."""
    from l2obench.results import read_results

    df = read_results([run_dir])
    cells = {}
    for (problem, solver), rows in df.groupby(["problem", "solver"], sort=False):
        values = rows[~rows["metric"].isin(TIMING_METRICS)]
        measured = tuple(sorted(f"{split}|{subset}|{metric}|{iteration}|{float(value).hex()}" for split, subset, metric,
                                iteration, value in values[["split", "subset", "metric", "iteration", "value"]].itertuples(
                                    index=False)))
        final = values[(values["split"] == "test") & (values["subset"] == "all") & (values["metric"] == "nmse_db")
                       & values["iteration"].isna()]
        fit = rows.loc[rows["metric"] == "fit_seconds", "value"]
        cells[f"{problem}: {solver}"] = {
            "nmse_db": float(final["value"].iloc[0]) if len(final) else float("nan"),
            "values": (measured, tuple(sorted(set(rows["solver_params"])))),
            "data": tuple(sorted(set(rows["data_hash"].dropna()))),
            "learned": bool(rows["learned"].iloc[0]), "fit_seconds": float(fit.iloc[0]) if len(fit) else 0.0,
            "status": ",".join(sorted(set(rows["status"])))}
    return cells


def suite_check(settings: dict[str, dict[str, str]], solvers: list[str], problems: list[str],
                reference: str = "default", echo=print) -> tuple[list[str], list[list]]:
    """Headers and rows of the suite table: one run of the smoke suite per setting."""
    runs, meta = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, setting) in enumerate(settings.items()):
            run_dir = Path(tmp) / f"run{i}"
            cmd = [sys.executable, "-m", "l2obench.cli", "run", "--suite", "smoke", "--scale", "smoke",
                   "--solvers", ",".join(solvers), "--problems", ",".join(problems), "--results", str(run_dir),
                   "--no-cache", "--no-progress"]
            start = time.perf_counter()
            done = subprocess.run(cmd, env=environment(setting), capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                raise RuntimeError(f"suite run under {name!r} failed:\n{done.stdout}\n{done.stderr}")
            runs[name] = _fingerprints(run_dir)
            kernels = json.loads((run_dir / "run.json").read_text()).get("cpu_kernels", {})
            meta[name] = {"seconds": seconds, "capability": kernels.get("cpu_capability", "?")}
            echo(f"  {name}: {seconds:.0f} s")
    base = runs[reference]
    labels = list(base)
    headers = ["setting", *labels, f"bitwise = {reference}", f"data = {reference}", "fit s (learned)", "run s",
               "capability"]
    rows = []
    for name in settings:
        cells, row, equal = runs[name], [name], 0
        for label in labels:
            cell = cells.get(label)
            if cell is None:
                row.append("missing")
                continue
            same = cell["values"] == base[label]["values"]
            equal += same
            row.append(f"{cell['nmse_db']:.4f}{' =' if same else ''}"
                       + ("" if cell["status"] == "ok" else f" ({cell['status']})"))
        data_same = all(cells.get(label, {}).get("data") == base[label]["data"] for label in labels)
        fit = sum(cell["fit_seconds"] for cell in cells.values() if cell["learned"])
        row += [f"{equal} of {len(labels)}", "yes" if data_same else "no", f"{fit:.1f}",
                f"{meta[name]['seconds']:.0f}", meta[name]["capability"]]
        rows.append(row)
    return headers, rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default=",".join(DEFAULT_SETTINGS),
                        help="comma-separated setting names (see --list); the first is the reference")
    parser.add_argument("--setting", action="append", default=[], metavar="'VAR=VALUE ...'",
                        help="a further setting given by its variables (repeatable), e.g. 'MKL_CBWR=AVX2 OMP_NUM_THREADS=2'")
    parser.add_argument("--solvers", default=",".join(DEFAULT_SOLVERS), help="smoke-suite solver labels")
    parser.add_argument("--problems", default=",".join(DEFAULT_PROBLEMS), help="smoke-suite problem labels")
    parser.add_argument("--kernels-only", action="store_true", help="only the kernel table")
    parser.add_argument("--no-kernels", action="store_true", help="only the suite table")
    parser.add_argument("--list", action="store_true", help="print the settings and exit")
    parser.add_argument("--kernel-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.kernel_child:
        _kernel_child(args.kernel_child)
        return 0
    if args.list:
        for name, setting in SETTINGS.items():
            print(f"{name:<24} {' '.join(f'{k}={v}' for k, v in setting.items()) or '(no variable set)'}")
        return 0
    names = [n.strip() for n in args.settings.split(",") if n.strip()]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        print(f"error: unknown settings {unknown}; see --list", file=sys.stderr)
        return 2
    settings = {name: SETTINGS[name] for name in names}
    for text in args.setting:
        try:
            settings[text] = dict(item.split("=", 1) for item in text.split())
        except ValueError:
            print(f"error: --setting {text!r}: expected VAR=VALUE items separated by spaces", file=sys.stderr)
            return 2
    names = list(settings)
    if not names:
        print("error: no setting to run", file=sys.stderr)
        return 2
    reference = names[0]
    print(f"settings: {', '.join(names)} (reference: {reference}); every run has OMP_NUM_THREADS=1 unless set")
    if not args.no_kernels:
        rows = kernel_check(settings, reference)
        print("\nSingle kernels: '=' bitwise equal to the reference, else max |difference| / max |reference|")
        print(tabulate(rows, headers=["kernel", *names], disable_numparse=True))
    if not args.kernels_only:
        solvers = [s.strip() for s in args.solvers.split(",") if s.strip()]
        problems = [p.strip() for p in args.problems.split(",") if p.strip()]
        print(f"\nSmoke suite, {len(problems)} problem(s) x {len(solvers)} solver(s), one run per setting:")
        headers, rows = suite_check(settings, solvers, problems, reference)
        print("\nTest NMSE (dB); '=' every measured value of the cell bitwise equal to the reference's")
        print(tabulate(rows, headers=headers, disable_numparse=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
