"""Built-in problem families and suites of l2obench.

This module is the plugin that the ``l2obench`` entry-point group loads, exactly
as it would load a third-party package. It imports no numerical library: the
families are named by ``"module:Class"`` strings and imported when used.
"""
from __future__ import annotations

from l2obench import Param, ProblemSpec, SuiteSpec, hookimpl
from l2obench_problems.suites import SMOKE, SPARSE

LASSO = ProblemSpec(
    name="lasso",
    factory="l2obench_problems.lasso:Lasso",
    description="compressed sensing b = A x* + e with a fixed Gaussian sensing matrix (thesis 5.5.1)",
    params={
        "m": Param(250, help="measurements (rows of A)"),
        "n": Param(500, help="signal dimension (columns of A)"),
        "p": Param(0.1, help="Bernoulli probability of a non-zero in x*"),
        "snr": Param([20, 30, 40], help="SNR levels in dB, equal counts in every split (mixed); inf or null: noiseless"),
        "condition_number": Param(None, help="condition number of A before column normalisation; null: i.i.d."),
        "n_train": Param(10000, help="training instances"),
        "n_val": Param(3000, help="validation instances (equal per SNR level)"),
        "n_test": Param(3000, help="test instances (equal per SNR level)"),
        "ood": Param(None, help="out-of-distribution test split: overrides of p and/or snr, e.g. {snr = [10, 50]}"),
        "n_ood": Param(None, help="instances of the ood split; null: n_test"),
    },
)


@hookimpl
def l2obench_register_problems(register):
    register(LASSO)


@hookimpl
def l2obench_register_suites(register):
    register(SuiteSpec("smoke", SMOKE, "tiny LASSO suite for CI: seconds"))
    register(SuiteSpec("sparse", SPARSE, "sparse recovery: LASSO with classical and learned solvers"))
