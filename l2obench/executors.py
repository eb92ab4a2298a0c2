"""Computing cells elsewhere: worker processes on this machine (``-j N``) or a Dask cluster.

An executor takes cells and yields ``(index, result)`` as they finish, where
``result`` is a ``l2obench.runner.CellResult`` or the exception that lost it;
the runner (``Runner.run(executor)``) writes each one. Workers compute and
write nothing but cache entries: the driver alone holds the results
directory's lock and writes cell files and logs.

How data and fitted models reach workers: they are not shipped. A worker
regenerates a cell's splits from its setting and seed, as the serial run does
(the same bytes on any machine with the same CPU kernels), through the
content-keyed cache (``l2obench.cache``) and keeps the last setting's splits in
memory, so consecutive cells of one setting on one worker draw it once. A
worker fits its cell's solver (or loads the fitted state from the cache).
Shipping splits would send up to hundreds of MB per cell through the pool or
the scheduler, while drawing them costs seconds against minutes of fitting, and
a cache shared by the workers (a shared ``--cache-dir``) draws each setting once
in the whole cluster; writes to the cache are atomic, so workers racing on one
entry write the same bytes in turn.

Process pool: the ``spawn`` start method, never ``fork``: a forked child
inherits torch's OpenMP thread pool in whatever state the parent left it (it
can deadlock) and starts with the parent's libgomp settings, whereas a spawned
worker is a fresh interpreter whose thread policy (``l2obench.threads``) is
set before it imports torch. ``forkserver`` would be as safe, but its server
keeps the environment of its first use for every later pool, so a second pool
with other thread counts in one process would not get them; the price of
``spawn`` (a torch import per worker, about a second) is paid once per worker
per run, as workers are reused. Workers run cells in their main thread, where
``--cell-timeout``'s ``SIGALRM`` timer applies; they ignore Ctrl-C, which the
driver handles by ending them. A worker that dies (killed, out of memory)
breaks its pool: the cells then in flight run again one at a time in a fresh
pool, and the one whose worker dies again is recorded as failed.

Dask: each cell is one task, submitted in plan order (Dask runs earlier
submissions first). Tasks run in worker threads, so ``--cell-timeout`` uses an
asynchronous exception there (``l2obench.limits``). Workers need l2obench,
the plugins and problem families of the run installed, and ``--plugin`` files
at the same path; the driver checks that each cell's rows carry its own
identity, so a worker with other code gives a failed cell, never a silently
different number. A worker loads an edited ``--plugin`` file again, but keeps
the modules it imported: restart a long-lived cluster's workers after changing
installed code (``Client.restart``), as identities hash the source files on
disk, not the code a worker has loaded.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import multiprocessing
import os
import signal
import sys
import threading
import uuid
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from l2obench import threads as thread_policy
from l2obench.errors import UsageError

__all__ = ["DaskExecutor", "ProcessPool", "WorkerConfig", "WorkerDied"]

# How long the driver waits for a Dask scheduler to answer.
CONNECT_TIMEOUT = "30s"


class WorkerDied(RuntimeError):
    """A worker process ended while computing the cell, the second time with the cell alone in its pool."""


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs to compute the cells of one run.

    Parameters
    ----------
    run_id : str
        Set by the runner (``results(cells, run_id)``).
    device : str
        ``auto``, ``cpu`` or ``cuda[:N]``, resolved on the worker.
    cache_dir : str, optional
        None: the worker's default (``$L2OBENCH_CACHE`` or ``~/.cache/l2obench`` there).
    cache_enabled : bool
    cell_timeout : float, optional
    threads : int, optional
        Torch threads per worker; None leaves them as the worker starts.
    plugin_files : tuple of str
        ``--plugin`` files, by absolute path.
    strict_plugins : bool
    """

    run_id: str = ""
    device: str = "cpu"
    cache_dir: str | None = None
    cache_enabled: bool = True
    cell_timeout: float | None = None
    threads: int | None = None
    plugin_files: tuple[str, ...] = ()
    strict_plugins: bool = False


_registries: dict[tuple, object] = {}
_registries_lock = threading.Lock()
_local = threading.local()


