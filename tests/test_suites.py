import json

import pytest

from l2obench.contracts import Budget
from l2obench.errors import SuiteFileError, UnknownNameError, UsageError
from l2obench.registry import Registry
from l2obench.suites import load_suite_file, plan
from l2obench_problems.suites import SPARSE

REGISTRY = Registry()


def test_sparse_suite_plans_table_5_2_rows_at_each_scale():
    small = plan(REGISTRY, "sparse", SPARSE, scale="small")
    lasso = [c for c in small if c.family == "lasso"]
    labels = list(dict.fromkeys(c.solver_label for c in lasso))
    assert {"ISTA (T=20)", "FISTA (T=20)", "ISTA (T=100)", "FISTA (T=100)", "LISTA (T=20)"} <= set(labels)
    assert {c.seed for c in small} == {0}
    assert {(c.settings["m"], c.settings["n"]) for c in lasso} == {(125, 250)}
    assert {c.problem_label: c.settings["condition_number"] for c in lasso} == {"l2s-kappa5": 5.0}
    assert {c.problem_label for c in small} == {"l2s-kappa5", "slr", "spe-er", "spe-grid-sweep"}
    paper = plan(REGISTRY, "sparse", SPARSE, scale="paper")
    assert {(c.settings["m"], c.settings["n"]) for c in paper if c.family == "lasso"} == {(250, 500)}
    assert {c.problem_label for c in paper if c.family == "lasso"} == {"cs-mixed", "l2s-kappa5", "cpss-noiseless",
                                                                       "cpss-snr20"}
    assert {c.settings["d"] for c in paper if c.family == "slr"} == {256, 1024}
    assert {c.settings["d"] for c in paper if c.family == "spe" and c.settings["graph"] == "er"} == {50, 100}
    assert {c.problem_label for c in plan(REGISTRY, "sparse", SPARSE, scale="smoke")} == {"cs-mixed", "slr", "spe-er"}
    assert paper[0].budget != small[0].budget and isinstance(small[0].budget, Budget)
    ista20 = next(c for c in small if c.solver_label == "ISTA (T=20)")
    assert ista20.params["max_iter"] == 20 and ista20.fixed_params == ("max_iter", "tol")
    # each solver runs on the families it supports: the T=20/T=100 rows on the LASSO only
    assert {c.family for c in small if c.solver_label == "ISTA (T=20)"} == {"lasso"}
    assert {c.family for c in small if c.solver_label == "FISTA (converged)"} == {"lasso", "slr"}
    assert {c.family for c in small if c.solver_label == "PLISA"} == {"slr", "spe"}
    # cells of one problem and seed are adjacent, so data are generated once
    keys = [c.data_key for c in small]
    assert keys == sorted(keys, key=keys.index)


def test_cell_ids_change_with_settings_and_params():
    a = plan(REGISTRY, "sparse", SPARSE, scale="smoke")
    b = plan(REGISTRY, "sparse", SPARSE, scale="small")
    assert len({c.cell_id for c in a}) == len(a)
    assert not {c.cell_id for c in a} & {c.cell_id for c in b}


def test_selection_by_solver_and_seed():
    cells = plan(REGISTRY, "sparse", SPARSE, scale="smoke", seeds=[3], solvers=["fista"])
    assert {c.solver for c in cells} == {"fista"} and {c.seed for c in cells} == {3}
    with pytest.raises(UnknownNameError, match="valid solver in this suites"):
        plan(REGISTRY, "sparse", SPARSE, scale="smoke", solvers=["nope"])


def _write(tmp_path, body, suffix=".json"):
    path = tmp_path / f"suite{suffix}"
    path.write_text(json.dumps(body) if suffix == ".json" else body)
    return path


