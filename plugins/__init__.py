"""Built-in solvers of l2obench.

This module is the plugin that the ``l2obench`` entry-point group loads, exactly
as it would load a third-party package. It imports no numerical library: each
solver is named by a ``"module:Class"`` string and imported when used. The
specs below are the single source of each solver's hyper-parameters, their
defaults and the grids searched on the validation split.
"""
from __future__ import annotations

from l2obench import Param, SolverSpec, hookimpl

# Regularisation weights searched on validation; the LASSO optimum for
# SNR 20-40 dB with unit-norm columns lies well inside this range.
LAMBDA_GRID = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)

_ITERATION_PARAMS = {
    "max_iter": Param(1000, help="maximum iterations", type=int, ge=1),
    "tol": Param(1e-4, help="stop an instance when its duality gap is below tol * ||b||^2 (scikit-learn's rule); 0: run max_iter",
                 type=float, ge=0),
}

# ISTA's step in units of 1/L: below 2 it converges; with a fixed iteration count (T = 20) a longer
# step can be better (the slow directions of an ill-conditioned A gain more than the fast ones
# lose), so the validation grid reaches beyond 2 and the tuner keeps what wins.
ISTA_STEP_GRID = (1.0, 1.5, 1.9, 2.2, 2.6, 3.0)

ISTA = SolverSpec(
    name="ista",
    factory="l2obench_plugins.proximal_gradient:ISTA",
    families=("lasso", "slr"),
    learned=False,
    description="proximal gradient for 0.5||Ax-b||^2 + lam||x||_1, batched over instances",
    params={
        "lam": Param(0.1, LAMBDA_GRID, "l1 weight", type=float, ge=0),
        "step": Param(1.0, ISTA_STEP_GRID, "step size in units of 1/L, L = ||A||_2^2 (< 2 converges)",
                      type=float, gt=0),
        **_ITERATION_PARAMS,
    },
)

FISTA = SolverSpec(
    name="fista",
    factory="l2obench_plugins.proximal_gradient:FISTA",
    families=("lasso", "slr"),
    learned=False,
    description="accelerated proximal gradient (Beck-Teboulle) with adaptive restart, batched",
    params={
        "lam": Param(0.1, LAMBDA_GRID, "l1 weight", type=float, ge=0),
        "restart": Param(True, help="gradient-based adaptive restart (O'Donoghue-Candes)", type=bool),
        **_ITERATION_PARAMS,
    },
)

ADMM = SolverSpec(
    name="admm",
    factory="l2obench_plugins.admm:ADMM",
    families=("lasso", "slr"),
    learned=False,
    description="ADMM (Boyd et al. 2011, section 6.4) with a cached factorisation, batched",
    params={
        "lam": Param(0.1, LAMBDA_GRID, "l1 weight", type=float, ge=0),
        "rho": Param(1.0, (0.1, 0.3, 1.0, 3.0, 10.0), "augmented-Lagrangian penalty", type=float, gt=0),
        "max_iter": Param(1000, help="maximum iterations", type=int, ge=1),
        "tol": Param(1e-4, help="stop an instance when its relative primal and dual residuals are below tol; 0: run max_iter",
                     type=float, ge=0),
    },
)

_UNROLLED_TRAINING = {
    "gamma": Param(0.9, help="layer-loss discount: loss = sum_t gamma^(T-t) ||x_t - x*||^2", type=float, ge=0, le=1),
    "fresh_samples": Param(True, help="draw fresh training instances each step (else iterate the train split)",
                           type=bool),
}

_SCHEDULE = {
    "schedule": Param("progressive", help="progressive: layer by layer with learning-rate decay stages (the authors' "
                                          "code); joint: all layers on the layer-weighted loss",
                      type=str, choices=("progressive", "joint")),
    "lr_decays": Param([0.2, 0.02], help="learning-rate factors of the decay stages after training at lr (each "
                                         "early-stopped; the authors' code: 0.2, 0.02); []: none",
                       type=float, many=True, gt=0, le=1),
}

LISTA = SolverSpec(
    name="lista",
    factory="l2obench_plugins.lista:LISTA",
    families=("lasso",),
    learned=True,
    description="learned ISTA (Gregor-LeCun 2010): T untied layers x_t = soft(W1_t b + W2_t x_{t-1}, theta_t)",
    params={
        "n_layers": Param(20, help="number of layers T", type=int, ge=1),
        "lr": Param(1e-3, help="Adam learning rate", type=float, gt=0),
        "lam_init": Param(0.1, help="ISTA lambda used to initialise the thresholds", type=float, ge=0),
        **_UNROLLED_TRAINING,
        **_SCHEDULE,
    },
)


