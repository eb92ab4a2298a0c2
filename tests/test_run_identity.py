"""A run never mixes what it computed with something else: cell identity on resume, corrupt
cell files, one writer per results directory, and a time limit per cell."""
import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pandas as pd
import pytest

from l2obench.errors import UsageError
from l2obench.identity import Identities, SuiteSource
from l2obench.lock import LOCK_NAME, RunLock
from l2obench.registry import Registry
from l2obench.results import read_results
from l2obench.resume import reconcile
from l2obench.schema import COLUMNS
from l2obench.suites import plan
from l2obench.timeout import CellTimeout, time_limit
from test_cli import TINY_SUITE

REPO = Path(__file__).resolve().parents[1]

TINY = {**TINY_SUITE, "solvers": [{**TINY_SUITE["solvers"][0], "label": "FISTA"}]}

PLUGIN = textwrap.dedent('''
    import l2obench
    from l2obench.contracts import Solution, Solver

    class Zero(Solver):
        def solve(self, observation, trajectory=False):
            b = observation["b"]
            return Solution(b.new_zeros((b.shape[0], observation["A"].shape[-1])))

    class Forever(Solver):
        def fit(self, context):
            while True:
                pass

    @l2obench.hookimpl
    def l2obench_register_solvers(register):
        register(l2obench.SolverSpec(name="zero", factory=Zero, families=("lasso",)))
        register(l2obench.SolverSpec(name="forever", factory=Forever, families=("lasso",)))
''')


def _write_suite(path, max_iter=10, seeds=(0,), extra=()):
    body = json.loads(json.dumps(TINY))
    body["seeds"] = list(seeds)
    body["solvers"][0]["params"]["max_iter"] = max_iter
    body["solvers"] += [{"solver": name} for name in extra]
    path.write_text(json.dumps(body))
    return path


def _run(cli, suite, results, *args):
    return cli("run", "--suite", str(suite), "--results", str(results), "--no-progress", *args)


def _cells(results):
    return sorted(p.name for p in (results / "cells").glob("*.parquet"))


def _max_iters(results):
    df = read_results([results])
    return sorted({(seed, json.loads(p)["max_iter"]) for seed, p in zip(df["seed"], df["solver_params"])})


def test_resume_recomputes_a_cell_whose_parameters_changed_and_never_mixes_it(cli, tmp_path):
    suite, results = _write_suite(tmp_path / "suite.json", seeds=(0, 1)), tmp_path / "run"
    code, out, err = _run(cli, suite, results)
    assert code == 0, out + err
    old = _cells(results)
    _write_suite(suite, max_iter=20, seeds=(0, 1))
    code, out, err = _run(cli, suite, results, "--resume", "--seeds", "0")
    assert code == 0, out + err
    lines = [line for line in out.splitlines() if line.startswith("superseded: ")]
    assert len(lines) == 2 and all("its solver parameters or training budget changed" in line for line in lines)
    assert sum(line.endswith("it runs again") for line in lines) == 1  # seed 1 is not planned: only set aside
    assert "note: suite" in out and "changed since run" in out
    assert _max_iters(results) == [(0, 20)]  # the leaderboard's input: the new cell alone
    assert sorted(p.name.split(".")[0] + ".parquet" for p in (results / "superseded").iterdir()) == old
    assert json.loads((results / "run.json").read_text())["suite_changes"]


def test_resume_recomputes_a_cell_whose_solver_code_changed(cli, tmp_path):
    plugin = tmp_path / "zero_plugin.py"
    plugin.write_text(PLUGIN)
    suite, results = _write_suite(tmp_path / "suite.json", extra=["zero"]), tmp_path / "run"
    assert _run(cli, suite, results, "--plugin", str(plugin))[0] == 0
    code, out, _ = _run(cli, suite, results, "--plugin", str(plugin), "--resume")
    assert code == 0 and out.count("(on disk, skipped)") == 2 and "superseded" not in out
    plugin.write_text(PLUGIN + "\n# an edit\n")
    code, out, err = _run(cli, suite, results, "--plugin", str(plugin), "--resume")
    assert code == 0, out + err
    assert out.count("(on disk, skipped)") == 1  # FISTA's code did not change
    assert "superseded: " in out and "(tiny x zero x seed 0): the code of its solver changed" in out
    df = read_results([results])
    assert df.groupby("solver")["identity"].nunique().to_dict() == {"FISTA": 1, "zero": 1}
    assert json.loads(df.loc[df["solver"] == "zero", "code_version"].iloc[0]).keys() == {"family", "solver"}


