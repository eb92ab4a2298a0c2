"""Definitions of the built-in suites, in the structure of a suite file.

Each problem and solver entry may carry ``scales``: overrides merged into its
``settings`` / ``params`` at that scale. ``paper`` follows the seed documents'
sizes (thesis section 5.5.1); ``small`` fits a 2-core CPU (see the README for the measured time of ``sparse``).
"""
from __future__ import annotations

# ISTA/FISTA at T = 20 and T = 100 as in thesis Table 5.2; lambda (and ISTA's
# step) tuned on validation. tol = 0 runs exactly max_iter iterations.
_LASSO_ONLY = ["lasso"]
_CLASSICAL = [
    {"solver": "ista", "label": "ISTA (T=20)", "params": {"max_iter": 20, "tol": 0.0}, "problems": _LASSO_ONLY},
    {"solver": "fista", "label": "FISTA (T=20)", "params": {"max_iter": 20, "tol": 0.0}, "problems": _LASSO_ONLY},
    {"solver": "ista", "label": "ISTA (T=100)", "params": {"max_iter": 100, "tol": 0.0}, "problems": _LASSO_ONLY},
    {"solver": "fista", "label": "FISTA (T=100)", "params": {"max_iter": 100, "tol": 0.0}, "problems": _LASSO_ONLY},
    {"solver": "ista", "label": "ISTA (converged)", "params": {"max_iter": 5000, "tol": 1e-4}, "problems": ["slr"]},
    # Converged FISTA is the LASSO solution itself, on fixed and on per-instance designs.
    {"solver": "fista", "label": "FISTA (converged)", "params": {"max_iter": 2000, "tol": 1e-4}},
    {"solver": "admm", "label": "ADMM (T=100)", "params": {"max_iter": 100, "tol": 0.0}, "problems": _LASSO_ONLY},
]

# Sparse precision estimation: the graphical lasso by scikit-learn (per instance) and by
# two batched solvers, each run to convergence with alpha tuned on validation.
_GRAPHICAL = [
    {"solver": "glasso", "label": "GLASSO"},
    {"solver": "gista", "label": "G-ISTA"},
    {"solver": "covsel_admm", "label": "ADMM (covsel)"},
]
# APF (thesis 7.3.1) on SLR and SPE; the target lambda and the penalty (MCP, SCAD or l1) tuned.
# At the small scale at most 1000 steps: the tuned points converge in fewer (SLR 35 on average,
# SPE 60), and the MCP / SCAD points that fail at M = d no longer run 3000 (measured: APF's
# tuning on spe-er 108 s -> 48 s, the same test NMSE on all three problems).
_APF = {"solver": "apf", "label": "APF", "scales": {"small": {"max_iter": 1000}}}
# GLAD and PLISA train on batches of 32 fresh instances at the small scale (about a minute
# on a 2-core CPU at d = 20; batches of 128 are no better there and four times slower).
_SMALL_BATCHES = {"scales": {"smoke": {"steps": 60, "batch_size": 16, "eval_every": 20, "patience": 3},
                             "small": {"steps": 1000, "batch_size": 32, "eval_every": 50, "patience": 5}}}
_GLAD = {"solver": "glad", "label": "GLAD", "budget": _SMALL_BATCHES}
_PLISA = {"solver": "plisa", "label": "PLISA", "budget": _SMALL_BATCHES}

# The unrolled LASSO networks train layer by layer (their authors' schedule, the solvers'
# default) at the paper scale; at the smoke and small scales, whose budgets are hundreds to
# a few thousand steps, all layers train jointly on the layer-weighted loss (60 progressive
# stages of T = 20 would get a handful of steps each), both with the lr decay stages. On
# l2s-kappa5 at m = 250 the decay stages are what count: joint LISTA -14.1 dB after lr 1e-3,
# -19.5 after lr 2e-4, -21.3 after lr 2e-5 (3000 steps a stage at most); progressive LISTA
# with 200 steps a stage and no decay of the layer's own stage -14.3.
_JOINT = {"smoke": {"schedule": "joint"}, "small": {"schedule": "joint"}}
_LISTA = {"solver": "lista", "label": "LISTA (T=20)", "params": {"n_layers": 20}, "scales": _JOINT}
# LISTA-stop trains as its authors do (stage I from ISTA) in the l2s suite; at this suite's small
# budget stage I alone is short (1500 steps: -14.2 dB on l2s-kappa5, its best layers spread over
# 11-18), so here it starts from LISTA trained on the same budget, whose last layer is then the
# best on nearly every instance (the policy runs all 20 layers).
_LISTA_STOP = {"solver": "lista_stop", "label": "LISTA-stop (T<=20)", "params": {"n_layers": 20},
               "scales": {"smoke": _JOINT["smoke"],
                          "small": {**_JOINT["small"], "policy_steps": 300, "warm_start": True}}}