def _computer(config: WorkerConfig):
    """This thread's ``CellComputer`` for ``config`` (one registry per process, one computer per thread:
    a computer's in-memory splits are not shared between threads)."""
    computers = getattr(_local, "computers", None)
    if computers is None:
        computers = _local.computers = {}
    if config not in computers:
        from l2obench.cache import Cache
        from l2obench.registry import Registry
        from l2obench.runner import CellComputer
        from l2obench.timing import resolve_device

        key = (config.plugin_files, config.strict_plugins, _digests(config.plugin_files))
        with _registries_lock:
            if key not in _registries:
                _registries[key] = Registry(plugin_files=config.plugin_files, strict=config.strict_plugins)
        computers.clear()  # one run at a time: free another run's splits
        computers[config] = CellComputer(
            _registries[key], resolve_device(config.device), Cache(config.cache_dir, enabled=config.cache_enabled),
            config.run_id, progress=False, cell_timeout=config.cell_timeout)
    return computers[config]


def _digests(paths: Sequence[str]) -> tuple[str, ...]:
    """Contents of plugin files, so that a long-lived worker loads an edited one again."""
    return tuple(hashlib.sha256(Path(path).read_bytes()).hexdigest() if Path(path).is_file() else ""
                 for path in paths)


def _threads(n: int | None) -> str:
    return "torch's default threads" if n is None else f"{n} thread{'s' if n != 1 else ''}"


# -- process pool ----------------------------------------------------------------
_pool_config: WorkerConfig | None = None
_torch_before_policy: bool | None = None


def _start_pool_worker(config: WorkerConfig) -> None:
    global _pool_config, _torch_before_policy
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _torch_before_policy = "torch" in sys.modules
    thread_policy.apply(config.threads, passive=True)
    _pool_config = config


def _compute_capturing_stderr(config: WorkerConfig, cell):
    """The cell's result, with what the worker wrote to stderr meanwhile (Python warnings, a plugin's
    prints) in ``stderr``: the driver shows it above its progress bars instead of the worker writing
    into them. Only for a worker computing one cell at a time: the redirection is process-wide."""
    with contextlib.redirect_stderr(io.StringIO()) as captured:
        result = _computer(config).compute(cell)
    result.stderr = captured.getvalue()
    return result


def _compute_in_pool(cell):
    """The cell's result in a pool worker, which computes one cell at a time: stderr captured."""
    return _compute_capturing_stderr(_pool_config, cell)


def _pool_worker_state() -> dict:
    """A pool worker's thread settings (for tests): torch's threads, the policy's variables, and
    whether torch was imported before the policy was applied."""
    import torch

    return {"threads": torch.get_num_threads(), "torch_before_policy": _torch_before_policy,
            **{var: os.environ.get(var) for var in (*thread_policy.THREAD_VARS, thread_policy.WAIT_POLICY[0])}}


