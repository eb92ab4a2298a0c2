"""Parallel and Dask execution: the same numbers as the serial run, timeouts and failures in workers,
the thread policy, and options refused before compute."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool

import pytest
import torch

from l2obench import threads as thread_policy
from l2obench.threads import busy_cores  # the real one: conftest patches the module's for in-process runs
from l2obench.cache import Cache
from l2obench.executors import ProcessPool, WorkerConfig, _pool_worker_state
from l2obench.limits import cell_time_limit, thread_time_limit
from l2obench.registry import Registry
from l2obench.results import read_results
from l2obench.runner import Runner
from l2obench.suites import plan
from l2obench.timeout import CellTimeout

SUITE = {
    "seeds": [0],
    "problems": [{"family": "lasso", "label": "cs-tiny",
                  "settings": {"m": 10, "n": 20, "n_train": 64, "n_val": 24, "n_test": 24}}],
    "solvers": [
        {"solver": "ista", "params": {"max_iter": 10, "tol": 0.0, "lam": 0.05}},
        {"solver": "fista", "params": {"max_iter": 10, "tol": 0.0}},
        {"solver": "lista", "params": {"n_layers": 3}, "budget": {"steps": 20, "batch_size": 16, "eval_every": 10}},
    ],
}

PLUGIN = textwrap.dedent('''
    import os
    import l2obench
    from l2obench.contracts import Solution, Solver

    class Looping(Solver):
        def fit(self, context):
            while True:
                pass

    class Dying(Solver):
        def fit(self, context):
            os._exit(3)

    class Zeros(Solver):
        def solve(self, observation, trajectory=False):
            b = observation["b"]
            return Solution(b.new_zeros((b.shape[0], observation["A"].shape[-1])))

    class Warning(Zeros):
        def fit(self, context):
            import warnings
            warnings.warn("the zeros are only a guess", RuntimeWarning)

    @l2obench.hookimpl
    def l2obench_register_solvers(register):
        for name, cls in (("looping", Looping), ("dying", Dying), ("zeros", Zeros), ("warning", Warning)):
            register(l2obench.SolverSpec(name=name, factory=cls, families=("lasso",)))
''')

TIMINGS = {"wall_clock_s", "timestamp", "run_id"}


def _suite(tmp_path, solvers=None, name="suite.json"):
    body = json.loads(json.dumps(SUITE))
    if solvers is not None:
        body["solvers"] = solvers
    path = tmp_path / name
    path.write_text(json.dumps(body))
    return path


@pytest.fixture
def plugin(tmp_path):
    path = tmp_path / "exec_plugin.py"
    path.write_text(PLUGIN)
    return path


def _values(results):
    """Every measured number but timings, by cell and row, with its data hash, identity and status."""
    df = read_results([results])
    timing = df["metric"].str.contains("_seconds") | df["metric"].str.contains("latency") | \
        (df["metric"] == "wall_clock_saved_fraction")
    df = df[~timing].drop(columns=sorted(TIMINGS & set(df.columns)))
    keys = ["cell_id", "split", "subset", "metric", "iteration"]
    df = df.sort_values(keys, na_position="first").reset_index(drop=True)
    return df[keys + ["value", "data_hash", "identity", "status", "solver", "setting", "solver_params"]]


def _run(cli, suite, results, *options):
    code, out, err = cli("run", "--suite", str(suite), "--results", str(results), "--no-progress", "--no-cache",
                         "--threads", "1", *options)
    return code, out, err


def test_process_pool_gives_the_serial_metrics_and_data_hashes(cli, tmp_path):
    suite = _suite(tmp_path)
    code, out, err = _run(cli, suite, tmp_path / "serial")
    assert code == 0, out + err
    code, out, err = _run(cli, suite, tmp_path / "pool", "-j", "2")
    assert code == 0, out + err
    assert "on 2 worker processes x 1 thread" in out and "3 ok, 0 diverged, 0 failed" in out
    serial, pool = _values(tmp_path / "serial"), _values(tmp_path / "pool")
    assert len(serial) > 50 and serial["data_hash"].notna().all()
    assert serial.equals(pool)
    manifest = json.loads((tmp_path / "pool" / "run.json").read_text())
    assert manifest["execution"] == {"executor": "local", "workers": 2, "threads": 1, "scheduler": None}
    assert "execution" not in json.loads((tmp_path / "serial" / "run.json").read_text())
    code, out, err = _run(cli, suite, tmp_path / "pool", "-j", "2", "--resume")
    assert code == 0 and "3 ok, 0 diverged, 0 failed (3 already on disk)" in out, out + err


def test_dask_local_cluster_gives_the_serial_metrics_and_data_hashes(cli, tmp_path):
    pytest.importorskip("distributed")
    suite = _suite(tmp_path)
    code, out, err = _run(cli, suite, tmp_path / "serial")
    assert code == 0, out + err
    code, out, err = _run(cli, suite, tmp_path / "dask", "--executor", "dask-local", "--workers", "2")
    assert code == 0, out + err
    assert "on a Dask LocalCluster of 2 worker processes x 1 thread" in out
    assert _values(tmp_path / "serial").equals(_values(tmp_path / "dask"))


def test_dask_local_cluster_is_two_processes_over_tcp_on_loopback(monkeypatch):
    distributed = pytest.importorskip("distributed")
    from l2obench.executors import DaskExecutor

    started = {}
    real = distributed.LocalCluster

    class Recording(real):
        def __init__(self, **kwargs):
            started.update(kwargs)
            raise RuntimeError("not started")

    monkeypatch.setattr(distributed, "LocalCluster", Recording)
    with pytest.raises(RuntimeError, match="not started"):
        DaskExecutor(WorkerConfig(threads=1), workers=2)
    assert started["n_workers"] == 2 and started["processes"] is True and started["threads_per_worker"] == 1
    assert started["host"] == "127.0.0.1" and started["env"]["OMP_NUM_THREADS"] == "1"


def test_pool_records_a_cell_past_its_timeout_and_goes_on(cli, tmp_path, plugin):
    suite = _suite(tmp_path, [{"solver": "looping"}, {"solver": "zeros"}])
    code, out, err = cli("run", "--suite", str(suite), "--results", str(tmp_path / "run"), "--no-progress",
                         "--plugin", str(plugin), "-j", "2", "--cell-timeout", "2")
    assert code == 1, out + err
    assert "looping x seed 0: timeout  CellTimeout: the cell ran past its time limit of 2 s" in out
    assert "zeros x seed 0: ok" in out
    statuses = read_results([tmp_path / "run"]).groupby("solver")["status"].agg(set)
    assert statuses["looping"] == {"timeout"} and statuses["zeros"] == {"ok"}
    assert any((tmp_path / "run" / "logs").iterdir())  # the driver wrote the worker's traceback


def test_a_pool_workers_warnings_come_back_to_the_drivers_stderr_with_the_cell(cli, tmp_path, plugin):
    suite = _suite(tmp_path, [{"solver": "warning"}, {"solver": "zeros"}])
    code, out, err = cli("run", "--suite", str(suite), "--results", str(tmp_path / "run"), "--no-progress",
                         "--plugin", str(plugin), "-j", "2")
    assert code == 0, out + err
    assert err.count("RuntimeWarning: the zeros are only a guess") == 1, err  # written by the driver


def test_a_dask_local_workers_warnings_come_back_to_the_drivers_stderr_with_the_cell(cli, tmp_path, plugin):
    pytest.importorskip("distributed")
    suite = _suite(tmp_path, [{"solver": "warning"}, {"solver": "zeros"}])
    code, out, err = cli("run", "--suite", str(suite), "--results", str(tmp_path / "run"), "--no-progress",
                         "--plugin", str(plugin), "--executor", "dask-local", "--workers", "1")
    assert code == 0, out + err
    assert err.count("RuntimeWarning: the zeros are only a guess") == 1, err  # written by the driver


def test_dask_worker_thread_records_a_cell_past_its_timeout_and_goes_on(cli, tmp_path, plugin):
    pytest.importorskip("distributed")
    suite = _suite(tmp_path, [{"solver": "looping"}, {"solver": "zeros"}])
    code, out, err = cli("run", "--suite", str(suite), "--results", str(tmp_path / "run"), "--no-progress",
                         "--plugin", str(plugin), "--executor", "dask-local", "--workers", "1", "--cell-timeout", "2")
    assert code == 1, out + err
    assert "looping x seed 0: timeout  CellTimeout: the cell ran past its time limit of 2 s" in out
    assert "zeros x seed 0: ok" in out


def test_pool_worker_that_dies_fails_its_cell_only(cli, tmp_path, plugin):
    suite = _suite(tmp_path, [{"solver": "zeros"}, {"solver": "dying"}, {"solver": "fista", "params": {"max_iter": 5}},
                              {"solver": "ista", "params": {"max_iter": 5}}])
    code, out, err = cli("run", "--suite", str(suite), "--results", str(tmp_path / "run"), "--no-progress",
                         "--plugin", str(plugin), "-j", "2")
    assert code == 1, out + err
    assert "dying x seed 0: failed  WorkerDied: its worker process died" in out
    assert "3 ok, 0 diverged, 1 failed" in out
    statuses = read_results([tmp_path / "run"]).groupby("solver")["status"].agg(set)
    assert statuses.to_dict() == {"dying": {"failed"}, "fista": {"ok"}, "ista": {"ok"}, "zeros": {"ok"}}


class _PoolThatBreaks:
    """A stand-in for ProcessPoolExecutor: a cell in ``dying`` never finishes by itself; ``break_now()``
    is a worker dying, which fails every unfinished future and every later submit, as in the real one."""

    def __init__(self, log, dying=(), break_at_submit=None):
        self.log, self.dying, self.break_at_submit = log, set(dying), break_at_submit
        self.broken, self.futures = False, []

    def submit(self, fn, cell):
        if self.broken:
            raise BrokenProcessPool("A child process terminated abruptly")
        self.log.append(cell)
        future = Future()
        self.futures.append(future)
        if cell not in self.dying:
            future.set_result(f"result of {cell}")
        if len(self.futures) == self.break_at_submit:
            self.break_now()
        return future

    def break_now(self):
        self.broken = True
        for future in self.futures:
            if not future.done():
                future.set_exception(BrokenProcessPool("A child process terminated abruptly"))

    def shutdown(self, wait, cancel_futures):
        pass


def _stand_in_pools(monkeypatch, pool, *pools):
    """``pool`` takes the stand-ins in turn, a fresh one each time it is closed; returns those taken."""
    taken, waiting = [], list(pools)

    def fresh_pool():
        if pool._executor is None:
            pool._executor = waiting.pop(0)
            taken.append(pool._executor)
        return pool._executor

    monkeypatch.setattr(pool, "_pool", fresh_pool)
    return taken


def test_a_worker_that_dies_between_two_submits_reruns_its_cell_alone(monkeypatch):
    """The race behind a CI failure: a worker dies after ``wait`` returned another cell's result and
    before the next submit, which then raises BrokenProcessPool; the pool is replaced, not the run ended."""
    log, pool = [], ProcessPool(WorkerConfig(), jobs=2)
    first = _PoolThatBreaks(log, dying={"b"})
    taken = _stand_in_pools(monkeypatch, pool, first, _PoolThatBreaks(log))
    outcomes = []
    for i, result in pool.results(["a", "b", "c", "d"], pool.config.run_id):
        outcomes.append((i, result))
        if not first.broken:
            first.break_now()  # "b"'s worker dies while the driver writes "a"'s result
    assert outcomes[:2] == [(0, "result of a"), (1, "result of b")]
    assert sorted(outcomes[2:]) == [(2, "result of c"), (3, "result of d")]  # as they finish
    assert log == ["a", "b", "b", "c", "d"]  # "b" once more, alone, in a fresh pool
    assert len(taken) == 2


def test_a_worker_that_dies_after_finishing_a_cell_alone_does_not_end_the_reruns(monkeypatch):
    log, pool = [], ProcessPool(WorkerConfig(), jobs=2)
    second = _PoolThatBreaks(log)
    taken = _stand_in_pools(monkeypatch, pool, _PoolThatBreaks(log, dying={"a", "b"}, break_at_submit=2),
                            second, _PoolThatBreaks(log))
    outcomes = []
    for i, result in pool.results(["a", "b", "c"], pool.config.run_id):
        outcomes.append((i, result))
        if len(taken) == 2 and not second.broken:
            second.break_now()  # the first cell rerun alone ran to its end, then its worker died
    assert sorted(outcomes) == [(0, "result of a"), (1, "result of b"), (2, "result of c")]
    assert log[:2] == ["a", "b"] and sorted(log[2:4]) == ["a", "b"] and log[4:] == ["c"]  # reruns, in any order
    assert len(taken) == 3 and len(second.futures) == 1  # the second pool broke after one cell


def test_ctrl_c_ends_the_pool_workers_and_exits_130(tmp_path, plugin, venv_bin):
    psutil = pytest.importorskip("psutil")
    suite = _suite(tmp_path, [{"solver": "zeros"}, {"solver": "looping"}])
    driver = subprocess.Popen(
        [os.path.join(venv_bin, "l2obench"), "run", "--suite", str(suite), "--results", str(tmp_path / "run"),
         "--no-progress", "--plugin", str(plugin), "-j", "2", "--cell-timeout", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        # Started in the background (nohup, `&`), this process may ignore SIGINT, and Python then sets no
        # KeyboardInterrupt handler in the driver: give it the default disposition, as a terminal would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        lines = []
        for line in driver.stdout:
            lines.append(line)
            if "zeros x seed 0: ok" in line:
                break
        def cmdline(process):
            try:
                return " ".join(process.cmdline())
            except psutil.Error:  # a short-lived child (the git of the results' stamp) ended meanwhile
                return ""

        workers = [p for p in psutil.Process(driver.pid).children(recursive=True) if "spawn_main" in cmdline(p)]
        assert len(workers) == 2, "".join(lines)
        driver.send_signal(signal.SIGINT)
        assert driver.wait(timeout=60) == 130, "".join(lines) + driver.stdout.read()
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive
    finally:
        try:  # a failed check must not leave a worker spinning on the looping solver
            for child in psutil.Process(driver.pid).children(recursive=True):
                child.kill()
        except psutil.Error:
            pass
        driver.kill()
        driver.stdout.close()
    assert set(read_results([tmp_path / "run"])["solver"]) == {"zeros"}
    assert not (tmp_path / "run" / ".l2obench.lock").exists()


@pytest.mark.parametrize("options, message", [
    (["-j", "2", "--executor", "dask-local"], "-j is for --executor local"),
    (["--scheduler", "tcp://127.0.0.1:1"], "--scheduler goes with --executor dask"),
    (["--executor", "dask"], "--executor dask needs --scheduler ADDRESS"),
    (["--workers", "2"], "--workers goes with --executor dask-local"),
])
def test_execution_options_that_do_not_fit_exit_2_before_compute(cli, tmp_path, options, message):
    code, out, err = cli("run", "--suite", str(_suite(tmp_path)), "--results", str(tmp_path / "run"), *options)
    assert code == 2 and message in err, out + err
    assert not (tmp_path / "run").exists()


def test_unreachable_dask_scheduler_exits_2_and_leaves_no_run(cli, tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr("l2obench.executors.CONNECT_TIMEOUT", "1s")
    code, out, err = cli("run", "--suite", str(_suite(tmp_path)), "--results", str(tmp_path / "run"),
                         "--executor", "dask", "--scheduler", "tcp://127.0.0.1:1")
    assert code == 2 and "cannot reach the Dask scheduler at tcp://127.0.0.1:1" in err, out + err
    assert not (tmp_path / "run").exists()


def test_a_cell_computed_with_other_code_is_failed_not_recorded_ok(tmp_path):
    registry = Registry()
    cells = plan(registry, "s", json.loads(json.dumps(SUITE)), scale="smoke")[:1]
    with Runner(registry, cells, tmp_path / "run", torch.device("cpu"), Cache(enabled=False), progress=False,
                echo=lambda line: None) as runner:
        result = runner.compute(cells[0])
        assert result.status == "ok"
        for row in result.rows:
            row["identity"] = "0123456789abcdef"
        outcome = runner.record(cells[0], result)
    assert outcome.status == "failed" and "the worker computed identity 0123456789abcdef" in outcome.message
    assert read_results([tmp_path / "run"])["status"].tolist() == ["failed"]


def test_a_long_lived_worker_loads_an_edited_plugin_file_again(tmp_path):
    from l2obench.executors import _computer

    path = tmp_path / "edited_plugin.py"
    path.write_text(PLUGIN)
    first = _computer(WorkerConfig(run_id="a", plugin_files=(str(path),), cache_enabled=False))
    assert "zeros" in first.registry.solvers
    path.write_text(PLUGIN.replace('("zeros", Zeros)', '("zeros2", Zeros)'))
    second = _computer(WorkerConfig(run_id="b", plugin_files=(str(path),), cache_enabled=False))
    assert "zeros2" in second.registry.solvers and "zeros" not in second.registry.solvers


# -- threads -----------------------------------------------------------------------
@pytest.mark.parametrize("workers, cores, expected", [(1, 8, 8), (2, 8, 4), (3, 8, 2), (16, 8, 1), (2, 2, 1)])
def test_workers_times_threads_fit_the_cores(workers, cores, expected):
    assert thread_policy.threads_per_worker(workers, cores=cores) == expected
    assert workers * expected <= max(cores, workers)


def test_threads_option_overrides_the_policy():
    assert thread_policy.threads_per_worker(4, threads=3, cores=2) == 3


def test_worker_environment_waits_passively_unless_told_otherwise(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    env = thread_policy.worker_environment(3)
    assert env == {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": "3",
                   "OMP_WAIT_POLICY": "PASSIVE"}
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert thread_policy.worker_environment(3)["OMP_WAIT_POLICY"] == "ACTIVE"


def test_applied_sets_torch_threads_for_the_block_only():
    before = torch.get_num_threads()
    with thread_policy.applied(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before


def test_pool_workers_set_threads_and_passive_wait_before_importing_torch(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    with ProcessPool(WorkerConfig(threads=2), jobs=1) as pool:
        state = pool.call(_pool_worker_state)
    assert state == {"threads": 2, "torch_before_policy": False, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2",
                     "OPENBLAS_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}


def test_serial_run_with_threads_records_them_and_restores_torch_threads(cli, tmp_path):
    before = torch.get_num_threads()
    suite = _suite(tmp_path, [{"solver": "fista", "params": {"max_iter": 5}}])
    code, out, err = cli("run", "--suite", str(suite), "--results", str(tmp_path / "run"), "--no-progress",
                         "--threads", str(before + 1))
    assert code == 0, out + err
    assert json.loads((tmp_path / "run" / "run.json").read_text())["cpu_kernels"]["threads"] == before + 1
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("load, passive", [(0.1, False), (1.2, True)])
def test_serial_run_waits_passively_on_a_busy_machine_and_keeps_torch_threads(cli, tmp_path, monkeypatch,
                                                                              load, passive):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(thread_policy, "busy_cores", lambda sample=0.5: load)
    before = torch.get_num_threads()
    suite = _suite(tmp_path, [{"solver": "fista", "params": {"max_iter": 5}}])
    code, out, err = cli("run", "--suite", str(suite), "--results", str(tmp_path / "run"), "--no-progress")
    assert code == 0, out + err
    assert (os.environ.get("OMP_WAIT_POLICY") == "PASSIVE") == passive and torch.get_num_threads() == before
    assert "worker processes" not in out


def test_busy_cores_sees_a_cpu_bound_process():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert busy_cores(0.5) >= 0.8
    finally:
        spinner.kill()
        spinner.wait()


# -- time limits in threads ----------------------------------------------------------
def _in_thread(function):
    outcome = {}

    def target():
        try:
            outcome["value"] = function()
        except BaseException as exc:  # noqa: BLE001
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    return outcome


def test_thread_time_limit_stops_python_code_off_the_main_thread():
    def loop():
        start = time.monotonic()
        with cell_time_limit(0.3):
            while time.monotonic() - start < 20:
                pass
        return time.monotonic() - start

    outcome = _in_thread(loop)
    assert isinstance(outcome.get("error"), CellTimeout), outcome
    assert "time limit of 0.3 s" in str(outcome["error"])


def test_thread_time_limit_never_fires_after_its_block():
    def quick():
        with thread_time_limit(0.2):
            pass
        time.sleep(0.5)
        start = time.monotonic()
        while time.monotonic() - start < 0.3:
            pass
        return "done"

    assert _in_thread(quick) == {"value": "done"}


def test_main_thread_keeps_the_sigalrm_limit():
    with pytest.raises(CellTimeout, match="time limit of 0.2 s"):
        with cell_time_limit(0.2):
            assert signal.getitimer(signal.ITIMER_REAL)[0] > 0
            while True:
                pass


def test_busy_machine_benchmark_starts_and_plans_its_suite(venv_bin):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).parents[1] / "benchmarks" / "busy_machine.py"
    done = subprocess.run([os.path.join(venv_bin, "python"), str(script), "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--spinning-threads" in done.stdout, done.stderr
    spec = importlib.util.spec_from_file_location("busy_machine", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cells = plan(Registry(), "busy", module.SUITE, scale="small")
    assert [c.solver for c in cells] == ["fista", "lista", "gista"]
