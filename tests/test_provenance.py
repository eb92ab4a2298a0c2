"""Which plugin produced a row, and fitted models that follow their plugin's code: an edited
plugin file or a bumped ``SolverSpec.version`` fits again, never serves the old model."""
import json
import subprocess
import textwrap

import torch

import l2obench
from l2obench.cache import Cache
from l2obench.contracts import Solution
from l2obench.hashing import file_digest
from l2obench.identity import Identities
from l2obench.results import read_results
from l2obench.runner import Runner, _git_commit
from l2obench.suites import plan
from l2obench.testing import registered
from l2obench.tuning import ClassicalSolver
from test_cli import TINY_SUITE

PLUGIN = textwrap.dedent('''
    import l2obench
    from l2obench.contracts import Solution
    from l2obench.tuning import ClassicalSolver

    class Shrunk(ClassicalSolver):
        """Least squares times a tuned factor."""
        def __init__(self, factor=1.0):
            super().__init__(factor=factor)
        def solve(self, observation, trajectory=False):
            b, A = observation["b"], observation["A"]
            return Solution(FACTOR_EXPRESSION)

    @l2obench.hookimpl
    def l2obench_register_solvers(register):
        register(l2obench.SolverSpec(name="shrunk", factory=Shrunk, families=("lasso",),
                                     params={"factor": l2obench.Param(1.0, grid=[0.5, 1.0])}))
''')


def _suite(tmp_path):
    body = json.loads(json.dumps(TINY_SUITE))
    body["solvers"] = [{"solver": "shrunk"}]
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(body))
    return path


def _run(cli, suite, plugin, results):
    code, out, err = cli("run", "--suite", str(suite), "--plugin", str(plugin), "--results", str(results),
                         "--no-progress")
    assert code == 0, out + err
    line = next(line for line in out.splitlines() if "shrunk" in line and ": ok" in line)
    return line


def test_editing_a_plugin_file_fits_its_solver_again_and_rows_record_the_file(cli, tmp_path):
    plugin, suite = tmp_path / "my_plugin.py", _suite(tmp_path)
    plugin.write_text(PLUGIN.replace("FACTOR_EXPRESSION", "self.factor * (b @ A.pinverse().T)"))
    assert "(cached)" not in _run(cli, suite, plugin, tmp_path / "a")
    assert "(cached)" in _run(cli, suite, plugin, tmp_path / "b")  # unchanged: the fitted state is reused
    df = read_results([tmp_path / "b"])
    recorded = {json.loads(p)["solver"] for p in df["plugin"]} | {json.loads(p)["family"] for p in df["plugin"]}
    assert recorded == {f"file {plugin.resolve()} sha256:{file_digest(plugin)}", "built-in"}

    plugin.write_text(PLUGIN.replace("FACTOR_EXPRESSION", "self.factor * 0.5 * (b @ A.pinverse().T)"))
    assert "(cached)" not in _run(cli, suite, plugin, tmp_path / "c")
    edited = read_results([tmp_path / "c"])
    assert edited["identity"].iloc[0] != df["identity"].iloc[0]
    assert {json.loads(p)["solver"] for p in edited["plugin"]} == {
        f"file {plugin.resolve()} sha256:{file_digest(plugin)}"}


class Scaled(ClassicalSolver):
    def __init__(self, factor=1.0):
        super().__init__(factor=factor)

    def solve(self, observation, trajectory=False):
        b, A = observation["b"], observation["A"]
        return Solution(self.factor * (b @ A.pinverse().T))


def _plugin(version):
    class Plugin:
        @l2obench.hookimpl
        def l2obench_register_solvers(self, register):
            register(l2obench.SolverSpec(name="scaled", factory=Scaled, families=("lasso",), version=version,
                                         params={"factor": l2obench.Param(1.0, grid=[0.5, 1.0])}))
    return Plugin()


def test_bumping_a_solver_version_changes_its_identity_and_fits_it_again(tmp_path):
    body = {**TINY_SUITE, "solvers": [{"solver": "scaled"}]}
    cache = Cache(tmp_path / "cache")
    seen = {}
    for run, version in enumerate((None, None, 2)):
        with registered(_plugin(version)) as registry:
            cells = plan(registry, "tiny", body, scale="small")
            code = Identities(registry).code_version(cells[0])
            lines = []
            with Runner(registry, cells, tmp_path / f"run{run}", torch.device("cpu"), cache, progress=False,
                        echo=lines.append) as runner:
                runner.run()
            seen[run] = code, Identities(registry).identity(cells[0]), "(cached)" in lines[0]
            plugin = json.loads(read_results([runner.cells_dir])["plugin"].iloc[0])
            assert plugin == {"family": "built-in", "solver": "test"}
    assert seen[0][:2] == seen[1][:2] and "solver_version" not in seen[0][0]
    assert seen[2][0]["solver_version"] == "2" and seen[2][1] != seen[0][1]
    assert [cached for *_, cached in seen.values()] == [False, True, False]


def test_the_git_stamp_is_dirty_for_changed_code_not_for_rewritten_results(tmp_path, monkeypatch):
    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                              check=True, capture_output=True, text=True).stdout.strip()

    (tmp_path / "l2obench").mkdir()
    (tmp_path / "l2obench" / "__init__.py").write_text("")
    (tmp_path / "results" / "run").mkdir(parents=True)
    (tmp_path / "results" / "run" / "cell.parquet").write_text("old")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-q", "-m", "x")
    monkeypatch.setattr(l2obench, "__file__", str(tmp_path / "l2obench" / "__init__.py"))
    head = git("rev-parse", "--short=12", "HEAD")
    assert _git_commit() == head
    (tmp_path / "results" / "run" / "cell.parquet").write_text("new")  # a publishing run rewrote it
    (tmp_path / "results" / "run" / "other.parquet").write_text("")
    assert _git_commit() == head
    (tmp_path / "l2obench" / "__init__.py").write_text("changed = True")
    assert _git_commit() == head + "-dirty"
