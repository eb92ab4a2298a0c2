"""The command line end to end: smoke suite, leaderboards, bad input, faults, resume."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from l2obench.registry import Registry
from l2obench.results import read_results
from l2obench.suites import plan
from l2obench_problems.suites import SMOKE

SMOKE_CELLS = len(plan(Registry(), "smoke", SMOKE, scale="smoke"))  # one seed

TINY_SUITE = {
    "seeds": [0],
    "problems": [{"family": "lasso", "label": "tiny",
                  "settings": {"m": 10, "n": 20, "n_train": 32, "n_val": 24, "n_test": 24}}],
    "solvers": [{"solver": "fista", "label": "FISTA (T=10)", "params": {"max_iter": 10, "tol": 0.0, "lam": 0.05}}],
}

FAULTY_PLUGIN = textwrap.dedent('''
    import os, signal
    import l2obench
    from l2obench.contracts import Solution, Solver

    class Exploding(Solver):
        def solve(self, observation, trajectory=False):
            raise RuntimeError("solver exploded")

    class NaNs(Solver):
        def solve(self, observation, trajectory=False):
            b = observation["b"]
            return Solution(b.new_full((b.shape[0], observation["A"].shape[-1]), float("nan")))

    class Interrupting(Solver):
        """Sends itself Ctrl-C during fit, once (a marker file remembers)."""
        def fit(self, context):
            marker = os.environ["L2OBENCH_TEST_MARKER"]
            if not os.path.exists(marker):
                open(marker, "w").close()
                os.kill(os.getpid(), signal.SIGINT)
            return self
        def solve(self, observation, trajectory=False):
            b = observation["b"]
            return Solution(b.new_zeros((b.shape[0], observation["A"].shape[-1])))

    class Misshapen(Solver):
        """The least-squares solution shaped (N, 1, n): it would broadcast against x* (N, n)."""
        def solve(self, observation, trajectory=False):
            b, A = observation["b"], observation["A"]
            return Solution((b @ A.pinverse().T).unsqueeze(1))

    class Quitting(Solver):
        def fit(self, context):
            raise SystemExit(0)

    @l2obench.hookimpl
    def l2obench_register_solvers(register):
        for name, cls in (("exploding", Exploding), ("nans", NaNs), ("interrupting", Interrupting),
                          ("misshapen", Misshapen), ("quitting", Quitting)):
            register(l2obench.SolverSpec(name=name, factory=cls, families=("lasso",)))
''')


@pytest.fixture
def faulty(tmp_path):
    plugin = tmp_path / "faulty_plugin.py"
    plugin.write_text(FAULTY_PLUGIN)
    return plugin


def _suite(tmp_path, extra_solvers=()):
    body = json.loads(json.dumps(TINY_SUITE))
    body["solvers"] += [{"solver": s} for s in extra_solvers]
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(body))
    return path


def test_out_of_distribution_split_is_reported_with_its_own_gap(cli, tmp_path):
    body = json.loads(json.dumps(TINY_SUITE))
    body["problems"][0]["settings"]["ood"] = {"snr": [10], "p": 0.2}
    path = tmp_path / "ood.json"
    path.write_text(json.dumps(body))
    results = tmp_path / "run"
    code, out, err = cli("run", "--suite", str(path), "--results", str(results), "--no-progress")
    assert code == 0, out + err
    df = read_results([results])
    final = df[df["iteration"].isna() & (df["subset"] == "all")].set_index(["split", "metric"])["value"]
    assert final[("ood", "nmse_db")] > final[("test", "nmse_db")]  # noisier and denser: harder
    assert ("ood", "generalization_gap_nmse") in final.index
    assert set(df.loc[(df["split"] == "ood") & (df["metric"] == "nmse_db"), "subset"]) == {"all"}  # one SNR level
    code, out, _ = cli("leaderboard", str(results))
    assert code == 0 and "nmse_db [ood]" in out and "gap [ood]" in out


def test_bad_setting_value_is_reported_before_compute(cli, tmp_path):
    body = json.loads(json.dumps(TINY_SUITE))
    body["problems"][0]["settings"]["ood"] = {"sparsity": 0.2}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(body))
    code, _, err = cli("run", "--suite", str(path), "--results", str(tmp_path / "run"), "--no-progress")
    assert code == 2 and "problems[0].settings" in err and "sparsity" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("entry, where", [
    ({"params": {"max_iter": "twenty"}}, "solvers[2].params.max_iter: must be an int >= 1, got 'twenty'"),
    ({"params": {"stop_rule": "nope"}}, "solvers[2].params.stop_rule: must be one of threshold, sample, never"),
    ({"budget": {"steps": -1}}, "solvers[2].budget.steps: must be an int >= 1, got -1"),
])
def test_bad_solver_parameter_or_budget_exits_2_naming_file_entry_and_key(cli, tmp_path, entry, where):
    body = json.loads(json.dumps(TINY_SUITE))
    solver = "lista_stop" if "stop_rule" in entry.get("params", {}) else "fista"
    body["solvers"] += [{"solver": "ista"}, {"solver": solver, **entry}]
    path = tmp_path / "my.json"
    path.write_text(json.dumps(body))
    code, out, err = cli("run", "--suite", str(path), "--results", str(tmp_path / "run"), "--no-progress")
    assert code == 2, out + err
    assert f"l2obench: error: {path}.{where}" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_smoke_suite_end_to_end(cli, tmp_path):
    results = tmp_path / "run"
    code, out, err = cli("run", "--suite", "smoke", "--scale", "smoke", "--results", str(results), "--no-progress")
    assert code == 0, out + err
    assert f"{SMOKE_CELLS} ok, 0 diverged, 0 failed" in out
    df = read_results([results])
    assert set(df["status"]) == {"ok"} and df["run_id"].nunique() == 1
    lasso = df[df["problem"] == "cs-tiny"]
    final = lasso[(lasso["metric"] == "nmse_db") & (lasso["split"] == "test") & lasso["iteration"].isna()]
    nmse = final[final["subset"] == "all"].set_index("solver")["value"]
    assert set(final["subset"]) == {"all", "snr=20", "snr=30", "snr=40"}
    assert nmse["LISTA (T=20)"] < nmse["ISTA (T=20)"] - 1.0  # learned beats classical at equal iterations
    for learned in ("ALISTA (T=16)", "LISTA-CPSS (T=16)"):
        assert nmse[learned] < nmse["FISTA (T=20)"]
    stop = df[(df["solver"] == "LISTA-stop (T<=20)") & (df["metric"] == "stop_probability")]
    assert len(stop) == 20 and abs(stop["value"].sum() - 1) < 1e-6  # q_phi(t) averaged over the test split
    saved = df[(df["solver"] == "LISTA-stop (T<=20)") & (df["metric"] == "wall_clock_saved_fraction")]
    assert len(saved) == 1
    assert nmse["FISTA (T=100)"] <= nmse["FISTA (T=20)"] + 0.5
    traj = lasso[(lasso["metric"] == "nmse_db") & (lasso["subset"] == "all") & lasso["iteration"].notna()]
    assert sorted(traj.loc[traj["solver"] == "ISTA (T=20)", "iteration"]) == list(range(1, 21))
    last = traj[(traj["solver"] == "LISTA (T=20)") & (traj["iteration"] == 20)]["value"].item()
    assert last == pytest.approx(nmse["LISTA (T=20)"], abs=1e-4)
    for metric in ("fit_seconds", "solve_seconds_per_instance", "generalization_gap_", "latency_seconds"):
        rows = df[df["metric"].str.startswith(metric)]  # the gap in each family's gap metric
        assert len(rows[["problem", "solver"]].drop_duplicates()) == SMOKE_CELLS, metric
    # The regression and precision families report their own metrics for every solver they ran.
    test = df[(df["split"] == "test") & df["iteration"].isna() & (df["subset"] == "all")]
    for problem, metric in (("slr-tiny", "support_f1"), ("spe-tiny", "success"), ("spe-tiny", "fdr")):
        ran = df.loc[df["problem"] == problem, "solver"].nunique()
        assert test.loc[(test["problem"] == problem) & (test["metric"] == metric), "solver"].nunique() == ran > 3
    assert df["data_hash"].notna().all() and df["device"].str.startswith("cpu").all()
    assert (results / "leaderboard.md").read_text().count("**") >= 2

    for fmt, marker in (("markdown", "| solver"), ("latex", "\\textbf"), ("csv", "nmse_db mean"), ("terminal", " *")):
        code, out, _ = cli("leaderboard", str(results), "--format", fmt)
        assert code == 0 and marker in out, (fmt, out)

    code, _, err = cli("run", "--suite", "smoke", "--scale", "smoke", "--results", str(results), "--no-progress")
    assert code == 2 and "--resume" in err
    code, out, _ = cli("run", "--suite", "smoke", "--scale", "smoke", "--results", str(results), "--resume",
                       "--no-progress")
    assert code == 0 and out.count("(on disk, skipped)") == SMOKE_CELLS and f"({SMOKE_CELLS} already on disk)" in out


@pytest.mark.parametrize("args, message", [
    (["run", "--suite", "nope"], "unknown suite 'nope'; valid suites: denoising, energy-denoising, l2s, quadratic, smoke, sparse"),
    (["run", "--suite", "smoke", "--solvers", "fista,nope"], "unknown solver 'nope' in --solvers"),
    (["run", "--suite", "smoke", "--problems", "nope"], "unknown problem in this suite 'nope'"),
    (["run", "--suite", "smoke", "--seeds", "0,x"], "--seeds takes integers"),
    (["run", "--suite", "smoke", "--device", "cuda:0"], "no CUDA device"),
    (["run", "--suite", "smoke", "--device", "tpu"], "unknown device 'tpu'"),
    (["run", "--suite", "missing.toml"], "suite file not found: missing.toml"),
    (["run", "--suite", "smoke", "--plugin", "nowhere.py"], "plugin file not found"),
    (["run", "--suite", "smoke", "--scale", "huge"], "Invalid value for '--scale'"),
    (["leaderboard", "no/such/dir"], "no results at no/such/dir"),
])
def test_bad_input_exits_2_with_a_clear_message(cli, tmp_path, monkeypatch, args, message):
    import torch

    monkeypatch.chdir(tmp_path)
    if "cuda:0" in args and torch.cuda.is_available():
        pytest.skip("a GPU is present")  # the error case does not exist on GPU machines
    code, out, err = cli(*args)
    assert code == 2, out + err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "l2obench-results").exists()  # nothing ran


def test_malformed_suite_file_exits_2_naming_file_and_key(cli, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"problems": [{"family": "lasso", "sttings": {}}], "solvers": []}))
    code, _, err = cli("run", "--suite", str(path))
    assert code == 2 and str(path) in err and "'sttings'" in err


def test_failed_and_diverged_cells_are_recorded_and_the_run_goes_on(cli, tmp_path, faulty):
    suite = _suite(tmp_path, ["exploding", "nans"])
    results = tmp_path / "run"
    code, out, err = cli("run", "--suite", str(suite), "--plugin", str(faulty), "--results", str(results),
                         "--no-progress")
    assert code == 1, out + err
    assert "1 ok, 1 diverged, 1 failed" in out and "solver exploded" in err
    df = read_results([results])
    status = df.groupby("solver")["status"].first().to_dict()
    assert status == {"FISTA (T=10)": "ok", "exploding": "failed", "nans": "diverged"}
    failed = df[df["solver"] == "exploding"]
    assert "RuntimeError: solver exploded" in failed["message"].item()
    assert "non-finite" in df.loc[df["solver"] == "nans", "message"].item()
    code, out, _ = cli("leaderboard", str(results))
    assert code == 0 and "failed" in out and "diverged" in out


def test_interrupted_run_resumes_without_recomputing(tmp_path, faulty):
    suite = _suite(tmp_path, ["interrupting"])
    results = tmp_path / "run"
    env = {**os.environ, "L2OBENCH_TEST_MARKER": str(tmp_path / "marker")}
    cmd = [sys.executable, "-m", "l2obench.cli", "run", "--suite", str(suite), "--plugin", str(faulty),
           "--results", str(results), "--no-progress"]
    # A shell that starts this test in the background ignores SIGINT, and Python keeps an
    # inherited "ignore": restore the default so that the child gets KeyboardInterrupt.
    first = subprocess.run(cmd, capture_output=True, text=True, env=env,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert first.returncode == 130, first.stdout + first.stderr
    assert "--resume" in first.stderr and "Traceback" not in first.stderr
    done = list((results / "cells").glob("*.parquet"))
    assert len(done) == 1  # the FISTA cell finished before Ctrl-C
    mtime = done[0].stat().st_mtime_ns
    second = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "(on disk, skipped)" in second.stdout and "2 ok" in second.stdout
    assert done[0].stat().st_mtime_ns == mtime and len(list((results / "cells").glob("*.parquet"))) == 2


def test_misshapen_estimate_and_system_exit_are_failed_cells_and_the_run_goes_on(cli, tmp_path, faulty):
    suite = _suite(tmp_path, ["misshapen", "quitting", "nans"])
    results = tmp_path / "run"
    code, out, err = cli("run", "--suite", str(suite), "--plugin", str(faulty), "--results", str(results),
                         "--no-progress")
    assert code == 1, out + err
    assert "1 ok, 1 diverged, 2 failed" in out and "cells not ok:" in err and "Traceback" not in out + err
    df = read_results([results])
    status = df.groupby("solver")["status"].first().to_dict()
    assert status == {"FISTA (T=10)": "ok", "misshapen": "failed", "quitting": "failed", "nans": "diverged"}
    message = df.loc[df["solver"] == "misshapen", "message"].item()
    assert "estimate of shape (24, 1, 20)" in message and "one value per instance (24,)" in message
    assert "SystemExit" in df.loc[df["solver"] == "quitting", "message"].item()


def test_undefined_metric_is_null_and_shown_as_undefined_never_best(cli, tmp_path):
    body = json.loads(json.dumps(TINY_SUITE))
    body["problems"][0]["settings"]["p"] = 1e-9  # every x* is zero: NMSE is 0/0
    path = tmp_path / "zero.json"
    path.write_text(json.dumps(body))
    results = tmp_path / "run"
    code, out, err = cli("run", "--suite", str(path), "--results", str(results), "--no-progress")
    assert code == 0, out + err
    df = read_results([results])
    nmse = df[(df["metric"].isin(["nmse", "nmse_db"])) & df["iteration"].isna()]
    assert len(nmse) and nmse["value"].isna().all() and nmse["message"].str.contains("undefined").all()
    code, out, _ = cli("leaderboard", str(results))
    assert code == 0 and "undefined" in out and "inf" not in out and "*" not in out.split("mean ±")[0]


def test_a_suite_runs_at_its_default_scale_unless_scale_is_given(cli, tmp_path):
    body = json.loads(json.dumps(TINY_SUITE))
    body["default_scale"] = "smoke"
    body["problems"][0]["scales"] = {"smoke": {"m": 8}}
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(body))
    for args, scale, m in (([], "smoke", 8), (["--scale", "small"], "small", 10)):
        results = tmp_path / f"run-{scale}"
        code, out, err = cli("run", "--suite", str(path), *args, "--results", str(results), "--no-progress")
        assert code == 0 and f"scale {scale}," in out, out + err
        df = read_results([results])
        assert set(df["scale"]) == {scale} and {json.loads(s)["m"] for s in df["setting"]} == {m}


def test_the_builtin_smoke_suite_defaults_to_the_smoke_scale():
    from l2obench.suites import default_scale

    registry = Registry()
    assert default_scale("smoke", registry.suites["smoke"].spec.definition) == "smoke"
    assert default_scale("sparse", registry.suites["sparse"].spec.definition) == "small"
