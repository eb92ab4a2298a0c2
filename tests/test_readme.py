"""The README's examples work as written."""
import re
from pathlib import Path

from l2obench.registry import Registry
from l2obench.suites import load_suite_file, plan
from l2obench.testing import check_solver

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _block(language: str, first_line: str) -> str:
    for body in re.findall(rf"```{language}\n(.*?)```", README, flags=re.S):
        if body.startswith(first_line):
            return body
    raise AssertionError(f"no ```{language} block starting with {first_line!r} in README.md")


def test_plugin_example_passes_the_solver_contract(tmp_path):
    path = tmp_path / "my_solver.py"
    path.write_text(_block("python", "# my_solver.py"))
    registry = Registry(plugin_files=[path])
    assert registry.solvers["my_ista"].plugin.ok
    check_solver(registry, "my_ista", "lasso", {"m": 20, "n": 40, "n_train": 64, "n_val": 64, "n_test": 32})


def test_learned_plugin_example_trains_and_passes_the_solver_contract(tmp_path):
    path = tmp_path / "my_learned_solver.py"
    path.write_text(_block("python", "# my_learned_solver.py"))
    registry = Registry(plugin_files=[path])
    assert registry.solvers["my_learned_ista"].plugin.ok
    solution = check_solver(registry, "my_learned_ista", "lasso",
                            {"m": 20, "n": 40, "n_train": 64, "n_val": 64, "n_test": 32})
    assert solution.iterations is not None and int(solution.iterations[0]) == 10


def test_suite_file_example_plans(tmp_path):
    path = tmp_path / "my_suite.toml"
    path.write_text(_block("toml", 'description = "FISTA vs LISTA on a noiseless'))
    cells = plan(Registry(), str(path), load_suite_file(path), scale="small")
    pairs = [(c.problem_label, c.solver_label) for c in cells]
    assert pairs == [("cs-noiseless", s) for s in ("FISTA (T=20)", "lista", "rnn_l1")] * 2 + \
        [("regression", s) for s in ("FISTA (T=20)", "apf")] * 2
    assert cells[0].settings["snr"] == [float("inf")] and cells[1].budget.steps == 3000
    assert (cells[2].budget.steps, cells[2].budget.batch_size) == (1000, 16)
    smoke = plan(Registry(), str(path), load_suite_file(path), scale="smoke")
    assert [c.solver_label for c in smoke] == ["FISTA (T=20)", "lista", "FISTA (T=20)", "apf"]
    assert smoke[1].budget.steps == 100
