"""Running cells: fit, solve, evaluate, and write one Parquet file per cell.

A run lives in a results directory: ``run.json`` (what was run) and
``cells/<cell_id>.parquet``. Each cell's rows are on disk before the next cell
starts, so an interrupted run continues with ``resume=True`` without
recomputing finished cells whose identity is unchanged (``l2obench.resume``).
The directory is locked while a runner is open (``l2obench.lock``).

Computing a cell (``CellComputer.compute``) and recording it (``Runner.record``:
the cell file, a failed cell's traceback log) are separate steps, so that worker
processes or a cluster (``l2obench.executors``) compute while the runner alone
writes to its directory.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import platform
import re
import subprocess
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

import l2obench
from l2obench import progress
from l2obench import threads as thread_policy
from l2obench.atomic import write_atomically
from l2obench.cache import Cache
from l2obench.contracts import FitContext, Instances, Solver, check_estimate, hidden_from
from l2obench.data import Splits, make_splits
from l2obench.gallery import folder_name
from l2obench.errors import DivergedError, InvalidEstimateError, UsageError
from l2obench.hashing import canonical_json, content_key
from l2obench.identity import Identities, SuiteSource, sweep_json
from l2obench.limits import cell_time_limit
from l2obench.lock import LOCK_NAME, RunLock
from l2obench.results import write_parquet
from l2obench.resume import reconcile
from l2obench.suites import Cell, sweep_label
from l2obench.timeout import CellTimeout
from l2obench.training import training_curve
from l2obench.timing import (budget_seconds, describe_device, interleaved_seconds, single_instance_latency,
                             timed_solve, truncated)

# Trajectories keep at most this many iterations (all of them when T is below);
# beyond, iterations are log-spaced so long runs stay affordable in memory.
TRAJECTORY_POINTS = 128
# Splits with a fixed role; any other split a family draws is evaluated like test.
STANDARD_SPLITS = {"train", "val", "test"}
# Bytes of iterates held at once while a trajectory is computed in chunks.
TRAJECTORY_CHUNK_BYTES = 256 * 2**20
# A trajectory's wall-clock axis is measured at this many log-spaced iterations, spending at most
# WALL_CLOCK_BUDGET times the batched solve time, or WALL_CLOCK_MIN_SECONDS when more, on
# timing them (CellComputer._wall_clock_axis).
WALL_CLOCK_POINTS = 6
WALL_CLOCK_BUDGET = 5.0
WALL_CLOCK_MIN_SECONDS = 0.1
# A measured estimate matches the trajectory's iterate within this relative (Frobenius) distance,
# loose enough for batches run in other chunks, tight enough to catch a solver stopped elsewhere.
SAME_ESTIMATE_RTOL = 1e-3
# Environment variables that select the CPU code path of torch's own kernels, of MKL (BLAS,
# LAPACK) or of oneDNN, or their threads: each can change the bits of a float result (see
# benchmarks/kernel_reproducibility.py). run.json records those that are set.
KERNEL_ENV_VARS = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA",
                   "DNNL_MAX_CPU_ISA", "ONEDNN_DEFAULT_FPMATH_MODE", *thread_policy.THREAD_VARS, "MKL_DYNAMIC")
# How idle OpenMP threads wait (spin or sleep): it changes the run time on a busy machine, never a
# result's bits, so run.json records it (cpu_kernels' "wait") but a resume does not compare it.
WAIT_ENV_VARS = (thread_policy.WAIT_POLICY[0], "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


@dataclass
class CellOutcome:
    cell: Cell
    status: str
    message: str = ""
    summary: str = ""
    skipped: bool = False
    stderr: str = ""


@dataclass
class CellResult:
    """A computed cell before it is written: its rows, status and, for a failed cell, the traceback."""

    status: str
    rows: list[dict[str, Any]]
    message: str = ""
    summary: str = ""
    traceback: str | None = None
    files: dict[str, bytes] = field(default_factory=dict)  # written under the results directory (illustrations)
    stderr: str = ""  # what a pool worker wrote to stderr (warnings) while computing it, for the driver to show


@dataclass
class RunSummary:
    results_dir: Path
    outcomes: list[CellOutcome] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[CellOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def run_context(run_id: str, device: torch.device) -> dict[str, Any]:
    """Columns shared by every row a process computes for run ``run_id``."""
    return {
        "run_id": run_id,
        "device": describe_device(device),
        "l2obench_version": l2obench.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "git_commit": _git_commit(),
    }


def _git_commit() -> str | None:
    """The checkout's commit (12 hex digits), with ``-dirty`` when a tracked file outside ``results/``
    differs from it; None outside a git checkout.

    ``results/`` is left out because a publishing run (``make publish``) rewrites the results
    committed there: the code that computed them is what the stamp is about.
    """
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=Path(l2obench.__file__).parent, capture_output=True,
                                 text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "--short=12", "HEAD")
    if not commit:
        return None
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ":/", ":(top,exclude)results")
    return commit + ("-dirty" if changed else "")


def cpu_kernels(execution: dict[str, Any] | None = None) -> dict[str, Any]:
    """The CPU kernel set behind a run's float results, as recorded in ``run.json``.

    ``cpu_vendor`` matters as MKL picks its code by vendor (``MKL_CBWR=AVX2`` is ignored on
    non-Intel CPUs); ``cpu_capability`` is the instruction set of torch's own vectorised kernels
    (``torch.backends.cpu.get_cpu_capability()``); ``blas``, ``mkl`` and ``onednn`` the
    libraries torch was built with; ``threads`` torch's intra-op threads; ``env`` the values
    of ``KERNEL_ENV_VARS`` that are set; ``wait`` those of ``WAIT_ENV_VARS`` (``{}``: OpenMP's
    default). Two runs whose ``cpu_kernels`` differ outside ``wait`` may differ in the last bits
    of every trained model (``same_kernels``).

    Threads and variables are those in effect where the cells are computed: this process, or,
    with ``execution`` (run.json's ``execution``) naming worker processes l2obench starts
    (``local``, ``dask-local``), the environment ``l2obench.threads.worker_environment`` gives
    them. Workers of an existing Dask cluster (``dask``) keep the environment they were started
    with, which this process cannot see: ``env`` and ``wait`` are then ``None``. In this
    process the variables are read from ``os.environ``; l2obench sets them only before torch
    is imported, when OpenMP reads them.
    """
    config = torch.__config__.show()
    env, threads = dict(os.environ), torch.get_num_threads()
    executor = (execution or {}).get("executor")
    if executor in ("local", "dask-local"):
        threads = execution["threads"]
        env.update(thread_policy.worker_environment(threads))
    elif executor == "dask":
        env, threads = None, execution["threads"]

    def built_with(pattern: str) -> str | None:
        match = re.search(pattern, config)
        return match.group(1).strip() if match else None

    try:
        with open("/proc/cpuinfo") as f:
            vendor = next((line.split(":", 1)[1].strip() for line in f if line.startswith("vendor_id")), None)
    except OSError:
        vendor = None
    return {
        "cpu": describe_device(torch.device("cpu")).removeprefix("cpu (").split(";")[0],
        "cpu_vendor": vendor,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "blas": built_with(r"BLAS_INFO=(\w+)"),
        "mkl": built_with(r"Math Kernel Library Version (.+?) for ") if torch.backends.mkl.is_available() else None,
        "onednn": built_with(r"MKL-DNN (v[^\n]+)") if torch.backends.mkldnn.is_available() else None,
        "threads": threads,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "env": None if env is None else {name: env[name] for name in KERNEL_ENV_VARS if name in env},
        "wait": None if env is None else {name: env[name] for name in WAIT_ENV_VARS if name in env},
    }


def same_kernels(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Whether two ``cpu_kernels`` records give the same bits: equal but for ``wait`` (how idle
    threads wait; absent from records made before it was recorded)."""
    def bits(record):
        return {key: value for key, value in (record or {}).items() if key != "wait"}

    return a is not None and b is not None and bits(a) == bits(b)


def recorded_iterations(n_iterations: int, points: int = TRAJECTORY_POINTS) -> list[int]:
    """1-based iterations kept in a trajectory: all, or ``points`` log-spaced ones."""
    if n_iterations <= points:
        return list(range(1, n_iterations + 1))
    spaced = torch.logspace(0, math.log10(n_iterations), points).round().long().unique().tolist()
    return sorted(set(spaced) | {n_iterations})


class CellComputer:
    """Computes cells into rows; writes nothing but cache entries.

    Holds the last data setting's splits in memory, so cells ordered by data
    draw (or load) each setting once.

    Parameters
    ----------
    registry : Registry
    device : torch.device
    cache : Cache
    run_id : str
        Recorded in every row.
    progress : bool
        Show progress bars.
    cell_timeout : float, optional
        Seconds a cell may run (data, fit, solve and evaluation) before it is
        recorded as ``timeout`` (``l2obench.limits.cell_time_limit``, in any
        thread); None or 0: no limit.
    identities : Identities, optional
        Shared with the caller when given.
    """

    def __init__(self, registry, device: torch.device, cache: Cache, run_id: str, progress: bool = True,
                 cell_timeout: float | None = None, identities: Identities | None = None):
        self.registry = registry
        self.device = device
        self.cache = cache
        self.progress_enabled = progress
        self.cell_timeout = cell_timeout
        self.identities = identities or Identities(registry)
        self.run_id = run_id
        self._data: tuple[str, Splits] | None = None
        self._context = run_context(run_id, device)

    def bar(self, total: int, desc: str):
        return progress.bar(total, desc, self.progress_enabled)

    def data_for(self, cell: Cell) -> Splits:
        """The cell's splits; the last setting's are kept in memory (cells are ordered by data)."""
        if self._data is None or self._data[0] != cell.data_key:
            self._data = None  # free the previous setting's tensors first
            spec = self.registry.problem(cell.family)
            self._data = (cell.data_key, make_splits(spec, cell.settings, cell.seed, self.cache, progress=self.bar))
        return self._data[1]

    def compute(self, cell: Cell) -> CellResult:
        """Compute one cell; an exception, a non-finite estimate or the time limit (``cell_timeout``)
        becomes one row of status failed, diverged or timeout."""
        data_hash = None
        try:
            with cell_time_limit(self.cell_timeout):
                data = self.data_for(cell)
                data_hash = data.hashes.get("test")
                rows, summary, files = self._measure(cell, data)
            return CellResult("ok", rows, summary=summary, files=files)
        except KeyboardInterrupt:
            raise
        # A broken solver must not stop the run, even one calling sys.exit (SystemExit).
        except (Exception, SystemExit, CellTimeout) as exc:  # noqa: BLE001
            diverged = isinstance(exc, DivergedError)
            status = "diverged" if diverged else "timeout" if isinstance(exc, CellTimeout) else "failed"
            message = f"{'' if diverged else type(exc).__name__ + ': '}{exc}"
            rows = [self._row(cell, metric="error", value=None, status=status, message=message,
                              data_hash=data_hash)]
            return CellResult(status, rows, message, traceback=None if diverged else traceback.format_exc())

    # -- measuring one cell ------------------------------------------------------
    def _row(self, cell: Cell, *, metric: str, value: float | None, split: str | None = None,
             subset: str | None = None, iteration: int | None = None, status: str = "ok",
             message: str = "", wall_clock_s: float | None = None, data_hash: str | None = None,
             params: dict | None = None, direction: str | None = None,
             wall_clock_source: str | None = None) -> dict[str, Any]:
        # A NaN metric is undefined (e.g. an NMSE of 0/0 when every target is zero): no value, never a score.
        undefined = value is None or math.isnan(value)
        if undefined and value is not None and not message:
            message = f"{metric} is undefined here (0/0, e.g. every target is zero)"
        return {
            **self._context,
            "cell_id": cell.cell_id, "suite": cell.suite, "scale": cell.scale,
            "problem": cell.problem_label, "family": cell.family, "setting": canonical_json(dict(cell.settings)),
            "solver": cell.solver_label, "solver_name": cell.solver,
            "solver_params": canonical_json(params if params is not None else dict(cell.params)),
            "sweep": sweep_json(cell),
            "learned": cell.learned, "seed": cell.seed, "split": split, "subset": subset,
            "metric": metric, "direction": direction, "value": None if undefined else float(value),
            "iteration": iteration, "status": status, "message": message or None,
            "wall_clock_s": wall_clock_s,
            "wall_clock_source": wall_clock_source or ("measured" if wall_clock_s is not None else None),
            "timestamp": dt.datetime.now(dt.timezone.utc),
            "data_hash": data_hash, "identity": self.identities.identity(cell),
            "code_version": canonical_json(self.identities.code_version(cell)),
            "plugin": canonical_json({"family": self.registry.problems[cell.family].plugin.provenance,
                                      "solver": self.registry.solvers[cell.solver].plugin.provenance}),
        }

    def _fit(self, cell: Cell, data: Splits, solver: Solver) -> tuple[float, bool, dict]:
        spec = self.registry.solver(cell.solver)
        tune = {k: list(p.grid) for k, p in spec.params.items()
                if p.grid is not None and k not in cell.fixed_params}
        # The code version of the cell's identity: the solver's and the family's source, SolverSpec.version.
        key = content_key("model", data.key, spec.name, str(spec.factory), self.identities.code_version(cell),
                          dict(cell.params), tune, vars(cell.budget) if cell.learned else None)
        state = self.cache.load("models", key)
        if state is not None:
            solver.load_state_dict(state["state"])
            solver.to(self.device)
            return float(state["fit_seconds"]), True, state.get("log", {})
        context = FitContext(
            problem=data.family, train=data.splits["train"].to(self.device),
            val=data.splits["val"].to(self.device), budget=cell.budget, tune=tune, device=self.device,
            seed=cell.seed, draw_train=data.train_stream(self.device), progress=self.bar)
        start = time.perf_counter()
        solver.fit(context)
        seconds = time.perf_counter() - start
        log = json.loads(canonical_json(context.log))
        self.cache.save("models", key, {"state": solver.state_dict(), "fit_seconds": seconds, "log": log})
        return seconds, False, log

    def _measure(self, cell: Cell, data: Splits) -> tuple[list[dict], str, dict[str, bytes]]:
        family = data.family
        solver = self.registry.solver(cell.solver).build(**cell.params)
        data = data.hiding(hidden_from(solver, family))  # side information the solver does not declare
        fit_seconds, cached, log = self._fit(cell, data, solver)
        params = solver.get_params()
        row = lambda **kw: self._row(cell, params=params, **kw)  # noqa: E731
        metrics = family.metrics
        direction = lambda name: metrics[name].direction if name in metrics else None  # noqa: E731
        rows = [row(metric="fit_seconds", value=fit_seconds, split="train" if cell.learned else "val",
                    direction="lower", wall_clock_s=fit_seconds,
                    message="fitted state loaded from cache; time of the original fit" if cached else "",
                    data_hash=data.hashes.get("train" if cell.learned else "val"))]
        rows += self._fit_curve_rows(cell, log, params, data)

        test = data.splits["test"].to(self.device)
        solution, seconds = timed_solve(solver, test, self.device)
        _check_estimate(family, solution.estimate, test, "test")
        latency = single_instance_latency(solver, test, self.device)
        h = data.hashes["test"]
        rows += [row(metric="solve_seconds", value=seconds, split="test", direction="lower",
                     wall_clock_s=seconds, data_hash=h),
                 row(metric="solve_seconds_per_instance", value=seconds / len(test), split="test",
                     direction="lower", wall_clock_s=seconds, data_hash=h),
                 row(metric="latency_seconds", value=latency, split="test", direction="lower",
                     wall_clock_s=latency, data_hash=h)]
        if solution.iterations is not None:
            rows.append(row(metric="iterations_mean", value=float(solution.iterations.float().mean()),
                            split="test", direction="lower", data_hash=h))
            rows += [row(metric="stop_fraction", value=fraction, split="test", iteration=t, data_hash=h)
                     for t, fraction in _stop_fractions(solution.iterations)]
        if solution.converged is not None:
            rows.append(row(metric="converged_fraction", value=float(solution.converged.float().mean()),
                            split="test", direction="higher", data_hash=h))
        full_depth = getattr(solver, "full_depth", None)
        if callable(full_depth):
            # Adaptive-depth solvers: what stopping saves against running every layer, timed in turn.
            adaptive_seconds, full_seconds = interleaved_seconds([solver, full_depth()], test, self.device)
            rows += [row(metric="solve_seconds_full_depth", value=full_seconds, split="test", direction="lower",
                         wall_clock_s=full_seconds, data_hash=h),
                     row(metric="wall_clock_saved_fraction", value=1.0 - adaptive_seconds / full_seconds,
                         split="test", direction="higher", wall_clock_s=adaptive_seconds, data_hash=h)]
        test_values = _evaluate(family, solution, test)
        files = _illustrations(cell, family, solution, test, "test")
        rows += [row(metric=m.metric, value=m.value, split="test", subset=m.subset, direction=direction(m.metric),
                     wall_clock_s=seconds, data_hash=h) for m in test_values]

        train = data.splits["train"].subset(slice(0, len(test))).to(self.device)
        with torch.no_grad():
            train_solution = solver.solve(train.observation())
        _check_estimate(family, train_solution.estimate, train, "train")
        train_values = _evaluate(family, train_solution, train)
        rows += [row(metric=m.metric, value=m.value, split="train", subset=m.subset, direction=direction(m.metric),
                     data_hash=data.hashes["train"]) for m in train_values]
        gap = _value(test_values, family.gap_metric) - _value(train_values, family.gap_metric)
        rows.append(row(metric=f"generalization_gap_{family.gap_metric}", value=gap, split="test",
                        subset="all", direction=None, data_hash=h))
        for name in sorted(data.splits.keys() - STANDARD_SPLITS):  # e.g. an out-of-distribution test split
            other = data.splits[name].to(self.device)
            with torch.no_grad():
                other_solution = solver.solve(other.observation())
            _check_estimate(family, other_solution.estimate, other, name)
            values = _evaluate(family, other_solution, other)
            files.update(_illustrations(cell, family, other_solution, other, name))
            hash_ = data.hashes[name]
            rows += [row(metric=m.metric, value=m.value, split=name, subset=m.subset,
                         direction=direction(m.metric), data_hash=hash_) for m in values]
            gap = _value(values, family.gap_metric) - _value(train_values, family.gap_metric)
            rows.append(row(metric=f"generalization_gap_{family.gap_metric}", value=gap, split=name,
                            subset="all", direction=None, data_hash=hash_))

        rows += self._trajectory_rows(cell, family, solver, test, seconds, row, direction, h)
        primary = _value(test_values, family.primary_metric)
        shown = "undefined" if math.isnan(primary) else f"{primary:.2f}"
        summary = f"test {family.primary_metric} {shown}  fit {fit_seconds:.1f} s{' (cached)' if cached else ''}  solve {seconds:.3f} s"
        return rows, summary, files

    def _fit_curve_rows(self, cell: Cell, log: dict, params: dict, data: Splits) -> list[dict]:
        """The fit's curves, from its log (kept with a cached fitted state too).

        Training (``log["training"]``, ``l2obench.training.training_curve``): per validation,
        ``training_val_score`` (what early stopping minimises, split val) and ``training_loss``
        (the running training loss, split train), at ``iteration`` = the step counted over the
        whole schedule, ``subset`` = the stage (``"all"`` when there is none to tell), and
        ``wall_clock_s`` = the training seconds so far. Tuning (``log["tuning"]``,
        ``ClassicalSolver.fit``): ``tuning_val_loss``, the family's loss averaged over the
        validation split, per grid point in search order (``iteration`` = its rank,
        ``solver_params`` = the hyper-parameters of that point).
        """
        rows = []
        for point in training_curve(log.get("training", [])):
            common = dict(iteration=point["step"], subset=point["stage"] or "all", wall_clock_s=point["seconds"],
                          direction="lower", params=params)
            score = point["val_metric"]
            rows.append(self._row(cell, metric="training_val_score", value=score, split="val",
                                  message="" if score == score else "validation score was NaN",
                                  data_hash=data.hashes.get("val"), **common))
            if math.isfinite(point["train_loss"]):
                rows.append(self._row(cell, metric="training_loss", value=point["train_loss"], split="train",
                                      data_hash=data.hashes.get("train"), **common))
        n_val = len(data.splits["val"])
        for rank, entry in enumerate(log.get("tuning", []), 1):
            point = {k: v for k, v in entry.items() if k != "val_loss"}
            loss = entry["val_loss"] / n_val
            rows.append(self._row(cell, metric="tuning_val_loss", value=loss if math.isfinite(loss) else None,
                                  split="val", subset="all", iteration=rank, direction="lower",
                                  message="" if math.isfinite(loss) else f"diverged on validation (loss {loss})",
                                  params={**params, **point}, data_hash=data.hashes.get("val")))
        return rows

    def _trajectory_rows(self, cell, family, solver, test: Instances, solve_seconds: float, row, direction,
                         data_hash) -> list[dict]:
        """Per-iteration metric of the test split, from chunks of at most TRAJECTORY_CHUNK_BYTES.

        The trajectory covers every iteration any test instance runs: an instance that
        has stopped keeps its final iterate, and so does a chunk whose instances have
        all stopped, so the last point is the metric of the estimate.
        """
        probe = solver.solve(test.subset(slice(0, 1)).observation(), trajectory=True).trajectory
        if not probe:
            return []
        n_iter, pass_ = len(probe), None
        while pass_ is None:  # a chunk running longer than assumed sets the length, and the pass restarts
            pass_, n_iter = self._trajectory_pass(cell, solver, test, probe[0], n_iter)
        kept, stop_distribution = pass_
        rows = []
        if stop_distribution:  # a learned stopping policy's q(t), averaged over the test split
            mean = torch.cat(stop_distribution).double().mean(0)
            rows += [row(metric="stop_probability", value=float(p), split="test", iteration=t,
                         data_hash=data_hash) for t, p in enumerate(mean.tolist(), 1)]
        seconds, sources = self._wall_clock_axis(solver, test, kept, solve_seconds)
        for t in list(kept):
            for m in family.evaluate(torch.cat(kept.pop(t)), test):
                rows.append(row(metric=m.metric, value=m.value, split="test", subset=m.subset, iteration=t,
                                direction=direction(m.metric), wall_clock_s=seconds[t],
                                wall_clock_source=sources[t], data_hash=data_hash))
        return rows

    def _wall_clock_axis(self, solver, test: Instances, kept: dict[int, list],
                         solve_seconds: float) -> tuple[dict[int, float], dict[int, str]]:
        """Seconds to reach each kept iteration, and how each is known: ``measured`` (the batch solved
        with the solver stopped there, ``timing.truncated``), ``interpolated`` (linearly between
        measured iterations) or, where the solver cannot be stopped at an iteration whose estimate is
        its trajectory's, ``modelled`` (the batched solve time times t / T).

        At most ``WALL_CLOCK_POINTS`` log-spaced iterations are timed, in turn, in as many rounds
        (3 to 5) as fit in ``WALL_CLOCK_BUDGET`` times the batched solve time or
        ``WALL_CLOCK_MIN_SECONDS``, whichever is more (``timing.budget_seconds``); the extra time
        is at most that, or 3 rounds when they alone are longer (a round of log-spaced budgets
        costs about 1.3 to 3.5 solves), plus one solve at the first budget (checked before the
        rounds). The last iteration is timed with the solver itself.
        """
        keep = sorted(kept)
        n_iter = keep[-1]
        modelled = ({t: solve_seconds * t / n_iter for t in keep}, dict.fromkeys(keep, "modelled"))
        points = sorted({min(keep, key=lambda k: abs(k - t)) for t in recorded_iterations(n_iter, WALL_CLOCK_POINTS)})
        stopped = [solver if t == n_iter else truncated(solver, t) for t in points]
        if any(s is None for s in stopped):
            return modelled
        try:
            # The first, cheapest budget alone first: a solver that cannot stop there (a forward that
            # ignores depth) is found at the cost of one solve of it, before the timing rounds.
            with torch.no_grad():
                first = stopped[0].solve(test.observation())
            if not _same_estimate(first.estimate, torch.cat(kept[points[0]])):
                return modelled
            allowance = max(WALL_CLOCK_BUDGET * solve_seconds, WALL_CLOCK_MIN_SECONDS)
            medians, solutions = budget_seconds(stopped, test, self.device, allowance)
        except Exception:  # noqa: BLE001 - a solver that cannot run so few iterations (e.g. k below its minimum)
            return modelled
        for t, solution in zip(points, solutions):
            if not _same_estimate(solution.estimate, torch.cat(kept[t])):
                return modelled
        # Reaching iteration t costs at least what reaching an earlier one does: timing noise aside,
        # the measured times are non-decreasing, so a dip is read as noise and raised to the maximum so far.
        measured = torch.tensor(medians, dtype=torch.float64).cummax(0).values
        axis = torch.tensor(keep, dtype=torch.float64)
        at = torch.tensor(points, dtype=torch.float64)
        index = torch.searchsorted(at, axis).clamp(1, max(len(points) - 1, 1))
        lo, hi = index - 1, index.clamp(max=len(points) - 1)
        span = (at[hi] - at[lo]).clamp_min(1.0)
        seconds = measured[lo] + (measured[hi] - measured[lo]) * ((axis - at[lo]) / span).clamp(0, 1)
        on_point = set(points)
        return ({t: float(v) for t, v in zip(keep, seconds.tolist())},
                {t: "measured" if t in on_point else "interpolated" for t in keep})

    def _trajectory_pass(self, cell, solver, test: Instances, point: torch.Tensor, n_iter: int):
        """``((kept iterates by iteration, stop distributions), n_iter)`` over the test split in
        chunks, or ``(None, longer)`` as soon as a chunk runs ``longer`` than ``n_iter`` iterations."""
        keep = recorded_iterations(n_iter)
        chunk = max(1, TRAJECTORY_CHUNK_BYTES // (point.numel() * point.element_size() * n_iter))
        kept: dict[int, list] = {t: [] for t in keep}
        stop_distribution = []
        bar = self.bar(len(test), f"trajectory {cell.solver_label}")
        try:
            with torch.no_grad():
                for start in range(0, len(test), chunk):
                    part = test.subset(slice(start, start + chunk))
                    solution = solver.solve(part.observation(), trajectory=True)
                    path = solution.trajectory
                    if len(path) > n_iter:
                        return None, len(path)
                    for t in keep:  # past a chunk's last iteration, its instances hold their final iterates
                        kept[t].append(path[min(t, len(path)) - 1])
                    if solution.stop_distribution is not None:
                        stop_distribution.append(solution.stop_distribution)
                    bar.update(len(part))
        finally:
            bar.close()
        return (kept, stop_distribution), n_iter


class Runner(CellComputer):
    """Runs planned cells and writes their results; the only writer of its results directory.

    The results directory is locked from construction until ``close`` (or the
    end of a ``with`` block, or the process).

    Parameters
    ----------
    registry : Registry
    cells : sequence of Cell
    results_dir : path
    device : torch.device
    cache : Cache
    resume : bool
        Continue the run stored in ``results_dir``: finished cells whose
        identity is unchanged are skipped, changed and corrupt cell files are
        moved aside (``l2obench.resume.reconcile``).
    progress : bool
        Show progress bars.
    echo : callable
        Where one line per cell is printed.
    argv : sequence of str
        The command line, recorded in ``run.json``.
    suite : SuiteSource, optional
        The suite by content, recorded in ``run.json`` and checked on resume
        (without it, the cells' suite name is compared).
    cell_timeout : float, optional
        Seconds a cell may run (data, fit, solve and evaluation) before it is
        recorded as ``timeout`` (``l2obench.limits.cell_time_limit``); None or 0: no limit.
    execution : dict, optional
        How cells are computed (executor, workers, threads), recorded in a new
        run's ``run.json``.

    Raises
    ------
    UsageError
        If another run holds the directory, it cannot be written, or it holds
        another run (see ``resume``).
    """

    def __init__(self, registry, cells: Sequence[Cell], results_dir: str | Path, device: torch.device,
                 cache: Cache, resume: bool = False, progress: bool = True,
                 echo: Callable[[str], None] = print, argv: Sequence[str] = (),
                 suite: SuiteSource | None = None, cell_timeout: float | None = None,
                 execution: dict | None = None):
        self.cells = list(cells)
        self.results_dir = Path(results_dir)
        self.device = device
        self.echo = echo
        self.identities = Identities(registry)
        self._execution = execution
        self._check_not_foreign()
        self._lock = RunLock(self.results_dir)
        try:
            run_id = self._open_run(resume, list(argv), suite)
            self._on_disk = reconcile(self.results_dir, self.cells, self.identities, echo) if resume else {}
        except BaseException:
            self._lock.release()
            raise
        super().__init__(registry, device, cache, run_id, progress=progress, cell_timeout=cell_timeout,
                         identities=self.identities)

    # -- run directory -------------------------------------------------------
    def close(self) -> None:
        """Release the results directory's lock."""
        self._lock.release()

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def cells_dir(self) -> Path:
        return self.results_dir / "cells"

    def cell_path(self, cell: Cell) -> Path:
        return self.cells_dir / f"{cell.cell_id}.parquet"

    def _check_not_foreign(self) -> None:
        if (self.results_dir.is_dir() and not (self.results_dir / "run.json").exists()
                and any(p.name != LOCK_NAME for p in self.results_dir.iterdir())):
            raise UsageError(f"{self.results_dir} exists and is not an l2obench run directory; choose another --results")

    def _open_run(self, resume: bool, argv: list[str], source: SuiteSource | None) -> str:
        manifest = self.results_dir / "run.json"
        suite, scale = self.cells[0].suite if self.cells else "", self.cells[0].scale if self.cells else ""
        if manifest.exists():
            info = json.loads(manifest.read_text())
            if not resume:
                raise UsageError(f"{self.results_dir} already holds run {info['run_id']} ({info['suite']}, "
                                 f"scale {info['scale']}); add --resume to continue it, or choose another --results")
            same_suite = source.matches(info) if source is not None else info["suite"] == suite
            if not same_suite or info["scale"] != scale:
                raise UsageError(f"cannot resume: {self.results_dir} holds suite {info['suite']} at scale "
                                 f"{info['scale']}, not {suite} at scale {scale}")
            # Rows of one run name its suite alike, however its file was spelled on each resume.
            self.cells = [dataclasses.replace(c, suite=info["suite"]) for c in self.cells]
            if source is not None and info.get("suite_content") != source.content:
                self._note_suite_change(manifest, info, source)
            kernels = cpu_kernels(self._execution)
            if not same_kernels(info.get("cpu_kernels"), kernels):
                # Cells finished from here on may differ in their last bits from the earlier ones.
                info.setdefault("resumed_with_other_kernels", []).append({
                    "resumed": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "device": describe_device(self.device), "cpu_kernels": kernels})
                write_atomically(manifest, lambda tmp: tmp.write_text(json.dumps(info, indent=2) + "\n"))
                if "cpu_kernels" in info:
                    self.echo(f"note: resuming with other CPU kernels than run {info['run_id']} started with "
                              f"(recorded in {manifest})")
            return info["run_id"]
        run_id = f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
        self.cells_dir.mkdir(parents=True, exist_ok=True)
        origin = {"suite_origin": source.origin, "suite_content": source.content} if source is not None else {}
        manifest.write_text(json.dumps({
            "run_id": run_id, "suite": suite, **origin, "scale": scale, "argv": argv,
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "cells": len(self.cells), "device": describe_device(self.device),
            "cpu_kernels": cpu_kernels(self._execution),
            **({"execution": self._execution} if self._execution else {})},
            indent=2) + "\n")
        return run_id

    def _note_suite_change(self, manifest: Path, info: dict, source: SuiteSource) -> None:
        """Record the suite's content in ``run.json``, and a change of it under ``suite_changes``
        (a run recorded before suite contents were gets the content only)."""
        if "suite_content" in info:
            self.echo(f"note: suite {source.name} changed since run {info['run_id']} started; cells whose "
                      "identity changed run again")
            info.setdefault("suite_changes", []).append({
                "resumed": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "suite_origin": source.origin, "suite_content": source.content})
        info.update(suite_origin=source.origin, suite_content=source.content)
        write_atomically(manifest, lambda tmp: tmp.write_text(json.dumps(info, indent=2) + "\n"))

    def _done(self, cell: Cell) -> str | None:
        """Status of a finished cell on disk whose identity is the planned one (failed and timed-out
        cells are run again)."""
        status = self._on_disk.get(cell.cell_id)
        return None if status in ("failed", "timeout") else status

    # -- the loop --------------------------------------------------------------
    def run(self, executor=None) -> RunSummary:
        """Run every planned cell not already on disk, in this process, or on ``executor`` (an
        ``l2obench.executors`` executor) with each cell written here as it finishes."""
        summary = RunSummary(self.results_dir)
        start = time.perf_counter()
        width = len(str(len(self.cells)))
        prefix = lambda i, cell: f"[{i:>{width}}/{len(self.cells)}] {cell.describe()}"  # noqa: E731
        on_disk = sum(self._done(cell) is not None for cell in self.cells)
        # The run's bar stays below the cells' lines; its time left is estimated from the cells computed here.
        cells_bar = progress.bar(len(self.cells), "cells", self.progress_enabled, leave=True, unit="cell",
                                 initial=on_disk)
        echo = progress.above_bars(self.echo)
        todo = []
        with cells_bar, progress.warnings_above_bars(cells_bar):
            for i, cell in enumerate(self.cells, 1):
                done = self._done(cell)
                if done is not None:
                    summary.outcomes.append(CellOutcome(cell, done, skipped=True))
                    echo(f"{prefix(i, cell)}: {done} (on disk, skipped)")
                elif executor is None:
                    self._report(prefix(i, cell), self.run_cell(cell), summary, echo, cells_bar)
                else:
                    todo.append((i, cell))
            if todo:
                for k, result in executor.results([cell for _, cell in todo], self.run_id):
                    i, cell = todo[k]
                    self._report(prefix(i, cell), self.record(cell, result), summary, echo, cells_bar)
                order = {cell.cell_id: i for i, cell in enumerate(self.cells)}
                summary.outcomes.sort(key=lambda o: order[o.cell.cell_id])
        summary.seconds = time.perf_counter() - start
        return summary

    def _report(self, prefix: str, outcome: CellOutcome, summary: RunSummary, echo, cells_bar) -> None:
        summary.outcomes.append(outcome)
        if outcome.stderr:  # a worker's warnings
            progress.stderr_above_bars(outcome.stderr)
        detail = outcome.summary if outcome.status == "ok" else outcome.message
        echo(f"{prefix}: {outcome.status}  {detail}")
        cells_bar.update(1)

    def run_cell(self, cell: Cell) -> CellOutcome:
        """Compute one cell in this process and write its rows."""
        return self.record(cell, self.compute(cell))

    def record(self, cell: Cell, result: CellResult | BaseException) -> CellOutcome:
        """Write a computed cell's rows (and a failed cell's traceback to ``logs/``).

        ``result`` may be the exception a worker raised instead of a result; a
        result whose rows carry another identity than this runner's (a worker
        with other code than the driver) is recorded as failed.
        """
        if isinstance(result, BaseException):
            result = self._lost(cell, f"{type(result).__name__}: {result}", _format(result))
        else:
            computed = result.rows[0].get("identity") if result.rows else None
            expected = self.identities.identity(cell)
            if computed != expected:
                result = self._lost(cell, f"the worker computed identity {computed}, not {expected}: its code "
                                    "(l2obench, plugins or problem families) differs from the driver's", None)
        message = result.message
        if result.traceback is not None:
            log = self.results_dir / "logs" / f"{cell.cell_id}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(f"{cell.describe()}\n\n{result.traceback}")
            message += f" (traceback: {log})"
        for name, content in result.files.items():  # before the cell file, which marks the cell done
            write_atomically(self.results_dir / name, lambda tmp, content=content: tmp.write_bytes(content))
        write_parquet(result.rows, self.cell_path(cell))
        return CellOutcome(cell, result.status, message, result.summary, stderr=result.stderr)

    def _lost(self, cell: Cell, message: str, trace: str | None) -> CellResult:
        """A failed cell whose result did not come back from its worker."""
        row = self._row(cell, metric="error", value=None, status="failed", message=message)
        return CellResult("failed", [row], message, traceback=trace)


def _illustrations(cell: Cell, family, solution, instances, split: str) -> dict[str, bytes]:
    """The family's illustrations of ``solution`` on ``split`` (``ProblemFamily.illustrations``), by
    their paths in the results directory."""
    with torch.no_grad():
        files = family.illustrations(solution.estimate, instances)
    base = Path("images") / folder_name(sweep_label(cell.problem_label, cell.sweep.get("problem", {}))) / f"seed{cell.seed}"
    solver = folder_name(sweep_label(cell.solver_label, cell.sweep.get("solver", {})))
    placed = {}
    for name, content in files.items():
        parts = Path(name).parts
        where = base / "input" / split / Path(*parts[1:]) if parts[0] == "input" else base / solver / split / name
        placed[where.as_posix()] = content
    return placed


def _format(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))

def _same_estimate(estimate: torch.Tensor, iterate: torch.Tensor) -> bool:
    """Whether ``estimate`` is ``iterate`` (same shape, within ``SAME_ESTIMATE_RTOL``)."""
    if not torch.is_tensor(estimate) or estimate.shape != iterate.shape:
        return False
    distance = torch.linalg.vector_norm((estimate - iterate).double())
    return bool(distance <= SAME_ESTIMATE_RTOL * torch.linalg.vector_norm(iterate.double()) + 1e-12)


def _stop_fractions(iterations: torch.Tensor) -> list[tuple[int, float]]:
    """Fraction of instances stopping at each iteration, when not all stop at the same one."""
    if iterations.min() == iterations.max():
        return []
    values, counts = torch.unique(iterations, return_counts=True)
    return [(int(v), float(c) / iterations.numel()) for v, c in zip(values.tolist(), counts.tolist())]


def _evaluate(family, solution, instances: Instances) -> list:
    """The family's metrics of a solution: its estimate's, then its extras' (``evaluate_extras``)."""
    return family.evaluate(solution.estimate, instances) + family.evaluate_extras(solution.extras, instances)


def _value(measurements, metric: str, subset: str = "all") -> float:
    return next(m.value for m in measurements if m.metric == metric and m.subset == subset)


def _check_estimate(family, estimate: torch.Tensor, instances: Instances, split: str) -> None:
    """Refuse an estimate of the wrong shape or dtype (a failed cell), then a non-finite one (diverged)."""
    try:
        check_estimate(family, estimate, instances)
    except InvalidEstimateError as exc:
        raise InvalidEstimateError(f"{split} split: {exc}") from None
    _check_finite(estimate, split)


def _check_finite(estimate: torch.Tensor, split: str) -> None:
    if not torch.isfinite(estimate).all():
        bad = int((~torch.isfinite(estimate)).flatten(1).any(1).sum())
        raise DivergedError(f"non-finite estimate (NaN or inf) on {bad} {split} instance(s)")
