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
    assert {(c.settings["m"], c.settings["n"]) for c in lasso} == {(250, 500)}  # the thesis's size (issue 11)
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
    ({"problems": [{"family": "nope"}], "solvers": []}, "unknown problem 'nope'; valid problems: denoising, lasso"),
    ({"problems": [], "solvers": [], "budget": {"stepz": 3}}, "budget: unknown key 'stepz'"),
    ({"problems": [], "solvers": [], "seeds": {"huge": [1]}}, "unknown scale 'huge'"),
    ({"solvers": []}, "missing key 'problems'"),
    ({"problems": [], "solvers": [], "default_scale": "huge"}, r"default_scale: expected one of smoke, small, paper"),
    ({"problems": [{"family": "lasso", "only_scales": ["tiny"]}], "solvers": []}, r"problems\[0\].only_scales"),
    ({"problems": [{"family": "lasso", "settings": {"p": 1.5}}], "solvers": []},
     r"problems\[0\].settings.p: must be a number in \(0, 1\], got 1.5"),
    ({"problems": [{"family": "lasso", "settings": {"ood": {"q": 1}}}], "solvers": []},
     r"problems\[0\].settings: ood may override p, snr; got q"),
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
    unnamed = tmp_path / "suite"  # no suffix: read as TOML, and the message names it
    unnamed.write_text("not a suite\n")
    with pytest.raises(SuiteFileError, match="suite is not valid TOML: Expected"):
        load_suite_file(unnamed)


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


_LASSO = '[[problems]]\nfamily = "lasso"\nsettings = {m = 10, n = 20}\n'
_SPE = '[[problems]]\nfamily = "spe"\nsettings = {d = 6, M = 10}\n'


@pytest.mark.parametrize("body, where", [
    (_LASSO + '[[solvers]]\nsolver = "ista"\n[[solvers]]\nsolver = "fista"\nparams = {max_iter = "twenty"}\n',
     "solvers[1].params.max_iter: must be an int >= 1, got 'twenty'"),
    (_LASSO + '[[solvers]]\nsolver = "lista_stop"\nparams = {stop_rule = "nope"}\n',
     "solvers[0].params.stop_rule: must be one of threshold, sample, never, got 'nope'"),
    (_LASSO + '[[solvers]]\nsolver = "fista"\nparams = {restart = 1}\n',
     "solvers[0].params.restart: must be a bool, got 1"),
    (_LASSO + '[[solvers]]\nsolver = "fista"\nparams = {max_iter = 20}\nscales = {smoke = {max_iter = 0}}\n',
     "solvers[0].scales.smoke.max_iter: must be an int >= 1, got 0"),
    (_SPE + '[[solvers]]\nsolver = "glasso"\nparams = {mode = "lasso"}\n',
     "solvers[0].params.mode: must be one of cd, lars, got 'lasso'"),
    (_LASSO + '[[solvers]]\nsolver = "lista"\nbudget = {steps = -1}\n',
     "solvers[0].budget.steps: must be an int >= 1, got -1"),
    (_LASSO + '[[solvers]]\nsolver = "lista"\nbudget = {scales = {smoke = {max_seconds = 0}}}\n',
     "solvers[0].budget.scales.smoke.max_seconds: must be a number > 0 or null, got 0"),
    ('[budget]\nbatch_size = 2.5\n' + _LASSO + '[[solvers]]\nsolver = "lista"\n',
     "budget.batch_size: must be an int >= 1, got 2.5"),
    ('[budget]\nsteps = 10\n[budget.scales.smoke]\nsteps = true\n' + _LASSO + '[[solvers]]\nsolver = "lista"\n',
     "budget.scales.smoke.steps: must be an int >= 1, got True"),
    ('[[problems]]\nfamily = "lasso"\nsettings = {m = "ten"}\n[[solvers]]\nsolver = "fista"\n',
     "problems[0].settings.m: must be an int >= 1, got 'ten'"),
    ('[[problems]]\nfamily = "spe"\nsettings = {M = [10, 40]}\nscales = {smoke = {graph = "tree"}}\n'
     '[[solvers]]\nsolver = "glasso"\n',
     "problems[0].scales.smoke.graph: must be one of er, grid, got 'tree'"),
])
def test_bad_values_are_rejected_at_planning_naming_file_entry_and_key(tmp_path, body, where):
    path = _write(tmp_path, body, ".toml")
    with pytest.raises(SuiteFileError) as info:
        plan(REGISTRY, str(path), load_suite_file(path), scale="smoke")
    assert str(info.value) == f"{path}.{where}"


def test_budgets_of_classical_solvers_are_checked_too():
    body = {"problems": [{"family": "lasso"}], "solvers": [{"solver": "fista", "budget": {"patience": 0}}]}
    with pytest.raises(SuiteFileError, match=r"^s\.solvers\[0\]\.budget\.patience: must be an int >= 1, got 0$"):
        plan(REGISTRY, "s", body, scale="smoke")


def test_solver_params_are_resolved_per_problem_family():
    body = {"problems": [{"family": "slr", "label": "reg"}, {"family": "spe", "label": "prec"}],
            "solvers": [{"solver": "plisa"}, {"solver": "plisa", "label": "PLISA (T=3)", "params": {"n_blocks": 3}}]}
    cells = {(c.problem_label, c.solver_label): c for c in plan(REGISTRY, "s", body, scale="smoke")}
    keys = ("n_blocks", "n_layers", "lam_init")
    assert [cells["reg", "plisa"].params[k] for k in keys] == [20, 5, 0.05]
    assert [cells["prec", "plisa"].params[k] for k in keys] == [5, 4, 0.5]
    assert [cells["reg", "PLISA (T=3)"].params[k] for k in keys] == [3, 5, 0.05]
    assert [cells["prec", "PLISA (T=3)"].params[k] for k in keys] == [3, 4, 0.5]
    assert cells["reg", "plisa"].fixed_params == () and cells["prec", "PLISA (T=3)"].fixed_params == ("n_blocks",)
    assert len({c.cell_id for c in cells.values()}) == 4


