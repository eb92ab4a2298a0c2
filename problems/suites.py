"""Definitions of the built-in suites, in the structure of a suite file.

Each problem and solver entry may carry ``scales``: overrides merged into its
``settings`` / ``params`` at that scale. ``paper`` follows the seed documents'
sizes (thesis section 5.5.1); ``small`` fits a 2-core CPU (see the README for the measured time of ``sparse``).
"""
from __future__ import annotations

# ISTA/FISTA at T = 20 and T = 100 as in thesis Table 5.2; lambda (and ISTA's
# step) tuned on validation. tol = 0 runs exactly max_iter iterations.
_CLASSICAL = [
    {"solver": "ista", "label": "ISTA (T=20)", "params": {"max_iter": 20, "tol": 0.0}},
    {"solver": "fista", "label": "FISTA (T=20)", "params": {"max_iter": 20, "tol": 0.0}},
    {"solver": "ista", "label": "ISTA (T=100)", "params": {"max_iter": 100, "tol": 0.0}},
    {"solver": "fista", "label": "FISTA (T=100)", "params": {"max_iter": 100, "tol": 0.0}},
    {"solver": "fista", "label": "FISTA (converged)", "params": {"max_iter": 2000, "tol": 1e-4}},
    {"solver": "admm", "label": "ADMM (T=100)", "params": {"max_iter": 100, "tol": 0.0}},
]

_LISTA = {"solver": "lista", "label": "LISTA (T=20)", "params": {"n_layers": 20}}
_LISTA_STOP = {"solver": "lista_stop", "label": "LISTA-stop (T<=20)", "params": {"n_layers": 20},
               "scales": {"small": {"policy_steps": 300}}}
# The coordinate-wise LSTM runs on every coordinate of every instance (N n rows): on a
# CPU it trains on smaller batches, for fewer steps, than the unrolled networks.
_RNNS = [{"solver": solver, "label": f"{label} (T=20)", "params": {"n_steps": 20},
          "budget": {"scales": {"smoke": {"steps": 100, "batch_size": 16, "eval_every": 25},
                                "small": {"steps": 300, "batch_size": 16, "eval_every": 50}}}}
         for solver, label in (("rnn", "RNN"), ("rnn_l1", "RNN-l1"))]
_ALISTA = [{"solver": "alista", "label": "ALISTA (T=16)", "params": {"n_layers": 16}},
           {"solver": "lista_cpss", "label": "LISTA-CPSS (T=16)", "params": {"n_layers": 16}}]

SMOKE = {
    "description": "tiny LASSO problems; every solver of the sparse suite, seconds in all",
    "seeds": {"smoke": [0], "small": [0], "paper": [0]},
    "budget": {"steps": 300, "batch_size": 64, "eval_every": 50, "patience": 4},
    "problems": [
        {"family": "lasso", "label": "cs-tiny",
         "settings": {"m": 20, "n": 40, "p": 0.1, "snr": [20, 30, 40],
                      "n_train": 384, "n_val": 96, "n_test": 96}},
    ],
    "solvers": _CLASSICAL + [_LISTA, *_ALISTA, _LISTA_STOP, *_RNNS],
}

SPARSE = {
    "description": "sparse recovery (thesis 5.5.1, Table 5.2): LASSO, classical vs learned",
    "seeds": {"smoke": [0], "small": [0, 1], "paper": [0, 1, 2]},
    "budget": {
        "steps": 50000, "batch_size": 512, "eval_every": 500, "patience": 10,
        "scales": {
            "smoke": {"steps": 300, "batch_size": 64, "eval_every": 50, "patience": 4},
            "small": {"steps": 1000, "batch_size": 128, "eval_every": 100, "patience": 5},
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
             "small": {"m": 125, "n": 250, "n_train": 900, "n_val": 300, "n_test": 900, "n_ood": 600},
         },
         "only_scales": ["small", "paper"]},
        # The well-conditioned LISTA-CPSS / ALISTA setting, noiseless and at 20 dB.
        {"family": "lasso", "label": "cpss-noiseless",
         "settings": {"m": 250, "n": 500, "p": 0.1, "snr": [None], "condition_number": 1.0,
                      "n_train": 30000, "n_val": 1000, "n_test": 1000},
         "only_scales": ["paper"]},
        {"family": "lasso", "label": "cpss-snr20",
         "settings": {"m": 250, "n": 500, "p": 0.1, "snr": [20], "condition_number": 1.0,
                      "n_train": 30000, "n_val": 1000, "n_test": 1000},
         "only_scales": ["paper"]},
    ],
    "solvers": _CLASSICAL + [_LISTA, *_ALISTA, _LISTA_STOP, *_RNNS],
}