def test_a_suite_file_is_identified_by_content_not_by_the_path_typed(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    suite = _write_suite(tmp_path / "suite.json")
    assert cli("run", "--suite", "suite.json", "--results", "run", "--no-progress")[0] == 0
    code, out, err = _run(cli, suite.resolve(), tmp_path / "run", "--resume")
    assert code == 0 and "(on disk, skipped)" in out, out + err
    copy = tmp_path / "copy.json"
    shutil.copy(suite, copy)  # the same content elsewhere is the same suite
    assert _run(cli, copy, tmp_path / "run", "--resume")[0] == 0
    assert set(read_results([tmp_path / "run"])["suite"]) == {"suite.json"}  # as the run first named it
    other = _write_suite(tmp_path / "other.json", max_iter=30)
    code, _, err = _run(cli, other, tmp_path / "run", "--resume")
    assert code == 2 and "cannot resume" in err


def test_suite_source_matches_runs_recorded_before_origins_by_name_or_path(tmp_path):
    source = SuiteSource.of("x.toml", {"seeds": [0]}, tmp_path / "x.toml")
    assert source.matches({"suite": "x.toml"}) and source.matches({"suite": str(tmp_path / "x.toml")})
    assert not source.matches({"suite": "y.toml"})
    assert source.matches({"suite": "y", "suite_origin": "elsewhere", "suite_content": source.content})
    assert not source.matches({"suite": "x.toml", "suite_origin": "elsewhere", "suite_content": "other"})


def _as_version_2(path):
    """Rewrite a cell file as l2obench wrote it before identities (results schema 2)."""
    table = pq.read_table(path)
    old = [name for name in COLUMNS if name not in ("identity", "code_version")]
    schema = pa.schema([table.schema.field(n) for n in old], metadata={"l2obench.schema_version": "2"})
    pq.write_table(table.select(old).cast(schema), path)


def test_cells_written_before_identities_are_kept_when_their_cell_id_matches(cli, tmp_path):
    suite, results = _write_suite(tmp_path / "suite.json"), tmp_path / "run"
    assert _run(cli, suite, results)[0] == 0
    [name] = _cells(results)
    _as_version_2(results / "cells" / name)
    code, out, _ = _run(cli, suite, results, "--resume")
    assert code == 0 and "(on disk, skipped)" in out and "1 cell file(s) predate cell identities" in out
    assert read_results([results])["identity"].isna().all()
    _write_suite(suite, max_iter=11)
    code, out, _ = _run(cli, suite, results, "--resume")
    assert code == 0 and f"superseded: {results / 'cells' / name}" in out and "parameters" in out
    assert read_results([results])["identity"].notna().all()


@pytest.mark.parametrize("published", ["sparse-small", "l2s-small"])
def test_published_runs_load_and_resume_without_recomputing(cli, tmp_path, published):
    source = REPO / "results" / published
    code, out, _ = cli("leaderboard", str(source), "--format", "markdown")
    assert code == 0 and "| solver" in out
    registry = Registry()
    suite = published.split("-")[0]
    cells = plan(registry, suite, registry.suites[suite].spec.definition, scale="small", seeds=[0, 1, 2])
    copy = tmp_path / published
    shutil.copytree(source, copy)
    identities = Identities(registry)
    recorded = read_results([source]).groupby("cell_id")["identity"].first()
    # Kept: a file written before identities whose cell_id (settings, seed, parameters, budget) is still
    # planned, and a file whose identity is the planned cell's with today's code; the others are set aside.
    legacy = {c.cell_id for c in cells if c.cell_id in recorded.index and pd.isna(recorded[c.cell_id])}
    current = {c.cell_id for c in cells if c.cell_id in recorded.index
               and recorded[c.cell_id] == identities.identity(c)}
    assert len(legacy | current) > len(cells) / 2
    lines = []
    on_disk = reconcile(copy, cells, identities, lines.append)
    assert set(on_disk) == legacy | current
    if legacy:
        assert f"note: {len(legacy)} cell file(s) predate cell identities" in lines[-1]
    superseded = list((copy / "superseded").glob("*.parquet"))
    assert len(superseded) == len(recorded) - len(legacy | current)
    assert all("changed" in line for line in lines if line.startswith("superseded"))


def test_a_corrupt_cell_file_under_resume_is_named_set_aside_and_recomputed(cli, tmp_path):
    suite, results = _write_suite(tmp_path / "suite.json"), tmp_path / "run"
    assert _run(cli, suite, results)[0] == 0
    [name] = _cells(results)
    path = results / "cells" / name
    path.write_bytes(path.read_bytes()[:200])  # truncated
    code, out, err = _run(cli, suite, results, "--resume")
    assert code == 0 and "Traceback" not in out + err, out + err
    assert f"corrupt cell file {path}: not a readable Parquet file" in out and "its cell runs again" in out
    assert [p.name.split(".")[0] for p in (results / "corrupt").iterdir()] == [path.stem]
    assert _cells(results) == [name] and len(read_results([results]))
    assert (results / "corrupt").is_dir() and read_results([results])["status"].eq("ok").all()


def test_a_second_writer_gets_exit_2_while_a_run_holds_the_directory(cli, tmp_path):
    suite, results = _write_suite(tmp_path / "suite.json"), tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from l2obench.lock import RunLock; lock = RunLock(sys.argv[1]); "
                               "print('held', flush=True); sys.stdin.read()", str(results)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, out, err = _run(cli, suite, results)
        assert code == 2 and "Traceback" not in err, out + err
        assert f"{results} is in use by another l2obench run (pid {holder.pid} on " in err
        assert not (results / "run.json").exists()
    finally:
        holder.communicate("")
    assert _run(cli, suite, results)[0] == 0  # released when its holder ended
    assert not (results / LOCK_NAME).exists()


def test_the_lock_excludes_a_second_runner_of_the_same_process_until_released(tmp_path):
    with RunLock(tmp_path / "run") as lock:
        assert lock.held and (tmp_path / "run" / LOCK_NAME).exists()
        with pytest.raises(UsageError, match="in use by another l2obench run"):
            RunLock(tmp_path / "run")
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    RunLock(tmp_path / "run").release()


def test_an_unwritable_results_directory_is_a_one_line_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="cannot write to results directory"):
        RunLock(tmp_path / "file" / "run")


