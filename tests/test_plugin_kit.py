"""The plugin author's kit: plugin solvers on built-in suites, ``suite show``, ``l2obench.testing``."""
import dataclasses
import textwrap
import types

import pytest

import l2obench
from l2obench.contracts import Solution
from l2obench.identity import Identities
from l2obench.registry import Registry
from l2obench.results import read_results
from l2obench.suite_toml import suite_toml
from l2obench.suites import SCALES, load_suite_file, plan
from l2obench.testing import check_solver, registered, tiny_settings
from l2obench.tuning import ClassicalSolver

REGISTRY = Registry()
SMALL_LASSO = {"m": 10, "n": 20, "n_train": 32, "n_val": 16, "n_test": 8}


# -- plugin solvers on a built-in suite ----------------------------------------------------------

PLUGIN = textwrap.dedent('''
    import l2obench
    from l2obench.contracts import Solution, Solver
    from l2obench.ops import rmatvec

    class BackProjection(Solver):
        """A^T b, scaled."""
        def solve(self, observation, trajectory=False):
            return Solution(rmatvec(observation["A"], observation["b"]) * self.scale)

    @l2obench.hookimpl
    def l2obench_register_solvers(register):
        register(l2obench.SolverSpec(
            name="back_projection", factory=BackProjection, families=("lasso", "slr"), learned=False,
            params={"scale": l2obench.Param(1.0, grid=(0.5, 1.0), type=float, gt=0)}))
''')


@pytest.fixture
def plugin_file(tmp_path):
    path = tmp_path / "back_projection.py"
    path.write_text(PLUGIN)
    return path


def test_solvers_runs_a_plugin_solver_on_every_supported_problem_of_a_builtin_suite(cli, tmp_path, plugin_file):
    results = tmp_path / "run"
    code, out, err = cli("run", "--suite", "smoke", "--scale", "smoke", "--plugin", str(plugin_file),
                         "--solvers", "back_projection,FISTA (T=20)", "--results", str(results), "--no-progress")
    assert code == 0, out + err
    rows = read_results([results])
    pairs = set(zip(rows["problem"], rows["solver"]))
    # back_projection supports lasso and slr: cs-tiny and slr-tiny; the suite's FISTA (T=20) runs on lasso only
    assert pairs == {("cs-tiny", "back_projection"), ("slr-tiny", "back_projection"), ("cs-tiny", "FISTA (T=20)")}
    tuned = rows[(rows["solver"] == "back_projection")]["solver_params"].unique()
    assert all('"scale"' in params for params in tuned)  # tuned on validation, as an entry without params
    assert set(rows["status"]) == {"ok"}


@pytest.mark.parametrize("args, message", [
    (["--solvers", "nope"], "unknown solver 'nope' in --solvers: neither a solver (or label) of suite l2s"),
    (["--solvers", "glad"], "solver 'glad' supports spe; suite l2s has no problem of those families at scale smoke"),
])
def test_solvers_names_neither_in_the_suite_nor_usable_exit_2(cli, tmp_path, args, message):
    code, out, err = cli("run", "--suite", "l2s", "--scale", "smoke", "--results", str(tmp_path / "r"), *args)
    assert code == 2 and message in err and "Traceback" not in err, out + err
    assert not (tmp_path / "r").exists()


def test_plugin_solver_added_to_a_suite_plans_like_an_entry_without_params(plugin_file):
    from l2obench.suites import with_solvers

    registry = Registry(plugin_files=[plugin_file])
    definition = registry.suite("smoke").definition
    added = with_solvers(registry, "smoke", definition, ["back_projection"], "smoke")
    assert added["solvers"][-1] == {"solver": "back_projection"} and definition["solvers"][-1] != added["solvers"][-1]
    assert with_solvers(registry, "smoke", definition, ["fista", "FISTA (T=20)"], "smoke") is definition
    cells = plan(registry, "smoke", added, scale="smoke", solvers=["back_projection"])
    assert [(c.problem_label, c.fixed_params, c.params) for c in cells] == [
        ("cs-tiny", (), {"scale": 1.0}), ("slr-tiny", (), {"scale": 1.0})]


# -- suite show ----------------------------------------------------------------------------------

def _cells(registry, name, path_or_definition, scale):
    cells = plan(registry, name, path_or_definition, scale=scale)
    return [dataclasses.replace(cell, suite="-") for cell in cells]


