"""Built-in problem families and suites of l2obench.

This module is the plugin that the ``l2obench`` entry-point group loads, exactly
as it would load a third-party package. It imports no numerical library: the
families are named by ``"module:Class"`` strings and imported when used.
"""
from __future__ import annotations

from l2obench import Param, ProblemSpec, SuiteSpec, hookimpl
from l2obench_problems.suites import L2S, SMOKE, SPARSE

LASSO = ProblemSpec(
    name="lasso",
    factory="l2obench_problems.lasso:Lasso",
    description="compressed sensing b = A x* + e with a fixed Gaussian sensing matrix (thesis 5.5.1)",
    params={
        "m": Param(250, help="measurements (rows of A)", type=int, ge=1),
        "n": Param(500, help="signal dimension (columns of A)", type=int, ge=1),
        "p": Param(0.1, help="Bernoulli probability of a non-zero in x*", type=float, gt=0, le=1),
        "snr": Param([20, 30, 40], help="SNR levels in dB, equal counts in every split (mixed); inf or null: noiseless",
                     type=float, many=True, nullable=True),
        "condition_number": Param(None, help="condition number of A before column normalisation; null: i.i.d.",
                                  type=float, ge=1),
        "n_train": Param(10000, help="training instances", type=int, ge=1),
        "n_val": Param(3000, help="validation instances (equal per SNR level)", type=int, ge=1),
        "n_test": Param(3000, help="test instances (equal per SNR level)", type=int, ge=1),
        "ood": Param(None, help="out-of-distribution test split: overrides of p and/or snr, e.g. {snr = [10, 50]}",
                     type=dict),
        "n_ood": Param(None, help="instances of the ood split; null: n_test", type=int, ge=1),
    },
)

SLR = ProblemSpec(
    name="slr",
    factory="l2obench_problems.slr:SparseLinearRegression",
    description="sparse linear regression y = X beta* + e, a correlated design per instance (thesis 7.7.1)",
    params={
        "d": Param(256, help="dimension of beta* (thesis: 256 or 1024)", type=int, ge=1),
        "s": Param(16, help="non-zeros of beta*, at uniformly random positions", type=int, ge=1),
        "n_samples": Param([96, 160], help="samples per instance: an integer or a range [lo, hi], "
                                           "drawn uniformly per instance (held-out ones included)",
                           type=int, ge=1, many=True),
        "rho": Param(0.5, help="design rows ~ N(0, Sigma), Sigma_jk = rho^|j-k|; columns then unit-norm",
                     type=float, ge=0, lt=1),
        "beta_min": Param(0.5, help="smallest magnitude of a non-zero of beta* (uniform, random sign)",
                          type=float, gt=0),
        "beta_max": Param(1.5, help="largest magnitude of a non-zero of beta*", type=float, gt=0),
        "snr": Param(20, help="SNR in dB (rms of X beta* over noise sigma), or a list of levels in equal "
                              "counts per split; inf or null: noiseless", type=float, many=True, nullable=True),
        "support_tol": Param(0.01, help="|beta_j| > support_tol counts as a non-zero in support recovery",
                             type=float, ge=0),
        "supervised": Param(True, help="false: the training loss is held-out least squares "
                                       "(thesis 7.6); needs holdout", type=bool),
        "holdout": Param(None, help="held-out samples per instance, a count or a fraction of n_samples "
                                    "(target A_holdout, b_holdout; never shown to solvers); null: none",
                         type=(int, float), gt=0),
        "n_train": Param(2000, help="training instances (thesis 7.7.1: 2000 training problems)", type=int, ge=1),
        "n_val": Param(100, help="validation instances", type=int, ge=1),
        "n_test": Param(100, help="test instances (thesis: 100 test problems)", type=int, ge=1),
    },
)

SPE = ProblemSpec(
    name="spe",
    factory="l2obench_problems.spe:SparsePrecisionEstimation",
    description="sparse precision matrix from the sample covariance of M Gaussian samples (thesis 6.5, 7.7.1)",
    params={
        "d": Param(50, help="dimension of Theta* (thesis: 50 or 100)", type=int, ge=2),
        "graph": Param("er", help="er (Erdos-Renyi) or grid", type=str, choices=("er", "grid")),
        "edge_prob": Param([0.05, 0.15], help="Erdos-Renyi edge probability, or a range [lo, hi] "
                                              "it is drawn from uniformly per instance",
                           type=float, ge=0, le=1, many=True),
        "weights": Param([0.5, 1.0], help="off-diagonal weight magnitudes ~ U[lo, hi] with random sign; "
                                          "diagonal shifted so lambda_min(Theta*) = 1", type=float, ge=0, many=True),
        "M": Param(100, help="samples per instance, or a list of levels in equal counts per split "
                             "(metrics per level, subsets M=..)", type=int, ge=1, many=True),
        "edge_tol": Param(0.01, help="|Theta_ij| > edge_tol counts as an edge in edge recovery", type=float, ge=0),
        "n_train": Param(1000, help="training instances", type=int, ge=1),
        "n_val": Param(100, help="validation instances", type=int, ge=1),
        "n_test": Param(100, help="test instances (thesis Table 7.1: 100 test problems)", type=int, ge=1),
    },
)


@hookimpl
def l2obench_register_problems(register):
    register(LASSO)
    register(SLR)
    register(SPE)


@hookimpl
def l2obench_register_suites(register):
    register(SuiteSpec("smoke", SMOKE, "tiny LASSO suite for CI: seconds"))
    register(SuiteSpec("sparse", SPARSE, "sparse recovery: LASSO with classical and learned solvers"))
    register(SuiteSpec("l2s", L2S, "learning to stop, thesis Table 5.2: LISTA and LISTA-stop with long CPU training"))