def test_a_cell_past_its_time_limit_is_recorded_as_timeout_and_the_run_goes_on(cli, tmp_path):
    plugin = tmp_path / "forever_plugin.py"
    plugin.write_text(PLUGIN)
    body = json.loads(json.dumps(TINY))
    body["solvers"] = [{"solver": "forever"}] + body["solvers"]
    suite, results = tmp_path / "suite.json", tmp_path / "run"
    suite.write_text(json.dumps(body))
    handler = signal.getsignal(signal.SIGALRM)
    start = time.perf_counter()
    code, out, err = _run(cli, suite, results, "--plugin", str(plugin), "--cell-timeout", "1")
    assert code == 1, out + err
    assert time.perf_counter() - start < 60 and signal.getsignal(signal.SIGALRM) is handler
    assert "1 ok, 0 diverged, 0 failed, 1 timed out" in out and "1 s per cell" in out
    df = read_results([results])
    assert df.groupby("solver")["status"].first().to_dict() == {"forever": "timeout", "FISTA": "ok"}
    message = df.loc[df["solver"] == "forever", "message"].item()
    assert "time limit of 1 s" in message and "time limit of 1 s (--cell-timeout) (traceback: " in err
    assert "while True" in next((results / "logs").iterdir()).read_text()  # where it hung
    code, out, _ = _run(cli, suite, results, "--plugin", str(plugin), "--cell-timeout", "1", "--resume")
    assert code == 1 and out.count("(on disk, skipped)") == 1  # a timed-out cell runs again


def test_default_cell_timeout_follows_the_scale(cli, tmp_path):
    from l2obench.cli import _cell_timeout

    assert [_cell_timeout(None, s) for s in ("smoke", "small", "paper")] == [600, 3600, None]
    assert _cell_timeout(0, "smoke") is None and _cell_timeout(5, "paper") == 5
    code, out, _ = cli("run", "--help")
    assert code == 0 and "--cell-timeout SECONDS" in out and "3600 at small" in out


def test_time_limit_restores_the_previous_handler_and_timer():
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *a: fired.append(True))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.6)
        with pytest.raises(CellTimeout):
            with time_limit(0.2):
                while True:
                    pass
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 0 < remaining < 0.45 and not fired
        time.sleep(0.6)
        assert fired
        with time_limit(5):
            pass
        assert signal.getitimer(signal.ITIMER_REAL)[0] == 0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_time_limit_off_the_main_thread_warns_that_it_is_not_applied():
    import threading

    caught = []

    def body():
        with pytest.warns(RuntimeWarning, match="no time limit of 1 s applied") as record:
            with time_limit(1):
                pass
        caught.extend(record)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert caught
