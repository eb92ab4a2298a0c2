"""Algorithm-property probes (thesis 4.4.1): GD and NAG reproduce the trends of thesis Table 4.1."""
import pytest
import torch

from l2obench.registry import Registry
from l2obench.probes import probe_rows
from l2obench.results import expand_sweep, read_results
from l2obench_plugins.algorithm_layers import GD, NAG

REGISTRY = Registry()
KS = (2, 5, 10, 20, 40)


@pytest.fixture(scope="module")
def table_4_1():
    """cvg, stab and sens of GD and NAG at the same step 1/L over KS, on 128 given energies (mu = 0.1, L = 1)."""
    spec = REGISTRY.problem("quadratic")
    family = spec.build(**spec.resolve({"mode": "given", "n_train": 10, "n_val": 10, "n_test": 128}))
    test = family.draw(128, torch.Generator().manual_seed(0), {}, "test")
    out = {}
    for cls, name in ((GD, "gd"), (NAG, "nag")):
        for k in KS:
            solver = cls(k=k, step=1.0).with_data_term("quadratic")
            out[name, k] = probe_rows(solver, REGISTRY.solver(name), family, test, eps=1e-3, directions=4,
                                      generator=torch.Generator().manual_seed(k))
    return out


def test_nag_converges_faster_than_gd(table_4_1):
    for k in KS:
        assert table_4_1["nag", k]["cvg"] < table_4_1["gd", k]["cvg"], k
        assert table_4_1["nag", k]["cvg_mean"] < table_4_1["gd", k]["cvg_mean"], k
    gd = [table_4_1["gd", k]["cvg"] for k in KS]
    assert gd == sorted(gd, reverse=True) and gd[-1] < 0.05  # O((1 - phi mu)^k)


def test_nag_is_less_stable_than_gd_and_stability_constants_grow_with_k(table_4_1):
    for k in KS[:-1]:  # at k = 40 both are at the stability of the exact minimizer
        assert table_4_1["nag", k]["stab_mean"] > table_4_1["gd", k]["stab_mean"], k
    for name in ("gd", "nag"):
        stab = [table_4_1[name, k]["stab_mean"] for k in KS]
        assert stab[0] < stab[2] < stab[-1]  # O(1 - (1 - phi mu)^k): grows to a limit
    limit = table_4_1["gd", 40]["stab_mean"]
    assert table_4_1["nag", 40]["stab_mean"] == pytest.approx(limit, rel=0.15)


def test_nag_is_less_sensitive_than_gd_for_large_k(table_4_1):
    for k in (10, 20, 40):
        assert table_4_1["nag", k]["sens_mean"] < table_4_1["gd", k]["sens_mean"], k
    gd = [table_4_1["gd", k]["sens_mean"] for k in KS]
    assert gd[-1] < max(gd)  # O(k (1 - c mu)^(k-1)): rises, then falls


def test_probe_command_writes_curves_over_k_and_resumes(cli, tmp_path):
    results = tmp_path / "probe"
    args = ("probe", "--solver", "gd[step=1.0]", "--problem", "quadratic[mode=given,n_test=40,n_val=20,n_train=10]",
            "--k", "1,4,16", "--instances", "40", "--directions", "2", "--results", str(results))
    code, out, err = cli(*args)
    assert code == 0, out + err
    assert "cvg" in out and "stab_mean" in out
    df = expand_sweep(read_results([results]))
    assert set(df["suite"]) == {"probe"} and set(df["metric"]) == {"cvg", "cvg_mean", "stab", "stab_mean",
                                                                   "sens", "sens_mean"}
    cvg = df[df["metric"] == "cvg_mean"].set_index("k")["value"].sort_index()
    assert list(cvg.index) == [1, 4, 16] and cvg.is_monotonic_decreasing
    code, again, _ = cli(*args, "--resume")
    assert code == 0 and again.split("\n")[1:] == out.split("\n")[1:]


@pytest.mark.parametrize("args, message", [
    (("--solver", "ista", "--problem", "lasso[m=5,n=8,n_train=4,n_val=4,n_test=4]", "--k", "2"),
     "'lasso' does not say how to perturb its instances"),
    (("--solver", "gd[k=3]", "--problem", "quadratic[mode=given]"), "set k with --k"),
    (("--solver", "gd", "--problem", "quadratic[mode=given]", "--k", "0,2"), "--k takes positive integers"),
    (("--solver", "gd", "--problem", "quadratic[mode]"), "expected key=value, got 'mode'"),
    (("--solver", "gd", "--problem", "lasso"), "does not support problem family 'lasso'"),
    (("--solver", "gd", "--problem", "quadratic[mu=3.0]"), "problem settings: need 0 < mu < L"),
])
def test_bad_probe_requests_exit_2(cli, tmp_path, args, message):
    code, _, err = cli("probe", *args, "--results", str(tmp_path / "p"), "--no-cache")
    assert code == 2 and message in err, err