_SUPPORT_SELECTION = {
    "support_p": Param(1.2, help="support selection: percent of entries per instance added per layer "
                                 "(p_k = min(support_p k, support_max))", type=float, ge=0, le=100),
    "support_max": Param(13.0, help="support selection: maximum percent of entries that bypass the shrinkage",
                         type=float, ge=0, le=100),
}

ALISTA = SolverSpec(
    name="alista",
    factory="l2obench_plugins.alista:ALISTA",
    families=("lasso", "slr"),
    learned=True,
    description="analytic LISTA (Liu et al. 2019): analytic weight, learned step sizes and thresholds (2T scalars)",
    params={
        "n_layers": Param(16, help="number of layers T", type=int, ge=1),
        "lr": Param(5e-3, help="Adam learning rate", type=float, gt=0),
        "lam_init": Param(0.1, help="thresholds start at lam_init times the step size (ISTA's lambda)",
                          type=float, ge=0),
        **_SUPPORT_SELECTION,
        **_UNROLLED_TRAINING,
        **_SCHEDULE,
        # On per-instance designs the training split (thesis 7.7.1: a fixed set of training problems)
        # lets every design's analytic weight be computed once, not at every step.
        "fresh_samples": Param(True, help="draw fresh training instances each step (else iterate the train split)",
                               type=bool, family_defaults={"slr": False}),
    },
)

LISTA_CPSS = SolverSpec(
    name="lista_cpss",
    factory="l2obench_plugins.alista:LISTACPSS",
    families=("lasso",),
    learned=True,
    description="LISTA with coupled weights and support selection (Chen et al. 2018)",
    params={
        "n_layers": Param(16, help="number of layers T", type=int, ge=1),
        "lr": Param(5e-3, help="Adam learning rate", type=float, gt=0),
        "lam_init": Param(0.1, help="ISTA lambda used to initialise the thresholds (theta = lam_init / L)",
                          type=float, ge=0),
        **_SUPPORT_SELECTION,
        **_UNROLLED_TRAINING,
        **_SCHEDULE,
    },
)

# The parameters of the learned-stopping layer (l2obench.learned_stopping) that LISTA-stop and
# DnCNN-stop share, with the same defaults.
_STOPPING = {
    "policy_steps": Param(None, help="stage II steps; null: the suite's training budget", type=int, ge=1,
                          nullable=True),
    "hard_oracle": Param(True, help="stage II imitates the oracle's best output (one-hot, the authors') rather than "
                                    "q* itself", type=bool),
    "finetune_steps": Param(0, help="stage III: steps of joint fine-tuning on eq. 5.6 (Table 5.3); 0: none",
                            type=int, ge=0),
    "support_mass": Param(1e-3, help="after training, the policy runs (and may stop) only after outputs where its "
                                     "stop distribution q_phi, averaged over validation, holds at least this (the "
                                     "authors' nz_post); 0: after every output", type=float, ge=0, lt=1),
    "stop_rule": Param("threshold", help="test-time stopping: threshold (pi_t > 0.5), sample (Bernoulli), never",
                       type=str, choices=("threshold", "sample", "never")),
    "sample_seed": Param(0, help="seed of the sample rule's draws", type=int, ge=0),
}

LISTA_STOP = SolverSpec(
    name="lista_stop",
    factory="l2obench_plugins.lista_stop:LISTAStop",
    families=("lasso",),
    learned=True,
    description="LISTA with a learned stopping policy (thesis ch. 5): oracle stage I, forward-KL stage II",
    params={
        "n_layers": Param(20, help="maximum number of layers T (at least 2: the policy decides after layers 1..T-1)", type=int, ge=2),
        "beta": Param(0.02, help="temperature of the oracle stop distribution q* (eq. 5.8), loss in units of mean ||x*||^2",
                      type=float, gt=0),
        "layer_cost": Param(0.0, help="prior p(t) ∝ exp(-layer_cost t / beta) (thesis 5.3.4): the loss drop a layer must "
                                      "buy to be run, units of mean ||x*||^2; 0: uniform prior (the thesis's runs)",
                            type=float, ge=0),
        "warm_start": Param(False, help="train the network as LISTA first and start stage I from there (the authors "
                                        "start from ISTA)", type=bool),
        "lr": Param(1e-3, help="Adam learning rate of stage I (the LISTA network)", type=float, gt=0),
        "lam_init": Param(0.1, help="ISTA lambda used to initialise the thresholds", type=float, ge=0),
        **_UNROLLED_TRAINING,
        **_SCHEDULE,
        "policy_hidden": Param(128, help="width of the policy MLP's two hidden layers", type=int, ge=1),
        "policy_features": Param("vectors", help="policy input: vectors ([b, b - A x_t, x_t], the authors') or summary "
                                                 "(scale-free norms of the iterates, O(n))",
                                 type=str, choices=("vectors", "summary")),
        "policy_lr": Param(1e-3, help="Adam learning rate of stage II (the policy)", type=float, gt=0),
        **_STOPPING,
    },
)