# The coordinate-wise LSTM runs on every coordinate of every instance (N n rows): on a
# CPU it trains on smaller batches, for fewer steps, than the unrolled networks. RNN-l1
# gets 600 steps at the small scale: its thresholds hold x at 0 for the first steps of
# training, and after 300 it was still above FISTA (T=20) on l2s-kappa5 (-9.5 dB; -18.5 at 600).
# On the LASSO problems they run at the smoke and paper scales only: at the small scale's
# m = 250, n = 500 the two took 5.3 of the run's 22.6 minutes (fits 94 s and 181 s, -17.00 and
# -20.50 dB on l2s-kappa5, measured 2026-12-01) and are not rows of thesis Table 5.2; on
# regression (the thesis's 7.7.1 baselines) they run at every scale.
_RNN_BUDGET = {"scales": {"smoke": {"steps": 100, "batch_size": 16, "eval_every": 25}}}
_RNNS = [{"solver": solver, "label": f"{label} (T=20)", "params": {"n_steps": 20}, "problems": problems,
          "budget": {"scales": {**_RNN_BUDGET["scales"],
                                "small": {"steps": small_steps, "batch_size": 16, "eval_every": 50}}},
          **({"only_scales": ["smoke", "paper"]} if problems == _LASSO_ONLY else {})}
         for solver, label, small_steps in (("rnn", "RNN", 300), ("rnn_l1", "RNN-l1", 600))
         for problems in (_LASSO_ONLY, ["slr"])]
_ALISTA = [{"solver": "alista", "label": "ALISTA (T=16)", "params": {"n_layers": 16}, "scales": _JOINT},
           {"solver": "lista_cpss", "label": "LISTA-CPSS (T=16)", "params": {"n_layers": 16}, "scales": _JOINT}]

_SOLVERS = _CLASSICAL + [_LISTA, *_ALISTA, _LISTA_STOP, *_RNNS, *_GRAPHICAL, _APF, _GLAD, _PLISA]

# Quadratic energies (thesis chapter 4), tiny: every algorithm layer once, the classical GD and NAG
# on the given energies (they need Q).
_QUADRATIC_TINY = {"d": 5, "m": 10, "n_train": 32, "n_val": 32, "n_test": 64, "pool": 200}
_QUADRATIC_SMOKE = [
    *({"solver": name, "label": label, "params": {"k": 5}, "problems": ["quad-given-tiny"]}
      for name, label in (("gd", "GD"), ("nag", "NAG"))),
    *({"solver": name, "label": label, "params": {"k": 3, "hidden": 4}}
      for name, label in (("gd_layer", "GD layer"), ("nag_layer", "NAG layer"), ("rnn_layer", "RNN layer"))),
]

# Image denoising (thesis 5.5.3, NeurIPS 2020 7.2): the classical denoisers, non-blind, their
# threshold / weight multiplier tuned on validation. BM3D costs about 0.35 s per image whatever its
# size (bm3d 4.0.3 on a 2-core CPU), so it stays out of the smoke suite.
_DENOISING_TINY = {"crop": 16, "n_train": 16, "n_val": 10, "n_test": 10, "n_ood": 4}
_DENOISERS = [
    {"solver": "wavelet", "label": "Wavelet (soft)"},
    {"solver": "wavelet", "label": "Wavelet (soft, cycle spinning)", "params": {"shifts": 4}},
    {"solver": "tv", "label": "TV (Chambolle)"},
]
# The learned denoisers at the smoke scale: 4 layers of 8 channels on 8 x 8 patches, 60 steps at lr 1e-2.
_DNCNN_SMOKE = {"n_layers": 4, "width": 8, "patch": 8, "lr": 1e-2}
_DNCNN_STOP_SMOKE = {**_DNCNN_SMOKE, "policy_hidden": 4, "head_steps": 10, "stage1_steps": 10, "policy_steps": 10}
_DENOISING_SMOKE_BUDGET = {"steps": 60, "batch_size": 8, "eval_every": 20, "patience": 2}
_LEARNED_DENOISERS_SMOKE = [
    {"solver": "dncnn", "label": "DnCNN", "params": _DNCNN_SMOKE, "budget": _DENOISING_SMOKE_BUDGET},
    {"solver": "dncnn_stop", "label": "DnCNN-stop", "params": _DNCNN_STOP_SMOKE, "budget": _DENOISING_SMOKE_BUDGET},
]

