"""Built-in problem families and suites of l2obench.

This module is the plugin that the ``l2obench`` entry-point group loads, exactly
as it would load a third-party package. It imports no numerical library: the
families are named by ``"module:Class"`` strings and imported when used.
"""
from __future__ import annotations

import math

from l2obench import Param, ProblemSpec, SuiteSpec, hookimpl
from l2obench_problems.suites import (DENOISING as DENOISING_SUITE, ENERGY_DENOISING, L2S, QUADRATIC as QUADRATIC_SUITE,
                                      SMOKE, SPARSE)

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

QUADRATIC = ProblemSpec(
    name="quadratic",
    factory="l2obench_problems.quadratic:QuadraticEnergies",
    description="y* = argmin 0.5 y^T Q*(x) y + b^T y, Q* from a hidden fixed network (thesis 4.3, 4.7)",
    params={
        "d": Param(5, help="dimension of y and b (Q* is d x d; the authors' code: 5)", type=int, ge=3),
        "m": Param(10, help="dimension of the input x (the authors' code: 10)", type=int, ge=1),
        "mu": Param(0.1, help="smallest eigenvalue of Q* (strong convexity)", type=float, gt=0),
        "L": Param(1.0, help="largest eigenvalue of Q* (smoothness)", type=float, gt=0),
        "sigma_b": Param(5 / math.sqrt(3), help="b ~ U[-sqrt(3) sigma_b, sqrt(3) sigma_b]^d, E[bb^T] = sigma_b^2 I "
                                                "(default: U[-5, 5], the authors' code)", type=float, gt=0),
        "x_max": Param(5.0, help="x ~ U[-x_max, x_max]^m", type=float, gt=0),
        "energy_hidden": Param(3, help="hidden size of the fixed network behind Q* (thesis: 3)", type=int, ge=0),
        "energy_seed": Param(0, help="seed of the fixed network behind Q* (one for every seed of a setting)",
                             type=int, ge=0),
        "mode": Param("hybrid", help="hybrid: the solver sees x, R and b (Q* hidden); given: it sees Q* and b",
                      type=str, choices=("hybrid", "given")),
        "pool": Param(10000, help="the training pairs are the first n_train of a random order of a pool of this "
                                  "many (thesis 4.7), nested along a sweep of n_train; null: drawn directly",
                      type=int, ge=1, nullable=True),
        "n_train": Param(100, help="training pairs n (the authors' code: 100)", type=int, ge=1),
        "n_val": Param(1000, help="validation pairs (learning-rate and step-size choice)", type=int, ge=1),
        "n_test": Param(10000, help="test pairs, drawn apart from the pool", type=int, ge=1),
    },
)

DENOISING = ProblemSpec(
    name="denoising",
    factory="l2obench_problems.denoising:Denoising",
    description="grayscale image denoising: noisy crops of dead-leaves, folder or scikit-image images, blind "
                "training noise, tests per noise level and out of distribution (thesis 5.5.3, NeurIPS 2020 7.2)",
    params={
        "source": Param("dead_leaves", help="dead_leaves (synthetic, offline), folder (path/train, path/test, "
                                            "optional path/val) or skimage (scikit-image's bundled photographs)",
                        type=str, choices=("dead_leaves", "folder", "skimage")),
        "path": Param(None, help="source = folder: a folder with train/ and test/ subfolders of png/jpg images",
                      type=str),
        "crop": Param(180, help="side of the square crops in pixels (thesis / NeurIPS: 180)", type=int, ge=8),
        "radius": Param([2.0, 128.0], help="dead leaves: disc radii [rmin, rmax] in pixels, density r^-3",
                        type=float, ge=0.5, many=True),
        "noise": Param("gaussian", help="gaussian (i.i.d.) or adaptive (lower on edges, NeurIPS 2020 7.2)",
                       type=str, choices=("gaussian", "adaptive")),
        "edge_noise": Param(0.3, help="adaptive noise: its level on the strongest edges, as a fraction of the "
                                      "flat-region level", type=float, ge=0, le=1),
        "train_sigma": Param([0.0, 55.0], help="training and validation noise level ~ U[lo, hi], in grey levels "
                                               "of 255 (thesis 5.5.3: sigma <= 55, blind)",
                             type=float, ge=0, many=True),
        "test_sigma": Param([15.0, 25.0, 35.0, 45.0, 55.0], help="test noise levels (grey levels), equal counts, "
                                                                 "metrics per level", type=float, ge=0, many=True),
        "ood_sigma": Param([65.0, 75.0], help="levels of the out-of-distribution split ood (thesis Table 5.6: "
                                              "65, 75, unseen in training); null or []: no ood split",
                           type=float, ge=0, many=True, nullable=True),
        "n_train": Param(2000, help="training crops", type=int, ge=1),
        "n_val": Param(100, help="validation crops", type=int, ge=1),
        "n_test": Param(340, help="test crops (equal per level; thesis: BSD68)", type=int, ge=1),
        "n_ood": Param(None, help="crops of the ood split; null: n_test", type=int, ge=1),
    },
)


@hookimpl
def l2obench_register_problems(register):
    register(LASSO)
    register(SLR)
    register(SPE)
    register(QUADRATIC)
    register(DENOISING)


@hookimpl
def l2obench_register_suites(register):
    register(SuiteSpec("smoke", SMOKE, "tiny problems of all five families for CI: seconds"))
    register(SuiteSpec("sparse", SPARSE, "sparse recovery: LASSO with classical and learned solvers"))
    register(SuiteSpec("l2s", L2S, "learning to stop, thesis Table 5.2: LISTA and LISTA-stop with long CPU training"))
    register(SuiteSpec("quadratic", QUADRATIC_SUITE, "algorithm layers (GD, NAG, RNN) on quadratic energies over k "
                                                     "and hidden sizes, thesis 4.7 and NeurIPS 2020 Fig. 6"))
    register(SuiteSpec("denoising", DENOISING_SUITE, "image denoising: classical denoisers on dead leaves and "
                                                     "photographs, PSNR / SSIM per noise level (thesis 5.5.3)"))
    register(SuiteSpec("energy-denoising", ENERGY_DENOISING, "unrolled quadratic-energy denoisers over k and model "
                                                              "size: the generalization gap (NeurIPS 2020 Fig. 7)"))