_RECURRENT = {
    "n_steps": Param(20, help="number of unrolled steps T", type=int, ge=1),
    "hidden": Param(20, help="hidden size of the two coordinate-wise LSTMCell layers", type=int, ge=1),
    "preprocess": Param(True, help="log-magnitude/sign gradient preprocessing (Andrychowicz et al. app. A, p = 10)",
                        type=bool),
    "lr": Param(1e-2, help="Adam learning rate", type=float, gt=0),
    **_UNROLLED_TRAINING,
}

RNN = SolverSpec(
    name="rnn",
    factory="l2obench_plugins.rnn_optimizer:RNN",
    families=("lasso", "slr"),
    learned=True,
    description="coordinate-wise LSTM optimizer (Andrychowicz et al. 2016) reading the LASSO subgradient",
    params={
        **_RECURRENT,
        "out_scale": Param(0.1, help="step = out_scale * (RMS(A^T b) / kappa) * LSTM output, kappa = ||A||_F^2 / n",
                           type=float, gt=0),
        "lam": Param(0.1, help="l1 weight in the subgradient A^T(Ax - b) + lam sign(x) that the LSTM reads",
                     type=float, ge=0),
    },
)

RNN_L1 = SolverSpec(
    name="rnn_l1",
    factory="l2obench_plugins.rnn_optimizer:RNNL1",
    families=("lasso", "slr"),
    learned=True,
    description="the LSTM optimizer followed by a learned soft-thresholding step (thesis 7.7.1)",
    params={
        **_RECURRENT,
        "out_scale": Param(0.3, help="step = out_scale * (RMS(A^T b) / kappa) * LSTM output, kappa = ||A||_F^2 / n",
                           type=float, gt=0),
        # At 0.1 (ISTA's lambda) the untrained LSTM's first steps fall under the threshold on some
        # initialisations and training never leaves x = 0 (seen at m = 125, n = 250).
        "lam_init": Param(0.03, help="initial threshold lam_init / L; learned as exp(r_t) lam_init / L",
                          type=float, gt=0),
    },
)


# Graphical-lasso penalties searched on validation (log-spaced): the SPE family's Theta* has smallest
# eigenvalue 1 and off-diagonal weights of order 0.1-1.
SPE_ALPHA_GRID = (0.01, 0.02, 0.04, 0.07, 0.13, 0.25, 0.5)

GLASSO = SolverSpec(
    name="glasso",
    factory="l2obench_plugins.glasso:GLASSO",
    families=("spe",),
    learned=False,
    description="scikit-learn's graphical lasso (Friedman et al. 2008), per instance, optional process pool",
    params={
        "alpha": Param(0.1, SPE_ALPHA_GRID, "off-diagonal l1 weight", type=float, ge=0),
        "mode": Param("cd", help="scikit-learn's inner solver: cd or lars", type=str, choices=("cd", "lars")),
        "tol": Param(1e-4, help="scikit-learn's tolerance on its duality gap", type=float, gt=0),
        "enet_tol": Param(1e-4, help="scikit-learn's tolerance of the inner lasso solves", type=float, gt=0),
        "max_iter": Param(100, help="maximum outer iterations (scikit-learn's default)", type=int, ge=1),
        "n_jobs": Param(1, help="processes solving the instances (joblib); 1: no pool", type=int, ge=1),
    },
)