SMOKE = {
    "description": "tiny LASSO, SLR, SPE, quadratic and denoising problems; every solver of the sparse and "
                   "quadratic suites and the fast denoisers, seconds in all",
    "default_scale": "smoke",  # "l2obench run --suite smoke": the seconds-long run its name promises
    "seeds": {"smoke": [0], "small": [0], "paper": [0]},
    "budget": {"steps": 300, "batch_size": 64, "eval_every": 50, "patience": 4},
    "problems": [
        {"family": "lasso", "label": "cs-tiny",
         "settings": {"m": 20, "n": 40, "p": 0.1, "snr": [20, 30, 40],
                      "n_train": 384, "n_val": 96, "n_test": 96}},
        {"family": "slr", "label": "slr-tiny",
         "settings": {"d": 32, "s": 3, "n_samples": [20, 28], "snr": 20, "n_train": 64, "n_val": 48, "n_test": 64}},
        {"family": "spe", "label": "spe-tiny",
         "settings": {"d": 8, "M": 20, "n_train": 32, "n_val": 24, "n_test": 32}},
        {"family": "quadratic", "label": "quad-tiny", "settings": {**_QUADRATIC_TINY, "mode": "hybrid"}},
        {"family": "quadratic", "label": "quad-given-tiny", "settings": {**_QUADRATIC_TINY, "mode": "given"}},
        {"family": "denoising", "label": "den-tiny", "settings": _DENOISING_TINY},
    ],
    "solvers": _SOLVERS + _QUADRATIC_SMOKE + _DENOISERS + _LEARNED_DENOISERS_SMOKE,
}