def test_l2s_suite_plans_the_table_5_2_rows_with_long_training_at_the_thesis_size():
    registry = Registry()
    cells = plan(registry, "l2s", registry.suite("l2s").definition, scale="small")
    assert [c.solver_label for c in cells] == ["ISTA (T=20)", "FISTA (T=20)", "ISTA (T=100)", "FISTA (T=100)",
                                               "LISTA (T=20)", "LISTA-stop (T<=20)"]
    assert {(c.settings["m"], c.settings["n"], c.settings["n_test"]) for c in cells} == {(250, 500, 3000)}
    learned = [c for c in cells if c.learned]
    assert {c.budget.steps for c in learned} == {9000} and {c.params["lr_decays"] == [0.2, 0.02] for c in learned} == {True}


@pytest.mark.parametrize("body, match", [
    ({"problems": [{"family": "lasso"}],
      "solvers": [{"solver": "fista", "label": "FISTA"}, {"solver": "ista", "label": "FISTA"}]},
     r"solvers\[1\]: label 'FISTA' is also the label of solvers\[0\] on problem 'lasso'"),
    ({"problems": [{"family": "lasso", "label": "cs"},
                   {"family": "lasso", "label": "cs", "settings": {"m": 30}}], "solvers": []},
     r"problems\[1\]: label 'cs' is also the label of problems\[0\]"),
    # Sweeps do not tell entries apart: the label is the entry's.
    ({"problems": [{"family": "lasso"}],
      "solvers": [{"solver": "fista", "sweep": {"max_iter": [5, 10]}},
                  {"solver": "fista", "sweep": {"max_iter": [20]}}]},
     r"solvers\[1\]: label 'fista' is also the label of solvers\[0\]"),
])
def test_two_entries_with_one_label_are_refused_naming_both(tmp_path, body, match):
    path = _write(tmp_path, body)
    with pytest.raises(SuiteFileError, match=match) as info:
        plan(REGISTRY, str(path), load_suite_file(path), scale="smoke")
    assert str(path) in str(info.value) and info.value.exit_code == 2


def test_one_label_on_different_problems_or_scales_is_allowed(tmp_path):
    body = {"problems": [{"family": "lasso", "label": "a"}, {"family": "lasso", "label": "b", "settings": {"m": 30}},
                         {"family": "lasso", "label": "c", "only_scales": ["paper"]},
                         {"family": "lasso", "label": "c", "only_scales": ["smoke"], "settings": {"m": 40}}],
            "solvers": [{"solver": "fista", "label": "F", "problems": ["a"]},
                        {"solver": "fista", "label": "F", "problems": ["b", "c"]}]}
    path = _write(tmp_path, body)
    cells = plan(REGISTRY, str(path), load_suite_file(path), scale="smoke")
    assert sorted((c.problem_label, c.solver_label) for c in cells) == [("a", "F"), ("b", "F"), ("c", "F")]


@pytest.mark.parametrize("body, match", [
    ({"problems": [{"family": "lasso", "label": "cs"}],
      "solvers": [{"solver": "fista", "label": "A", "params": {"max_iter": 50}},
                  {"solver": "fista", "label": "B", "params": {"max_iter": 50}}]},
     r"'cs x B x seed 0' computes the same cell as 'cs x A x seed 0' \(family lasso with the same settings and "
     r"seed, solver fista with the same parameters\)"),
    ({"problems": [{"family": "lasso", "label": "cs", "settings": {"m": 30}},
                   {"family": "lasso", "label": "cs again", "settings": {"m": 30}}],
      "solvers": [{"solver": "fista"}]},
     r"'cs again x fista x seed 0' computes the same cell as 'cs x fista x seed 0'"),
    # A sweep passing through another entry's parameters.
    ({"problems": [{"family": "lasso"}],
      "solvers": [{"solver": "fista", "label": "F", "params": {"max_iter": 10}},
                  {"solver": "fista", "label": "F sweep", "sweep": {"max_iter": [5, 10]}}]},
     r"'lasso x F sweep \[max_iter=10\] x seed 0' computes the same cell as 'lasso x F x seed 0'"),
])
def test_two_entries_computing_the_same_cell_are_refused_naming_both(tmp_path, body, match):
    path = _write(tmp_path, body)
    with pytest.raises(SuiteFileError, match=match) as info:
        plan(REGISTRY, str(path), load_suite_file(path), scale="smoke")
    assert info.value.exit_code == 2


def test_two_problems_with_one_setting_are_allowed_when_no_solver_runs_alike_on_both(tmp_path):
    body = {"problems": [{"family": "lasso", "label": "a"}, {"family": "lasso", "label": "b"}],
            "solvers": [{"solver": "fista", "problems": ["a"]},
                        {"solver": "fista", "label": "F50", "params": {"max_iter": 50}, "problems": ["b"]}]}
    path = _write(tmp_path, body)
    cells = plan(REGISTRY, str(path), load_suite_file(path), scale="smoke")
    assert len({c.cell_id for c in cells}) == len(cells) == 2
    assert len({c.data_key for c in cells}) == 1


@pytest.mark.parametrize("scale", ["smoke", "small", "paper"])
def test_every_builtin_suite_plans_with_unique_labels(scale):
    for name, suite in REGISTRY.suites.items():
        assert plan(REGISTRY, name, suite.spec.definition, scale=scale)