GISTA = SolverSpec(
    name="gista",
    factory="l2obench_plugins.gista:GISTA",
    families=("spe",),
    learned=False,
    description="G-ISTA (Rolfs et al. 2012): proximal gradient on the graphical lasso, BB steps, backtracking, batched",
    params={
        "alpha": Param(0.1, SPE_ALPHA_GRID, "off-diagonal l1 weight", type=float, ge=0),
        "tol": Param(1e-4, help="stop an instance when its duality gap is below tol (scikit-learn's rule); 0: run max_iter "
                                 "(an instance still stops at its dtype's precision)", type=float, ge=0),
        # G-ISTA's linear rate degrades with the condition number of the estimate: on 100 graphical
        # lassos of scikit-learn's make_sparse_spd_matrix (d = 40, alpha = 0.9, M = 80, alpha_pen = 0.1)
        # 1000 iterations met tol on 66 (cond(Theta*) median 115 on the others, 64 on those), 10000 on all.
        "max_iter": Param(10000, help="maximum iterations", type=int, ge=1),
        "shrink": Param(0.5, help="backtracking factor of the step size", type=float, gt=0, lt=1),
        "max_backtrack": Param(40, help="backtracking steps before an instance counts as stalled (converged to its precision)",
                               type=int, ge=1),
    },
)

COVSEL_ADMM = SolverSpec(
    name="covsel_admm",
    factory="l2obench_plugins.covsel_admm:CovselADMM",
    families=("spe",),
    learned=False,
    description="covariance-selection ADMM (Boyd et al. 2011, section 6.5), eigh X-updates, over-relaxation, batched",
    params={
        "alpha": Param(0.1, SPE_ALPHA_GRID, "off-diagonal l1 weight", type=float, ge=0),
        "rho": Param(0.1, help="augmented-Lagrangian penalty (0.1: fewest iterations on SPE d = 30 over alpha 0.02-0.25)",
                     type=float, gt=0),
        "relax": Param(1.6, help="over-relaxation factor (1.5-1.8 recommended)", type=float, gt=0, lt=2),
        "max_iter": Param(1000, help="maximum iterations", type=int, ge=1),
        "tol": Param(1e-4, help="stop an instance when its relative primal and dual residuals are below tol; 0: run max_iter",
                     type=float, ge=0),
    },
)

# APF's target lambda (log-spaced, one grid for both families): measured best on validation near
# 0.1 with MCP/SCAD on SLR (d = 128, 20 dB) and SPE (d = 50, M = 100); l1 near 0.02-0.05. The
# penalty is tuned too: at M = d (SPE, d = M = 20) MCP and SCAD, which stop shrinking large entries,
# are 7-20 dB worse than l1 at every lambda below 0.5 (the near-singular S is barely regularised).
APF_LAMBDA_GRID = (0.02, 0.04, 0.07, 0.13, 0.25, 0.5)

APF = SolverSpec(
    name="apf",
    factory="l2obench_plugins.apf:APF",
    families=("slr", "spe"),
    learned=False,
    description="approximate path following (Wang-Liu-Zhang 2014, thesis 7.3.1): decreasing lambda, "
                "proximal-gradient blocks with MCP/SCAD, line search; batched",
    params={
        "lam": Param(0.1, APF_LAMBDA_GRID, "target lambda of the last stage (SPE: off-diagonal entries only)",
                     type=float, gt=0),
        "penalty": Param("mcp", ("mcp", "scad", "l1"),
                         "mcp (gamma = 3), scad (a = 3.7) or l1 (the LASSO / graphical lasso path)",
                         type=str, choices=("mcp", "scad", "l1")),
        "eta": Param(0.9, help="stage ratio lambda_t = eta lambda_{t-1} (the paper's [0.9, 1))",
                     type=float, gt=0, lt=1),
        "max_iter": Param(3000, help="maximum proximal steps per instance over all stages", type=int, ge=1),
        "tol": Param(1e-4, help="the target stage stops when its stationarity measure is below tol * lam "
                                "(intermediate stages: lambda_t / 4); 0: run max_iter", type=float, ge=0),
    },
)