SPARSE = {
    "description": "sparse estimation, classical vs learned: LASSO (thesis 5.5.1, Table 5.2), sparse linear "
                   "regression and sparse precision estimation (thesis 6.5, 7.7.1)",
    # One seed at the small scale keeps the default run near a quarter of an hour on a
    # 2-core CPU; `--seeds 0,1` adds the spread over seeds (and doubles the time).
    "seeds": {"smoke": [0], "small": [0], "paper": [0, 1, 2]},
    "budget": {
        "steps": 50000, "batch_size": 512, "eval_every": 500, "patience": 10,
        "scales": {
            "smoke": {"steps": 300, "batch_size": 64, "eval_every": 50, "patience": 4},
            # Shared by the lr decay stages (500 steps each for the unrolled LASSO networks). Measured
            # on l2s-kappa5 (m = 250, n = 500), joint schedule, one thread: LISTA -17.25 dB (146 s),
            # ALISTA -22.58 (62 s), LISTA-CPSS -24.90 (107 s).
            "small": {"steps": 1500, "batch_size": 128, "eval_every": 50, "patience": 4},
        },
    },
    "problems": [
        # The foundation's setting: i.i.d. Gaussian A (LISTA-CPSS / ALISTA style), SNR mixed.
        {"family": "lasso", "label": "cs-mixed",
         "settings": {"m": 250, "n": 500, "p": 0.1, "snr": [20, 30, 40],
                      "n_train": 30000, "n_val": 3000, "n_test": 3000},
         "scales": {"smoke": {"m": 20, "n": 40, "n_train": 384, "n_val": 96, "n_test": 96}},
         "only_scales": ["smoke", "paper"]},
        # The learning-to-stop setting (thesis 5.5.1, Table 5.2): condition number 5, SNR mixed,
        # 1000 validation and test instances per level; tested out of distribution at 10 and 50 dB.
        {"family": "lasso", "label": "l2s-kappa5",
         "settings": {"m": 250, "n": 500, "p": 0.1, "snr": [20, 30, 40], "condition_number": 5.0,
                      "n_train": 30000, "n_val": 3000, "n_test": 3000, "ood": {"snr": [10, 50]}},
         "scales": {
             # The thesis's size; 500 test instances per SNR level (the thesis: 1000).
             "small": {"n_train": 900, "n_val": 300, "n_test": 1500, "n_ood": 600},
         },
         "only_scales": ["small", "paper"]},
        # The well-conditioned LISTA-CPSS / ALISTA setting, noiseless and at 20 dB.
        {"family": "lasso", "label": "cpss-noiseless",
         "settings": {"m": 250, "n": 500, "p": 0.1, "snr": [float("inf")], "condition_number": 1.0,
                      "n_train": 30000, "n_val": 1000, "n_test": 1000},
         "only_scales": ["paper"]},
        {"family": "lasso", "label": "cpss-snr20",
         "settings": {"m": 250, "n": 500, "p": 0.1, "snr": [20], "condition_number": 1.0,
                      "n_train": 30000, "n_val": 1000, "n_test": 1000},
         "only_scales": ["paper"]},
        # Sparse linear regression (thesis 7.7.1): a correlated design of its own per instance,
        # 2000 training and 100 test problems at d = 256 and 1024.
        {"family": "slr", "label": "slr",
         "settings": {"d": 256, "s": 16, "n_samples": [96, 160], "snr": 20,
                      "n_train": 2000, "n_val": 100, "n_test": 100},
         "scales": {"smoke": {"d": 32, "s": 3, "n_samples": [20, 28], "n_train": 64, "n_val": 48, "n_test": 64},
                    # 2000 training problems as in the thesis: ALISTA iterates them (each design's
                    # analytic weight computed once): -22.48 dB against -19.56 with 300, -22.11 with
                    # fresh designs at every step (one-off runs, 1500 steps).
                    "small": {"d": 128, "s": 8, "n_samples": [48, 80], "n_train": 2000, "n_val": 100,
                              "n_test": 300}}},
        {"family": "slr", "label": "slr-d1024",
         "settings": {"d": 1024, "s": 32, "n_samples": [256, 384], "snr": 20,
                      "n_train": 500, "n_val": 100, "n_test": 100},
         "only_scales": ["paper"]},
        # Sparse precision estimation (thesis 6.5, 7.7.1): Erdos-Renyi graphs at a small sample
        # size M, where learning should help, ...
        {"family": "spe", "label": "spe-er",
         "settings": {"d": 50, "graph": "er", "M": 50, "n_train": 1000, "n_val": 100, "n_test": 100},
         "scales": {"smoke": {"d": 8, "M": 20, "n_train": 32, "n_val": 24, "n_test": 32},
                    "small": {"d": 20, "M": 20, "n_train": 200, "n_val": 50, "n_test": 200}}},
        {"family": "spe", "label": "spe-er-d100",
         "settings": {"d": 100, "graph": "er", "M": 100, "n_train": 1000, "n_val": 100, "n_test": 100},
         "only_scales": ["paper"]},
        # ... and the sample-complexity sweep of thesis Figure 6.2 on grid graphs: every split
        # holds the M levels in equal numbers, metrics are reported per level (M=..).
        {"family": "spe", "label": "spe-grid-sweep",
         "settings": {"d": 36, "graph": "grid", "M": [10, 40, 160, 640, 2560],
                      "n_train": 1000, "n_val": 100, "n_test": 500},
         "scales": {"small": {"d": 16, "M": [20, 80, 320, 1280], "n_train": 200, "n_val": 40,
                              "n_test": 200}},
         "only_scales": ["small", "paper"]},
    ],
    "solvers": _SOLVERS,
}