@pytest.mark.parametrize("body, match", [
    ({"problems": [], "solvers": [], "solverz": []}, "unknown key 'solverz'"),
    ({"problems": [{"family": "lasso", "setings": {}}], "solvers": []}, r"problems\[0\]: unknown key 'setings'"),
    ({"problems": [{"family": "lasso", "settings": {"mm": 3}}], "solvers": []}, "unknown parameter of lasso 'mm'"),
    ({"problems": [{"family": "lasso"}], "solvers": [{"solver": "fista", "params": {"lamb": 1}}]},
     r"solvers\[0\]: unknown parameter of fista 'lamb'"),
    ({"problems": [{"family": "nope"}], "solvers": []}, "unknown problem 'nope'; valid problems: lasso"),
    ({"problems": [], "solvers": [], "budget": {"stepz": 3}}, "budget: unknown key 'stepz'"),
    ({"problems": [], "solvers": [], "seeds": {"huge": [1]}}, "unknown scale 'huge'"),
    ({"solvers": []}, "missing key 'problems'"),
    ({"problems": [{"family": "lasso", "only_scales": ["tiny"]}], "solvers": []}, r"problems\[0\].only_scales"),
    ({"problems": [{"family": "lasso", "settings": {"p": 1.5}}], "solvers": []},
     r"problems\[0\].settings: p must lie in \(0, 1\]"),
])
def test_malformed_suite_files_name_the_file_and_key(tmp_path, body, match):
    path = _write(tmp_path, body)
    with pytest.raises(SuiteFileError, match=match) as info:
        plan(REGISTRY, str(path), load_suite_file(path), scale="smoke")
    assert str(path) in str(info.value)


def test_toml_suite_file_and_syntax_errors(tmp_path):
    good = _write(tmp_path, 'seeds = [5]\n[[problems]]\nfamily = "lasso"\nsettings = {m = 10, n = 20}\n'
                            '[[solvers]]\nsolver = "ista"\nparams = {max_iter = 3}\n', ".toml")
    cells = plan(REGISTRY, str(good), load_suite_file(good), scale="smoke")
    assert [(c.seed, c.settings["m"], c.params["max_iter"]) for c in cells] == [(5, 10, 3)]
    bad = tmp_path / "bad.toml"
    bad.write_text("[[problems]\n")
    with pytest.raises(SuiteFileError, match="bad.toml is not valid TOML"):
        load_suite_file(bad)


def test_solver_that_does_not_support_the_family_is_rejected_before_compute():
    import types

    import l2obench
    from l2obench.testing import registered

    plugin = types.SimpleNamespace()

    @l2obench.hookimpl
    def l2obench_register_solvers(register):
        register(l2obench.SolverSpec(name="glasso_like", factory="x:y", families=("spe",)))

    plugin.l2obench_register_solvers = l2obench_register_solvers
    with registered(plugin) as registry:
        body = {"problems": [{"family": "lasso"}], "solvers": [{"solver": "glasso_like"}]}
        with pytest.raises(UsageError, match=r"does not support problem family 'lasso' \(lasso\); it supports: spe"):
            plan(registry, "s", body, scale="smoke")


def test_a_suite_mixing_families_pairs_each_solver_with_the_problems_it_supports():
    body = {"problems": [{"family": "lasso", "label": "cs"}, {"family": "slr", "label": "reg"},
                         {"family": "slr", "label": "reg-big", "only_scales": ["paper"]}],
            "solvers": [{"solver": "fista"}, {"solver": "lista"},
                        {"solver": "ista", "label": "ISTA (reg)", "problems": ["reg", "reg-big"]}]}
    cells = plan(REGISTRY, "s", body, scale="smoke")
    assert {(c.problem_label, c.solver_label) for c in cells} == {
        ("cs", "fista"), ("cs", "lista"), ("reg", "fista"), ("reg", "ISTA (reg)")}
    bad = {**body, "solvers": [{"solver": "lista", "problems": ["reg"]}]}
    with pytest.raises(UsageError, match=r"'lista' \(lista\) does not support problem family 'slr' \(reg\)"):
        plan(REGISTRY, "s", bad, scale="smoke")
    unknown = {**body, "solvers": [{"solver": "ista", "problems": ["nope"]}]}
    with pytest.raises(SuiteFileError, match=r"solvers\[0\]\.problems: this suite has no problem labelled 'nope'"):
        plan(REGISTRY, "s", unknown, scale="smoke")
    malformed = {**body, "solvers": [{"solver": "ista", "problems": "reg"}]}
    with pytest.raises(SuiteFileError, match="expected a list of problem labels"):
        plan(REGISTRY, "s", malformed, scale="smoke")