# PLISA's sizes per family. lambda*: absolute for SLR (unit-norm columns), in units of
# (log d / M)^{1/2} for SPE. Blocks x layers: on SLR (d = 128, s = 8) 100 layers come within
# 0.3 dB of least squares on the true support (-27.9 against -28.2 dB), 50 are 1.2 dB short and
# train in half the time; on SPE (d = 20, M = 20) 50 layers gain nothing over 20 and cost 2.5
# times as much.
PLISA = SolverSpec(
    name="plisa",
    factory="l2obench_plugins.plisa:PLISA",
    families=("slr", "spe"),
    learned=True,
    description="PLISA (thesis ch. 7, Algorithms 5-6): unrolled path following, T blocks of K modified proximal "
                "steps, learned element-wise lambda schedule, l1/MCP/SCAD mixture and step sizes",
    params={
        "n_blocks": Param(None, help="number of blocks T (lambda_t = max(sigmoid(eta) lambda_{t-1}, lambda*))",
                          type=int, ge=1, nullable=False, family_defaults={"slr": 20, "spe": 5}),
        "n_layers": Param(None, help="modified proximal-gradient layers K per block (SLR: 100 layers in all come "
                                     "within 0.3 dB of least squares on the true support; SPE: no gain beyond 20)",
                          type=int, ge=1, nullable=False, family_defaults={"slr": 5, "spe": 4}),
        "gamma": Param(0.9, help="block-loss discount of eq. 7.7: loss = sum_t gamma^(T-t) loss(beta_t)",
                       type=float, ge=0, le=1),
        "lr": Param(3e-2, help="Adam learning rate", type=float, gt=0),
        "lam_init": Param(None, help="initial lambda* (SLR: absolute, unit-norm columns; SPE: in units of "
                                     "sqrt(log d / M))", type=float, gt=0, nullable=False,
                          family_defaults={"slr": 0.05, "spe": 0.5}),
        "decay_init": Param(0.5, help="initial decay ratio sigmoid(eta) of the lambda sequence",
                            type=float, gt=0, lt=1),
        "step_init": Param(1.0, help="initial step per block, in units of 1/||A||_2^2 (SLR) or "
                                     "lambda_min(Theta)^2 (SPE); below max_step", type=float, gt=0),
        "max_step": Param(8.0, help="bound on the learned steps, same units (max_step * sigmoid(logit)); "
                                    "SLR steps beyond 2 are kept stable by the safeguard (see plisa.py)",
                          type=float, gt=0),
        "lam0": Param("max", help="lambda_0: max (||grad L(0)||_inf for every entry, APF's start) or abs "
                                  "(|grad L(0)| element-wise, Algorithm 5 read literally)",
                      type=str, choices=("max", "abs")),
        "rho_init": Param(1.0, help="SPE: initial ridge of Theta_0 = (S + rho I)^{-1} (rho is learned)",
                          type=float, gt=0),
        "fresh_samples": Param(True, help="draw fresh training instances each step (else iterate the train split)",
                               type=bool),
    },
)

GLAD = SolverSpec(
    name="glad",
    factory="l2obench_plugins.glad:GLAD",
    families=("spe",),
    learned=True,
    description="GLAD (thesis ch. 6, Algorithm 4): K unrolled alternating-minimisation steps with entry-wise "
                "thresholds rho_nn and coupling Lambda_nn (tiny MLPs shared by the layers), learned shift t",
    params={
        "n_layers": Param(15, help="number of unrolled AM steps K", type=int, ge=1),
        "hidden": Param(3, help="hidden width of rho_nn (two tanh layers) and Lambda_nn (one)", type=int, ge=1),
        "t_init": Param(0.1, help="initial shift t of Theta_0 = (S + t I)^{-1} (learned)", type=float, gt=0),
        "lambda_init": Param(1.0, help="lambda_0, fed to Lambda_nn at the first layer", type=float, gt=0),
        "threshold_diagonal": Param(True, help="soft-threshold Z's diagonal too (eq. 6.2's ||Z||_1)", type=bool),
        "output": Param("z", help="z: layers output the sparse Z_k (the authors' code; edge metrics meaningful); "
                                  "theta: the positive-definite Theta_k (eq. 6.5 read literally; dense)",
                        type=str, choices=("z", "theta")),
        "lr": Param(3e-2, help="Adam learning rate", type=float, gt=0),
        "gamma": Param(0.9, help="layer-loss discount of eq. 6.5: loss = sum_k gamma^(K-k) ||out_k - Theta*||_F^2",
                       type=float, ge=0, le=1),
        "fresh_samples": Param(True, help="draw fresh training instances each step (else iterate the train split)",
                               type=bool),
    },
)

# Algorithm layers on quadratic energies (thesis chapter 4). Steps in units of 1 / lambda_max(Q);
# GD's grid reaches towards 2 (where it stops converging), NAG's towards 4 L / (mu + 3 L) > 1.25
# (its stable region, thesis Table 4.1): with k fixed, a longer step can win on validation.
_K = Param(10, help="number of steps k (each k a separately trained or tuned model, thesis 4.7)", type=int, ge=1)
QUADRATIC_STEP_GRIDS = {"gd": (0.25, 0.5, 1.0, 1.5, 1.8, 1.95), "nag": (0.25, 0.5, 0.75, 1.0, 1.25)}