# Thesis Table 5.2 and Figure 5.4 (learning to stop) with the training the learned rows need on a
# CPU: the small scale of this suite took 18 min 49 s on 2 cores (2026-12-01), the lr decay
# stages getting 3000 steps each. Measured on l2s-kappa5 (m = 250, n = 500): joint LISTA -21.3 dB
# with 3000 / 1600 / 2600 steps at lr 1e-3 / 2e-4 / 2e-5, against -17.3 with the sparse suite's
# 500 a stage.
# LISTA-stop as its authors train it (stage I from ISTA, not from a trained LISTA), with the depth
# prior of thesis 5.3.4 and a policy on scale-free summaries of the iterates. Measured on
# l2s-kappa5 (3000 test instances, stage I 9000 steps, 2026-12-01, one-off runs): with the uniform
# prior the trained network's last layer is the best on 78-85% of instances and the policy runs
# all 20 layers (-21.49 dB, beta 0.02; -20.70 with the authors' temperature, beta 0.0056); the
# authors' policy on [b, b - A x_t, x_t] still ran all 20 layers with the prior, and made the
# solve 78% slower than the network alone (7% for the summaries); with the summaries and layer_cost
# 5e-4 / 7e-4 / 1e-3 (stage II on one stage-I network) the threshold rule stopped at 19.0 / 17.8
# / 16.6 layers on average at -21.39 / -21.10 / -20.72 dB (full depth -21.54, FISTA T=100 -20.71).
_L2S_STOP = {"layer_cost": 7e-4, "policy_features": "summary", "policy_hidden": 32}

L2S = {
    "description": "learning to stop (thesis 5.5.1, Table 5.2, Figure 5.4) with long CPU training: ISTA, FISTA, "
                   "LISTA and LISTA-stop on l2s-kappa5 at the thesis's size",
    "seeds": {"smoke": [0], "small": [0], "paper": [0, 1, 2]},
    "budget": {
        "steps": 50000, "batch_size": 512, "eval_every": 500, "patience": 10,
        "scales": {"smoke": {"steps": 60, "batch_size": 32, "eval_every": 10, "patience": 2},
                   "small": {"steps": 9000, "batch_size": 128, "eval_every": 100, "patience": 4}},
    },
    "problems": [
        {"family": "lasso", "label": "l2s-kappa5",
         "settings": {"m": 250, "n": 500, "p": 0.1, "snr": [20, 30, 40], "condition_number": 5.0,
                      "n_train": 30000, "n_val": 3000, "n_test": 3000, "ood": {"snr": [10, 50]}},
         "scales": {"smoke": {"m": 20, "n": 40, "n_train": 96, "n_val": 48, "n_test": 48, "n_ood": 48},
                    "small": {"n_train": 900, "n_val": 600, "n_test": 3000, "n_ood": 600}}},
    ],
    "solvers": [entry for entry in _CLASSICAL if entry.get("problems") == _LASSO_ONLY and "ADMM" not in entry["label"]]
    + [{**_LISTA, "scales": {"smoke": {"schedule": "joint"}, "small": {"schedule": "joint"}}},
       {**_LISTA_STOP, "params": {**_LISTA_STOP["params"], **_L2S_STOP},
        "scales": {"smoke": {"schedule": "joint"}, "small": {"schedule": "joint", "policy_steps": 1000}}}],
}

# Quadratic energies with algorithm layers (thesis 4.7, NeurIPS 2020 section 7.1): the setting of
# the authors' code (d = 5, m = 10, mu = 0.1, L = 1, n = 100 training pairs, b and x uniform on
# [-5, 5]); every k (and hidden size) is a separately trained model. Figures 4.3 (training error
# vs k, GD vs NAG), 4.4 (module error vs k) and 4.5 (generalization gap vs k at hidden sizes 0, 16,
# 32) come from the hybrid rows, NeurIPS Fig. 6 (algorithm layers vs RNN, learning to optimize)
# from the given rows. The thesis trains 50000 epochs over learning rates 1e-2 .. 1e-4 and 20
# seeds; the small scale trains 1500 steps at lr 1e-2 and at 1e-3 (Adam), keeping the run best on
# validation, one seed. With lr 1e-2 alone the RNN on given energies fit its 100 training pairs
# and blew up on test at k = 32 (test l2 error 662 against 0.17 with lr 1e-3, measured).
_PAPER_K = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 18, 20, 25, 30]  # the authors' search.sh
_K_SWEEP = {"k": [1, 2, 4, 8, 16, 32], "scales": {"smoke": {"k": [1, 3]}, "paper": {"k": _PAPER_K}}}
# Hidden sizes of Q_theta: under-parameterized (0: linear), about right (16), over (32), thesis Fig. 4.5.
_K_HIDDEN_SWEEP = {"k": [1, 2, 4, 8, 16, 32], "hidden": [0, 16, 32],
                   "scales": {"smoke": {"k": [1, 3], "hidden": [0, 16]}, "paper": {"k": _PAPER_K}}}