class ProcessPool:
    """``jobs`` spawned worker processes on this machine, each with ``config.threads`` threads.

    Parameters
    ----------
    config : WorkerConfig
    jobs : int
    """

    def __init__(self, config: WorkerConfig, jobs: int):
        self.config = config
        self.jobs = jobs
        self._executor: ProcessPoolExecutor | None = None

    def _bind(self, run_id: str) -> None:
        if run_id != self.config.run_id:
            self.close()  # workers hold the configuration they were started with
            self.config = dataclasses.replace(self.config, run_id=run_id)

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_start_pool_worker, initargs=(self.config,))
        return self._executor

    def call(self, function, *args):
        """``function(*args)`` in a worker (tests and diagnostics)."""
        return self._pool().submit(function, *args).result()

    def results(self, cells: Sequence, run_id: str) -> Iterator[tuple[int, object]]:
        """Compute ``cells`` of run ``run_id``; yield ``(index, CellResult or exception)`` as each finishes.

        At most ``jobs`` cells are submitted at a time, in order. When a worker dies, the cells that were
        in flight run again one at a time in a fresh pool: the one that kills its worker again gets
        ``WorkerDied``, the others their results.
        """
        self._bind(run_id)
        queue = deque(range(len(cells)))
        suspects: deque[int] = deque()
        while queue or suspects:
            while suspects:
                i = suspects.popleft()
                yield i, self._outcome(self._submit_alone(cells[i]), alone=True)
            running: dict = {}
            broken = False
            while (queue or running) and not suspects and not broken:
                while queue and len(running) < self.jobs:
                    try:
                        future = self._pool().submit(_compute_in_pool, cells[queue[0]])
                    except BrokenProcessPool:  # a worker died since the last wait: its cell's future says so
                        broken = True
                        break
                    running[future] = queue.popleft()
                if broken:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    result = self._outcome(future)
                    if result is None:
                        suspects.append(running[future])
                    else:
                        yield running[future], result
                    del running[future]
            for future, i in running.items():  # the pool broke: the others in flight end too
                result = self._outcome(future)
                if result is None:
                    suspects.append(i)
                else:
                    yield i, result
            if suspects or broken:
                self.close(terminate=True)

    def _submit_alone(self, cell):
        """The future of ``cell`` submitted to a whole pool: the last one broke if its worker died after
        finishing its cell (a fresh pool accepts its first submit)."""
        try:
            return self._pool().submit(_compute_in_pool, cell)
        except BrokenProcessPool:
            self.close(terminate=True)
            return self._pool().submit(_compute_in_pool, cell)

    def _outcome(self, future, alone: bool = False):
        """A finished cell's result, its exception, or None when its worker died beside others."""
        try:
            return future.result()
        except BrokenProcessPool:
            if not alone:
                return None
            self.close(terminate=True)
            return WorkerDied("its worker process died (killed, or out of memory?), twice, the second time "
                              "running this cell alone")
        except Exception as exc:  # noqa: BLE001 - e.g. a result that cannot be pickled
            return exc

    def close(self, terminate: bool = False) -> None:
        """Stop the workers once idle, or at once (``terminate``: cells not finished are dropped)."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        if terminate:
            for process in list((getattr(executor, "_processes", None) or {}).values()):
                process.terminate()
        executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "ProcessPool":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(terminate=exc_type is not None)

    def describe(self) -> str:
        return f"{self.jobs} worker processes x {_threads(self.config.threads)}"


# -- Dask --------------------------------------------------------------------------
def _compute_on_dask(config: WorkerConfig, cell):
    """The cell's result on a Dask worker. A worker of one thread (a LocalCluster's) computes with its
    stderr captured, as a pool worker does, so that the driver shows a plugin's warnings above its
    progress bars; with more threads, redirecting the process's stderr would take other cells' too,
    so it goes where the worker's stderr goes (its log)."""
    thread_policy.apply(config.threads, passive=True)
    if _dask_worker_threads() != 1:
        return _computer(config).compute(cell)
    return _compute_capturing_stderr(config, cell)


def _dask_worker_threads() -> int | None:
    """The number of threads of the Dask worker running the calling task (None when not known)."""
    try:
        return _import_distributed().get_worker().state.nthreads
    except (ValueError, AttributeError):
        return None


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise UsageError("the dask executors need Dask distributed: pip install 'l2obench[dask]'") from None
    return distributed


class DaskExecutor:
    """Cells as tasks on a Dask distributed cluster: an existing one (``scheduler``), or a LocalCluster
    of ``workers`` processes of one worker thread each, on this machine.

    Parameters
    ----------
    config : WorkerConfig
        ``config.threads``: torch threads per cell (None: as the workers start; a LocalCluster: 1).
    scheduler : str, optional
        Address of the scheduler, e.g. ``tcp://10.0.0.5:8786``.
    workers : int, optional
        Without ``scheduler``: the LocalCluster's worker processes.

    Raises
    ------
    UsageError
        If Dask distributed is not installed or the scheduler does not answer.
    """

    def __init__(self, config: WorkerConfig, scheduler: str | None = None, workers: int | None = None):
        distributed = _import_distributed()
        self.config = config
        self.cluster = None
        if scheduler is None:
            threads = config.threads or 1
            self.cluster = distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address=None, env=thread_policy.worker_environment(threads))
            self.client = distributed.Client(self.cluster)
            self.where = f"a Dask LocalCluster of {workers} worker processes x {_threads(threads)}"
        else:
            try:
                self.client = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                raise UsageError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
            self.where = f"the Dask cluster at {scheduler}"

    def results(self, cells: Sequence, run_id: str) -> Iterator[tuple[int, object]]:
        """Compute ``cells`` of run ``run_id``; yield ``(index, CellResult or exception)`` as each finishes."""
        self.config = dataclasses.replace(self.config, run_id=run_id)
        distributed = _import_distributed()
        token = uuid.uuid4().hex[:8]
        futures = [self.client.submit(_compute_on_dask, self.config, cell, pure=False,
                                      key=f"l2obench-cell-{cell.cell_id}-{token}") for cell in cells]
        index = {future.key: i for i, future in enumerate(futures)}
        try:
            for future in distributed.as_completed(futures):
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - a lost task fails its cell
                    result = exc
                yield index[future.key], result
        finally:
            self.client.cancel([f for f in futures if not f.done()])

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def __enter__(self) -> "DaskExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> str:
        return self.where