def _quadratic_spec(name: str, cls: str, description: str, learned: bool, params: dict) -> SolverSpec:
    return SolverSpec(name=name, factory=f"l2obench_plugins.algorithm_layers:{cls}", families=("quadratic",),
                      learned=learned, description=description, params=params)


def _stepped(name: str) -> dict:
    return {"k": _K, "step": Param(1.0, QUADRATIC_STEP_GRIDS[name], "step size in units of 1 / lambda_max(Q)",
                                   type=float, gt=0, lt=2)}


GD = _quadratic_spec("gd", "GD", "gradient descent on 0.5 y^T Q y + b^T y from 0, k steps (thesis eq. 4.9); "
                                 "mode = given", False, _stepped("gd"))
NAG = _quadratic_spec("nag", "NAG", "Nesterov's accelerated gradient from 0, k steps, momentum from lambda_min(Q) "
                                    "(thesis eq. 4.9); mode = given", False, _stepped("nag"))

_LAYER = {
    "k": _K,
    "hidden": Param(16, help="hidden size of the neural module Q_theta, the architecture of Q* (thesis 0, 16, 32: "
                             "under-, about right, over-parameterized; 0 = linear); unused in given mode",
                    type=int, ge=0),
    "step_init": Param(1.0, help="initial step in units of 1/L (RNN: of the GD step its cell starts as); GD/NAG "
                                 "keep phi = phi_max sigmoid(r) in the stable region of thesis Table 4.1",
                       type=float, gt=0),
    "lr": Param([1e-2, 1e-3], help="Adam learning rate, or a list: one run each from the same start, the best on "
                                   "validation kept (thesis grid: 1e-2, 5e-3, 1e-3, 5e-4, 1e-4)",
                type=float, gt=0, many=True),
    "optimizer": Param("adam", help="adam or sgd, or a list: one run per optimizer and learning rate, the best on "
                                     "validation kept (the thesis tries both)", type=str, choices=("adam", "sgd"),
                       many=True),
    "select": Param("train", help="state kept within a run: train (lowest training loss, thesis 4.7) or val "
                                  "(lowest validation loss: early stopping)", type=str, choices=("train", "val")),
    "fresh_samples": Param(False, help="fresh training pairs each step (else iterate the n training pairs, "
                                       "whose generalization gap the thesis studies)", type=bool),
}
_LEARN_STEP = {"learn_step": Param(True, help="learn the step phi (else it stays at step_init / L)", type=bool)}

GD_LAYER = _quadratic_spec(
    "gd_layer", "GDLayer", "GD^k_phi(Q_theta(x), b): k GD steps on a learned neural energy, learned step "
                           "(thesis 4.3, 4.7)", True, {**_LAYER, **_LEARN_STEP})
NAG_LAYER = _quadratic_spec(
    "nag_layer", "NAGLayer", "NAG^k_phi(Q_theta(x), b): k Nesterov steps on a learned neural energy, learned step "
                             "(thesis 4.7)", True, {**_LAYER, **_LEARN_STEP})
RNN_LAYER = _quadratic_spec(
    "rnn_layer", "RNNLayer", "RNN^k_phi: the ReLU-MLP cell of thesis eq. 4.18 on (y, Qy + b), unrolled k times; "
                             "hybrid or given", True, {
        **_LAYER,
        "rnn_width": Param(None, help="width of the cell's ReLU layers; null: 2d", type=int, ge=1),
        "rnn_depth": Param(2, help="ReLU layers of the cell (L in eq. 4.18)", type=int, ge=1),
        "rnn_init": Param("gd", help="gd: the cell starts as a GD step (width >= 2d); random: PyTorch's init",
                          type=str, choices=("gd", "random")),
    })


# Classical denoisers of the denoising family (thesis 5.5.3), non-blind by default: thresholds and
# weights are multiples of each image's noise level sigma, the multiple tuned on validation.
_NOISE_LEVEL = Param("given", help="given: read the instance's sigma (non-blind, as BM3D in thesis 5.5.3); "
                                   "estimated: estimate it from the noisy image (blind; extras['sigma'])",
                     type=str, choices=("given", "estimated"))