_THESIS_LR = {"small": {"lr": [1e-2, 1e-3]}, "paper": {"lr": [1e-2, 5e-3, 1e-3, 5e-4, 1e-4]}}
_LAYERS = (("gd_layer", "GD layer"), ("nag_layer", "NAG layer"), ("rnn_layer", "RNN layer"))

QUADRATIC = {
    "description": "algorithm layers GD, NAG and RNN on quadratic energies: hybrid models over k and hidden "
                   "sizes, learning to optimize on given energies (thesis 4.7, Figs. 4.3-4.5; NeurIPS Fig. 6)",
    "seeds": {"smoke": [0], "small": [0], "paper": list(range(20))},
    "budget": {
        "steps": 20000, "batch_size": 50, "eval_every": 100, "patience": 20,
        "scales": {"smoke": {"steps": 40, "batch_size": 16, "eval_every": 20, "patience": 2},
                   "small": {"steps": 1500, "batch_size": 50, "eval_every": 50, "patience": 10}},
    },
    "problems": [
        {"family": "quadratic", "label": "quad-hybrid", "settings": {"mode": "hybrid"},
         "scales": {"smoke": {"n_train": 32, "n_val": 64, "n_test": 256, "pool": 1000}}},
        {"family": "quadratic", "label": "quad-given", "settings": {"mode": "given"},
         "scales": {"smoke": {"n_train": 32, "n_val": 64, "n_test": 256, "pool": 1000}}},
        # Sample complexity: the same hybrid models over n (nested training sets, same test set).
        # n = 100 is quad-hybrid's own cell (hidden 16, k 4 and 16): a suite may not plan one cell
        # twice, so that point is read from the quad-hybrid rows.
        {"family": "quadratic", "label": "quad-hybrid-n", "settings": {"mode": "hybrid"},
         "sweep": {"n_train": [30, 300, 1000, 3000]}, "only_scales": ["paper"]},
    ],
    "solvers": [
        *({"solver": name, "label": label, "problems": ["quad-hybrid"], "scales": _THESIS_LR,
           "sweep": _K_HIDDEN_SWEEP}
          for name, label in _LAYERS),
        *({"solver": name, "label": label, "problems": ["quad-given"], "scales": _THESIS_LR, "sweep": _K_SWEEP}
          for name, label in _LAYERS),
        *({"solver": name, "label": label, "problems": ["quad-given"], "sweep": _K_SWEEP}
          for name, label in (("gd", "GD (tuned step)"), ("nag", "NAG (tuned step)"))),
        *({"solver": name, "label": label, "problems": ["quad-hybrid-n"], "scales": _THESIS_LR,
           "params": {"hidden": 16}, "sweep": {"k": [4, 16]}}
          for name, label in _LAYERS[:2]),
    ],
}

# Image denoising (thesis 5.5.3, Table 5.6; NeurIPS 2020 section 7.2): blind training noise
# sigma ~ U[0, 55] / 255, tests at 15-55 per level and out of distribution at 65 and 75, on
# dead leaves (synthetic, offline) with Gaussian and with locally adaptive noise, and on
# scikit-image's bundled photographs. The thesis's BSD400 / BSD68 run through source = "folder"
# in a suite file. BM3D runs on the photographs only at the small scale: 0.35-0.65 s per image
# whatever its size, its cell took 90 s of the small run's 1 min 48 s (2026-12-01, 2-core CPU,
# shared; the nine other cells 14 s, data included).
_DENOISING_SIZES = {"crop": 180, "n_train": 2000, "n_val": 120, "n_test": 340, "n_ood": 136}
_DENOISING_SCALES = {"smoke": _DENOISING_TINY,
                     "small": {"crop": 64, "n_train": 400, "n_val": 50, "n_test": 50, "n_ood": 20}}

