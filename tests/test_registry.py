import subprocess
import sys
import textwrap
import types

import pytest

import l2obench
from l2obench.errors import PluginError, UnknownNameError
from l2obench.registry import Registry
from l2obench.testing import registered

THIRD_PARTY = textwrap.dedent('''
    import l2obench
    from l2obench.contracts import Solution, Solver

    class ZeroSolver(Solver):
        def solve(self, observation, trajectory=False):
            return Solution(observation["b"].new_zeros(observation["b"].shape[0], observation["A"].shape[-1]))

    @l2obench.hookimpl
    def l2obench_register_solvers(register):
        register(l2obench.SolverSpec(name="zero", factory=ZeroSolver, families=("lasso",),
                                     params={"scale": l2obench.Param(1.0, help="unused")}))
''')


def test_builtins_come_from_the_entry_point_group():
    registry = Registry()
    assert {"ista", "fista", "admm", "lista"} <= set(registry.solvers)
    assert "lasso" in registry.problems and {"smoke", "sparse"} <= set(registry.suites)
    origins = {registry.solvers[n].plugin.origin for n in ("ista", "lista")}
    assert origins == {f"package l2obench {l2obench.__version__}"}
    assert registry.solvers["lista"].spec.learned and not registry.solvers["fista"].spec.learned


def test_file_plugin_registers_a_solver(tmp_path):
    path = tmp_path / "zero_plugin.py"
    path.write_text(THIRD_PARTY)
    registry = Registry(plugin_files=[path])
    reg = registry.solvers["zero"]
    assert reg.plugin.origin == f"file {path}" and reg.plugin.ok
    assert reg.spec.build(scale=2.0).scale == 2.0


def test_broken_plugins_are_reported_and_others_still_load(tmp_path, capsys):
    bad_import = tmp_path / "bad_import.py"
    bad_import.write_text("import does_not_exist_anywhere\n")
    bad_hook = tmp_path / "bad_hook.py"
    bad_hook.write_text(textwrap.dedent('''
        import l2obench
        @l2obench.hookimpl
        def l2obench_register_solvers(register):
            raise RuntimeError("hook exploded")
    '''))
    registry = Registry(plugin_files=[bad_import, bad_hook])
    broken = {r.name: r.error for r in registry.broken}
    assert "ModuleNotFoundError" in broken["bad_import"] and "does_not_exist_anywhere" in broken["bad_import"]
    assert "RuntimeError: hook exploded" in broken["bad_hook"]
    assert "fista" in registry.solvers  # the built-ins still load
    err = capsys.readouterr().err
    assert "bad_import" in err and "bad_hook" in err
    with pytest.raises(PluginError, match="hook exploded"):
        Registry(plugin_files=[bad_hook], strict=True)


def test_duplicate_names_are_an_error_naming_both_plugins(tmp_path):
    dup = tmp_path / "dup.py"
    dup.write_text(textwrap.dedent('''
        import l2obench
        @l2obench.hookimpl
        def l2obench_register_solvers(register):
            register(l2obench.SolverSpec(name="fista", factory="x:y", families=("lasso",)))
    '''))
    with pytest.raises(PluginError, match="registered twice"):
        Registry(plugin_files=[dup], strict=True)


def test_registered_helper_and_unknown_names():
    plugin = types.SimpleNamespace()

    @l2obench.hookimpl
    def l2obench_register_solvers(register):
        register(l2obench.SolverSpec(name="tmp_solver", factory="x:y", families=("lasso",)))

    plugin.l2obench_register_solvers = l2obench_register_solvers
    with registered(plugin) as registry:
        assert "tmp_solver" in registry.solvers
    assert "tmp_solver" not in Registry().solvers
    registry = Registry()
    with pytest.raises(UnknownNameError, match="valid solvers: " + ", ".join(sorted(registry.solvers))) as error:
        registry.solver("nope")
    assert "admm, alista, apf" in str(error.value)
    with pytest.raises(UnknownNameError, match="valid parameter of fista"):
        Registry().solver("fista").resolve({"lamda": 1})
    with pytest.raises(ValueError, match="max_iter must be an int >= 1, got 0"):
        Registry().solver("fista").build(max_iter=0)


def test_list_does_not_import_torch():
    code = ("import sys; from l2obench.cli import main\n"
            "try:\n    main(['list'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'list imported torch'\n"
            "assert 'pandas' not in sys.modules, 'list imported pandas'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "fista" in out.stdout
    assert "max_iter = 1000  [int >= 1]  maximum iterations" in out.stdout
    assert "stop_rule = 'threshold'  [one of threshold, sample, never]" in out.stdout
    assert "n_blocks = 20 (slr), 5 (spe)  [int >= 1]" in out.stdout