_LEVEL_EDGES = Param([20.0, 30.0, 40.0, 50.0], help="tune separately on validation images whose sigma (x 255) "
                                                   "falls between these edges (bins around the test levels "
                                                   "15 .. 55); []: one tuning for all levels",
                     type=float, many=True, ge=0)


def _denoiser_spec(name: str, cls: str, description: str, params: dict) -> SolverSpec:
    return SolverSpec(name=name, factory=f"l2obench_plugins.denoisers:{cls}", families=("denoising",),
                      learned=False, description=description,
                      params={**params, "noise_level": _NOISE_LEVEL, "level_edges": _LEVEL_EDGES})


WAVELET = _denoiser_spec(
    "wavelet", "WaveletDenoiser", "soft-thresholding of orthogonal wavelet coefficients at tau sigma (PyWavelets; "
                                  "closed form), optional cycle spinning", {
        "tau": Param(1.5, (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0), "threshold in units of the noise level sigma",
                     type=float, ge=0),
        "wavelet": Param("db4", help="orthogonal wavelet (PyWavelets name)", type=str,
                         choices=("haar", "db2", "db4", "db8", "sym4", "sym8", "coif2")),
        "levels": Param(4, help="decomposition levels (at most what the image size allows)", type=int, ge=1),
        "mode": Param("periodization", help="signal extension: periodization (orthonormal transform: the exact "
                                            "closed form) or symmetric (scikit-image's default)",
                      type=str, choices=("periodization", "symmetric")),
        "shifts": Param(1, help="cycle spinning: average over shifts x shifts circular shifts (1: none)",
                        type=int, ge=1),
    })
TV = _denoiser_spec(
    "tv", "TVDenoiser", "total-variation denoising, scikit-image's Chambolle algorithm, weight w sigma", {
        "weight": Param(1.0, (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0), "TV weight in units of the noise level sigma",
                        type=float, gt=0),
        "eps": Param(2e-4, help="Chambolle's stopping tolerance (scikit-image's default)", type=float, gt=0),
        "max_iter": Param(200, help="maximum Chambolle iterations (scikit-image's default)", type=int, ge=1),
    })
BM3D = _denoiser_spec(
    "bm3d", "BM3DDenoiser", "BM3D (Makinen, Azzari & Foi; the bm3d package), sigma_psd = sigma", {
        "sigma_scale": Param(1.0, help="sigma_psd in units of the noise level sigma", type=float, gt=0),
        "profile": Param("np", help="bm3d's parameter profile", type=str, choices=("np", "refilter", "vn", "high")),
        "threads": Param(1, help="bm3d's own threads per image (0: automatic; != 1 may change the last digits)",
                         type=int, ge=0),
    })


# DnCNN (Zhang et al. 2017; thesis 5.5.3): blind, residual. The paper's network is 17 layers (20 in
# the thesis's DnCNN-stop) of 64 channels trained on 40 x 40 / 50 x 50 patches; the defaults are a
# size that trains on a 2-core CPU in minutes (suites set the paper's).
_DNCNN = {
    "n_layers": Param(8, help="layers: conv + ReLU, n_layers - 2 x (conv + batch norm + ReLU), conv (paper: 17 "
                              "or 20)", type=int, ge=3),
    "width": Param(32, help="channels of the hidden layers (paper: 64)", type=int, ge=1),
    "lr": Param(1e-3, help="Adam learning rate", type=float, gt=0),
    "lr_decays": Param([0.1], help="learning-rate factors of the decay stages after training at lr (each "
                                   "early-stopped); []: none", type=float, many=True, gt=0, le=1),
    "patch": Param(32, help="train on random patch x patch crops of the training images (paper: 40 or 50); "
                            "null: whole images", type=int, ge=8, nullable=True),
    "augment": Param(True, help="train under random flips and quarter turns (the paper's augmentation)",
                     type=bool),
    "fresh_samples": Param(False, help="draw fresh training images each step (else iterate the train split)",
                           type=bool),
}

DNCNN = SolverSpec(
    name="dncnn",
    factory="l2obench_plugins.dncnn:DnCNNDenoiser",
    families=("denoising",),
    learned=True,
    description="DnCNN (Zhang et al. 2017): blind residual CNN with batch norm, reads the noisy image only",
    params=_DNCNN,
)