# DnCNN and DnCNN-stop (thesis 5.5.3), blind, trained on the training split's images in random
# patches under flips and rotations; the small scale's network is 8 layers of 32 channels on
# 32 x 32 patches, the paper's 17 (DnCNN) and 20 (DnCNN-stop, the authors' final_model_cmd.sh)
# layers of 64 channels on 40 x 40 patches, batches of 128. DnCNN-stop trains the same DnCNN
# first (warm start, the budget's steps), then the exits (stage I, stage1_steps at lr / 10) and
# the policy (stage II, policy_steps); lr 2e-3 at the small scale (500 steps at 1e-3: 24.74 dB).
# Measured at the small scale (2026-12-01, one-off fits, 2-core CPU shared with other jobs, nice 19,
# one thread; 500 steps took 85 s to 158 s with the load): on dead leaves DnCNN 85 s, test PSNR
# 25.25 dB (TV 24.97, wavelet 21.40, noisy 18.08; TV and wavelet are given sigma), DnCNN-stop
# 156 s, 25.33 dB; on the photographs DnCNN 95 s, 28.35 dB, DnCNN-stop 144 s, 28.95 dB (TV 29.71,
# wavelet 26.69: behind TV, given sigma, on test photographs unlike the training ones). DnCNN-stop's
# exit heads train alone first (head_steps, 200 by default): without that, stage I's 100 steps at
# lr / 10 left exits 1-6 near the noisy input (18.2-21.4 dB on dead leaves). With it (2026-12-01,
# dead leaves, seed 0) exit 1 gives 28.5 and exit 6 30.8 dB at sigma 15 (the last output 31.0), but
# the last output is still the best on 49 of 50 test images, so the learned policy never stops
# (layer_cost 0, the authors'). A layer cost trades PSNR for depth by the oracle (1e-4 per exit: 6.7
# of 7 exits on average, -0.06 dB; 3e-4: 5.0 exits, -0.34 dB), but stage II did not learn it with
# layer_cost 2e-4 or 5e-4 in 60 or 200 steps at policy_lr 1e-2 or 5e-2 (the threshold rule never beat
# running on: the policy's stop probabilities stayed near the oracle's marginal, never above 0.5). From scratch (no warm start, stage I 400 steps at
# 1e-3, 264 s) stage I's oracle weighting made exits 1 and 3 the only good ones and the policy stopped
# at exit 1 on 47 of 50 images: solve time halved, 22.70 dB.
# Not on dead-leaves-adaptive at the small scale, so that the run stays within 15 minutes.
_LEARNED_DENOISERS = [
    {"solver": "dncnn", "label": "DnCNN", "params": {"lr": 2e-3}, "problems": ["dead-leaves", "photos"],
     "only_scales": ["small"]},
    {"solver": "dncnn", "label": "DnCNN", "params": _DNCNN_SMOKE, "budget": _DENOISING_SMOKE_BUDGET,
     "problems": ["photos"], "only_scales": ["smoke"]},
    {"solver": "dncnn", "label": "DnCNN", "params": {"n_layers": 17, "width": 64, "patch": 40},
     "only_scales": ["paper"]},
    {"solver": "dncnn_stop", "label": "DnCNN-stop", "problems": ["dead-leaves", "photos"],
     "params": {"lr": 2e-3, "stage1_steps": 100, "policy_steps": 60}, "only_scales": ["small"]},
    {"solver": "dncnn_stop", "label": "DnCNN-stop", "params": _DNCNN_STOP_SMOKE, "budget": _DENOISING_SMOKE_BUDGET,
     "problems": ["photos"], "only_scales": ["smoke"]},
    {"solver": "dncnn_stop", "label": "DnCNN-stop", "params": {"n_layers": 20, "width": 64, "patch": 40,
                                                               "stage1_steps": 10000, "policy_steps": 5000},
     "only_scales": ["paper"]},
]

# The unrolled quadratic-energy denoiser of NeurIPS 2020 section 7.2 and its Fig. 7 (generalization
# gap against k, GD and NAG, each k a separately trained model) on locally adaptive noise: f and g
# with 3 channels and 2 hidden layers (about right), g = 0 (under-parameterized), f with 20
# channels (over-parameterized). Paper scale only here (the small scale's 15 minutes go to DnCNN;
# the energy-denoising suite below runs the sweep at the small scale); at the smoke scale GD^4,
# 60 steps at lr 1e-2.
_ENERGY_SIZES = (("about right", {}), ("under", {"g_layers": 0}), ("over", {"f_width": 20}))
_ENERGY_DENOISERS = [
    {"solver": "energy_denoiser", "label": "GD^4 energy", "params": {"k": 4, "patch": 8, "lr": 1e-2},
     "budget": _DENOISING_SMOKE_BUDGET, "problems": ["photos"], "only_scales": ["smoke"]},
    *({"solver": "energy_denoiser", "label": f"{algorithm.upper()}^k energy ({size})",
       "params": {"algorithm": algorithm, "patch": 40, **params}, "sweep": {"k": [1, 2, 4, 8, 12, 16, 20]},
       "problems": ["dead-leaves-adaptive"], "only_scales": ["paper"]}
      for algorithm in ("gd", "nag") for size, params in _ENERGY_SIZES),
]