@pytest.mark.parametrize("suite", sorted(REGISTRY.suites))
def test_suite_show_round_trips_at_every_scale(tmp_path, suite):
    definition = REGISTRY.suite(suite).definition
    whole = tmp_path / "whole.toml"
    whole.write_text(suite_toml(suite, definition))
    for scale in SCALES:
        builtin = _cells(REGISTRY, suite, definition, scale)
        assert _cells(REGISTRY, str(whole), load_suite_file(whole), scale) == builtin, scale
        one = tmp_path / f"{scale}.toml"
        one.write_text(suite_toml(suite, definition, scale))
        resolved = load_suite_file(one)
        assert resolved["default_scale"] == scale and "scales" not in str(resolved)
        assert _cells(REGISTRY, str(one), resolved, scale) == builtin, scale


def test_suite_show_prints_a_file_that_runs_with_the_builtin_identities(cli, tmp_path):
    code, out, err = cli("suite", "show", "smoke", "--scale", "smoke")
    assert code == 0 and out.startswith("# The suite smoke at scale smoke") and "[[solvers]]" in out, err
    path = tmp_path / "my_suite.toml"
    path.write_text(out)
    mine = plan(REGISTRY, str(path), load_suite_file(path), scale="smoke")
    builtin = plan(REGISTRY, "smoke", REGISTRY.suite("smoke").definition, scale="smoke")
    identities = Identities(REGISTRY)
    assert [identities.identity(c) for c in mine] == [identities.identity(c) for c in builtin]
    assert [c.cell_id for c in mine] == [c.cell_id for c in builtin]
    results = tmp_path / "run"
    code, out, err = cli("run", "--suite", str(path), "--solvers", "FISTA (T=20)", "--problems", "cs-tiny",
                         "--results", str(results), "--no-progress")
    assert code == 0 and "scale smoke, 1 cells" in out, out + err
    rows = read_results([results])
    assert set(rows["identity"]) == {identities.identity(c) for c in builtin
                                     if (c.problem_label, c.solver_label) == ("cs-tiny", "FISTA (T=20)")}


def test_suite_show_refuses_what_toml_cannot_hold_and_unknown_suites(cli):
    from l2obench.errors import UsageError

    with pytest.raises(UsageError, match=r"my\.problems\[0\]\.settings\.snr\[0\] is null"):
        suite_toml("my", {"problems": [{"family": "lasso", "settings": {"snr": [None]}}], "solvers": []})
    code, _, err = cli("suite", "show", "nope")
    assert code == 2 and "unknown suite 'nope'; valid suites:" in err


# -- l2obench.testing ----------------------------------------------------------------------------

def test_tiny_settings_are_the_smoke_suites_problems():
    smoke = {c.family: dict(c.settings) for c in reversed(plan(REGISTRY, "smoke", REGISTRY.suite("smoke").definition,
                                                                 scale="smoke"))}
    for family in REGISTRY.problems:
        assert tiny_settings(REGISTRY, family) == smoke[family]
    assert tiny_settings(REGISTRY, "lasso")["n_train"] <= 1000


class _Ista(ClassicalSolver):
    """A correct ISTA for the ``lasso`` family, the base of the broken solvers below."""

    def solve(self, observation, trajectory=False):
        import torch

        from l2obench.ops import lipschitz, matvec, per_instance, rmatvec, soft_threshold

        A, b = observation["A"], observation["b"]
        x, path = b.new_zeros(b.shape[0], A.shape[-1]), []
        step = per_instance(1.0 / lipschitz(A), x)
        for _ in range(self.n_iter):
            x = soft_threshold(x - step * rmatvec(A, matvec(A, x) - b), step * self.lam)
            path.append(x)
        return Solution(x, path if trajectory else None, torch.full((b.shape[0],), self.n_iter))


class _ReadsTarget(_Ista):
    def solve(self, observation, trajectory=False):
        return Solution(observation["x"].clone())


class _Float64(_Ista):
    def solve(self, observation, trajectory=False):
        return Solution(super().solve(observation).estimate.double())


class _Random(_Ista):
    def solve(self, observation, trajectory=False):
        return Solution(super().solve(observation).estimate + self.noise_)

    def fit(self, context):
        import torch

        self.noise_ = 1e-3 * torch.rand(())  # torch's global generator: not reproducible under the seed
        return self