DNCNN_STOP = SolverSpec(
    name="dncnn_stop",
    factory="l2obench_plugins.dncnn:DnCNNStop",
    families=("denoising",),
    learned=True,
    description="DnCNN with exits and a learned stopping policy (thesis 5.5.3, Table 5.6): stages I-II of LISTA-stop",
    params={
        **_DNCNN,
        "exit_every": Param(1, help="an exit (a head predicting the noise) after every exit_every-th of layers "
                                    "1 .. n_layers - 2 (the authors: 1 below 27 layers, else 2)", type=int, ge=1),
        "head": Param("block", help="exit heads: block (conv + batch norm + ReLU + conv, the authors') or conv "
                                    "(one 3 x 3 conv, cheaper)", type=str, choices=("block", "conv")),
        # The authors' tao = 10 on per-image sums of squares over 40 x 40 patches is beta = 1 / 16000 in
        # per-pixel MSE, about 2e-4 in units of the mean squared grey level (about 1/3 on dead leaves).
        "beta": Param(2e-4, help="temperature of the oracle stop distribution q* (eq. 5.8), loss in units of the "
                                 "batch's mean squared clean pixel", type=float, gt=0),
        "layer_cost": Param(0.0, help="prior p(t) ∝ exp(-layer_cost t / beta) (thesis 5.3.4): the loss drop an exit "
                                      "must buy to be run, units of the mean ||clean||^2; 0: uniform prior",
                            type=float, ge=0),
        "warm_start": Param(True, help="train the network as DnCNN first (the authors pretrain DnCNN), then stage I",
                            type=bool),
        "policy_hidden": Param(16, help="channels of the policy CNN and width of its last hidden layer", type=int,
                               ge=1),
        "head_steps": Param(200, help="after the warm start, steps training the exit heads alone at lr (deep "
                                      "supervision) before stage I's fine-tuning at lr / 10 (0: none, as the "
                                      "authors)", type=int, ge=0),
        "stage1_steps": Param(None, help="stage I steps (shared by its decay stages); null: the suite's training "
                                         "budget, as the warm start", type=int, ge=1, nullable=True),
        "policy_lr": Param(1e-2, help="Adam learning rate of stage II (the policy; the authors' 1e-3, for 100 "
                                       "epochs)", type=float, gt=0),
        **_STOPPING,
    },
)


ENERGY_DENOISER = SolverSpec(
    name="energy_denoiser",
    factory="l2obench_plugins.energy_denoiser:EnergyDenoiser",
    families=("denoising",),
    learned=True,
    description="k steps of GD or NAG on 0.5||Y + g(X) - X||^2 + 0.5 sum |f(X) Y|^2, f and g small DnCNNs "
                "(NeurIPS 2020 7.2)",
    params={
        "algorithm": Param("gd", help="the unrolled algorithm: gd or nag", type=str, choices=("gd", "nag")),
        "k": Param(12, help="unrolled steps (each k a separately trained model; the paper's figure: GD^12)",
                   type=int, ge=1),
        "f_layers": Param(4, help="layers of f's DnCNN (the paper: 2 hidden layers, 4 in all)", type=int, ge=3),
        "f_width": Param(3, help="channels of f's DnCNN (the paper: 3; 20 when over-parameterized)", type=int, ge=1),
        "g_layers": Param(4, help="layers of g's DnCNN; 0: g = 0 (the paper's under-parameterized case)",
                          type=int, ge=0),
        "g_width": Param(3, help="channels of g's DnCNN", type=int, ge=1),
        "f_max": Param(2.0, help="bound of f(X) = f_max sigmoid(DnCNN_f(X)): Hessian eigenvalues in [1, 1 + f_max^2]",
                       type=float, gt=0),
        "step_init": Param(1.0, help="initial step in units of 1/L, L = 1 + f_max^2; phi = phi_max sigmoid(r) stays "
                                     "in the stable region of thesis Table 4.1", type=float, gt=0),
        "lr": Param(1e-3, help="Adam learning rate", type=float, gt=0),
        "lr_decays": _DNCNN["lr_decays"],
        "patch": _DNCNN["patch"],
        "augment": _DNCNN["augment"],
        "fresh_samples": _DNCNN["fresh_samples"],
    },
)


@hookimpl
def l2obench_register_solvers(register):
    for spec in (ISTA, FISTA, ADMM, LISTA, ALISTA, LISTA_CPSS, LISTA_STOP, RNN, RNN_L1, GLASSO, GISTA, COVSEL_ADMM,
                 APF, PLISA, GLAD, GD, NAG, GD_LAYER, NAG_LAYER, RNN_LAYER,
                 WAVELET, TV, BM3D, DNCNN, DNCNN_STOP, ENERGY_DENOISER):
        register(spec)