DENOISING = {
    "description": "image denoising: wavelet soft-thresholding, TV and BM3D (non-blind, tuned on validation), "
                   "DnCNN, DnCNN-stop and unrolled quadratic energies (blind, learned) on dead leaves and "
                   "photographs, PSNR / SSIM per noise level and out of distribution (thesis 5.5.3, NeurIPS 2020 7.2)",
    "seeds": {"smoke": [0], "small": [0], "paper": [0, 1, 2]},
    "budget": {
        "steps": 30000, "batch_size": 128, "eval_every": 500, "patience": 10,
        "scales": {"smoke": _DENOISING_SMOKE_BUDGET,
                   "small": {"steps": 500, "batch_size": 32, "eval_every": 50, "patience": 4}},
    },
    "problems": [
        {"family": "denoising", "label": "dead-leaves", "settings": {**_DENOISING_SIZES, "source": "dead_leaves"},
         "scales": _DENOISING_SCALES},
        {"family": "denoising", "label": "dead-leaves-adaptive",
         "settings": {**_DENOISING_SIZES, "source": "dead_leaves", "noise": "adaptive"},
         "scales": _DENOISING_SCALES, "only_scales": ["small", "paper"]},
        {"family": "denoising", "label": "photos", "settings": {**_DENOISING_SIZES, "source": "skimage"},
         "scales": _DENOISING_SCALES},
    ],
    "solvers": _DENOISERS + [
        {"solver": "bm3d", "label": "BM3D", "problems": ["photos"], "only_scales": ["small"]},
        {"solver": "bm3d", "label": "BM3D", "only_scales": ["paper"]},
    ] + _LEARNED_DENOISERS + _ENERGY_DENOISERS,
}


# NeurIPS 2020 Fig. 7 (section 7.2) on its own: the unrolled quadratic-energy denoiser, GD and NAG, each
# k a separately trained model, under-, about right and over-parameterized f and g, on locally adaptive
# noise; the generalization gap (test MSE - train MSE) against k. As in the paper, 100 training images
# (here crops); the small scale sweeps k in 1, 4, 12 (the paper's GD^12 is its figure's denoiser).
ENERGY_DENOISING = {
    "description": "unrolled quadratic-energy denoisers (GD^k, NAG^k on E_theta, NeurIPS 2020 Fig. 7): the "
                   "generalization gap against k for under-, about right and over-parameterized f and g",
    "seeds": {"smoke": [0], "small": [0, 1, 2], "paper": [0, 1, 2]},
    "budget": {
        "steps": 30000, "batch_size": 32, "eval_every": 500, "patience": 10,
        "scales": {"smoke": _DENOISING_SMOKE_BUDGET,
                   "small": {"steps": 500, "batch_size": 32, "eval_every": 50, "patience": 4}},
    },
    "problems": [
        {"family": "denoising", "label": "dead-leaves-adaptive",
         "settings": {"source": "dead_leaves", "noise": "adaptive", "crop": 180, "n_train": 100, "n_val": 20,
                      "n_test": 300, "n_ood": 60},
         "scales": {"smoke": _DENOISING_TINY,
                    "small": {"crop": 64, "n_train": 100, "n_val": 30, "n_test": 100, "n_ood": 20}}},
    ],
    "solvers": [
        {"solver": "energy_denoiser", "label": f"{algorithm.upper()}^k energy ({size})",
         "params": {"algorithm": algorithm, "patch": 40, "lr": 1e-2, **params},
         "scales": {"smoke": {"patch": 8}, "small": {"patch": 32}},
         "sweep": {"k": [1, 2, 4, 8, 12, 16, 20], "scales": {"smoke": {"k": [1, 2]}, "small": {"k": [1, 4, 12]}}}}
        for algorithm in ("gd", "nag") for size, params in _ENERGY_SIZES
    ],
}