class _BatchCoupled(_Ista):
    def solve(self, observation, trajectory=False):
        x = super().solve(observation).estimate
        return Solution(x - x.mean(0) * 0.1)  # each row depends on the others


class _InPlace(_Ista):
    def solve(self, observation, trajectory=False):
        observation["b"].mul_(1.0)
        observation["b"][0, 0] += 1.0
        return super().solve(observation)


class _LostState(_Ista):
    def fit(self, context):
        self.lam_fitted_ = 0.5
        return self

    def solve(self, observation, trajectory=False):
        self.set_params(lam=getattr(self, "lam_fitted_", 0.0))
        return super().solve(observation, trajectory)


class _FloatIterations(_Ista):
    def solve(self, observation, trajectory=False):
        solution = super().solve(observation, trajectory)
        solution.iterations = solution.iterations.float()
        return solution


def _plugin(cls, families=("lasso",)):
    def l2obench_register_solvers(register):
        register(l2obench.SolverSpec(
            name="candidate", factory=cls, families=families,
            params={"lam": l2obench.Param(0.05, type=float, ge=0), "n_iter": l2obench.Param(30, type=int, ge=1)}))

    return types.SimpleNamespace(l2obench_register_solvers=l2obench.hookimpl(l2obench_register_solvers))


def test_check_solver_passes_a_correct_solver_on_every_family_it_claims():
    with registered(_plugin(_Ista, ("lasso", "slr"))) as registry:
        solutions = check_solver(registry, "candidate")
        assert set(solutions) == {"lasso", "slr"}
        assert solutions["lasso"].estimate.shape == (tiny_settings(registry, "lasso")["n_test"], 40)
        one = check_solver(registry, "candidate", "lasso", SMALL_LASSO)
        assert isinstance(one, Solution) and one.estimate.shape == (8, 20)


@pytest.mark.parametrize("cls, message", [
    (_ReadsTarget, "solve read observation['x'], the target"),
    (_Float64, "the estimate is torch.float64, the target 'x' torch.float32"),
    (_Random, "not deterministic: two fits under seed 0 solve differently"),
    (_BatchCoupled, "instance 0 solved alone differs from its row of the batched solve"),
    (_InPlace, "solve changed the observation in place"),
    (_LostState, "a reloaded candidate must solve identically"),
    (_FloatIterations, "Solution.iterations must be integer"),
])
def test_check_solver_names_the_broken_rule(cls, message):
    with registered(_plugin(cls)) as registry:
        with pytest.raises(AssertionError, match=message.replace("[", r"\[").replace("(", r"\(")):
            check_solver(registry, "candidate", "lasso", SMALL_LASSO)


def test_check_solver_refuses_a_family_that_is_not_registered():
    with registered(_plugin(_Ista, ("lasso", "tomography"))) as registry:
        with pytest.raises(AssertionError, match="declares families that no loaded plugin registers: tomography"):
            check_solver(registry, "candidate")


# -- the README's plugin example, verbatim -------------------------------------------------------

def test_readme_plugin_example_runs_verbatim(cli, tmp_path, monkeypatch):
    import re
    import shlex
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Adding a solver"):]
    source = next(body for body in re.findall(r"```python\n(.*?)```", section, flags=re.S)
                  if body.startswith("# my_solver.py"))
    command = next(line for body in re.findall(r"```bash\n(.*?)```", section, flags=re.S)
                   for line in body.splitlines() if "--plugin my_solver.py" in line)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_solver.py").write_text(source)
    args = shlex.split(command)
    assert args[0] == "l2obench" and "--scale" in args  # the README's command, at a tiny scale
    code, out, err = cli(*args[1:])
    assert code == 0, out + err
    rows = read_results([next((tmp_path / "l2obench-results").iterdir())])
    mine = rows[rows["solver"] == "my_ista"]
    assert set(mine["problem"]) == {"cs-tiny"} and set(mine["status"]) == {"ok"}
    assert mine[(mine["metric"] == "nmse_db") & (mine["split"] == "test") & (mine["subset"] == "all")
                ]["value"].iloc[0] < -5  # ISTA with a tuned lam recovers the tiny LASSO's signals
