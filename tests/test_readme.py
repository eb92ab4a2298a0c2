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


def test_citation_file_is_valid_cff_for_this_version_and_the_readme_points_to_it():
    import yaml

    import l2obench

    citation = yaml.safe_load((Path(__file__).resolve().parents[1] / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["type"] == "software"
    assert citation["version"] == l2obench.__version__  # bumped together
    assert citation["message"] and citation["title"] and all("name" in a or "family-names" in a
                                                             for a in citation["authors"])
    titles = {reference["title"] for reference in citation["references"]}
    assert titles == {"Duality between Deep Learning and Algorithm Design",
                      "Understanding Deep Architectures with Reasoning Layer"}
    assert "`CITATION.cff`" in README and "### Citing a result" in README


def test_readme_names_the_commit_of_every_published_run():
    import pyarrow.dataset as ds

    results = Path(__file__).resolve().parents[1] / "results"
    section = README.split("### Citing a result")[1].split("\n## ")[0]
    for suite in ("sparse", "l2s", "quadratic", "denoising", "energy-denoising"):
        cells = ds.dataset(results / f"{suite}-small" / "cells")
        commits = set(cells.to_table(columns=["git_commit"]).column("git_commit").to_pylist())
        assert len(commits) == 1 and f"`{commits.pop()}`" in section, suite
