"""Batched FISTA against scikit-learn's Lasso solving the instances one by one.

    python benchmarks/fista_vs_sklearn.py [--instances 1000] [--m 250] [--n 500] [--lams 0.05 0.22]

Draws LASSO instances from the ``lasso`` family (one fixed sensing matrix,
SNR mixed 20/30/40 dB), solves them with scikit-learn (``alpha = lam / m``,
since scikit-learn scales the data term by ``1 / n_samples``; default
``tol``) and with batched float32 FISTA, and prints both times, objectives
(float64, per instance) and the ratio, measured in the same run. Both
solvers use the same stopping rule, a duality gap of at most ``tol ||b||^2``
(scikit-learn's default ``tol = 1e-4``); the script then checks that FISTA's
objective is within 1e-4 relative of scikit-learn's on every instance (on
very small problems, m = 20, that rule alone may leave more than 1e-4).
Exit status 1 if the objective criterion fails.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from sklearn.linear_model import Lasso as SkLasso

from l2obench.hashing import generator_for
from l2obench.ops import lasso_objective
from l2obench_plugins.proximal_gradient import FISTA
from l2obench_problems.lasso import Lasso

RELATIVE = 1e-4


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--m", type=int, default=250)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--lams", type=float, nargs="+", default=[0.05, 0.22])
    parser.add_argument("--tol", type=float, default=1e-4, help="FISTA's tolerance (duality gap <= tol ||b||^2, as scikit-learn's)")
    args = parser.parse_args(argv)

    family = Lasso(m=args.m, n=args.n, p=0.1, snr=[20, 30, 40], condition_number=None,
                   n_train=0, n_val=0, n_test=args.instances)
    shared = family.draw_shared(generator_for("fista-benchmark", "shared"))
    data = family.draw(args.instances, generator_for("fista-benchmark", "test"), shared, "test")
    A, b = shared["A"], data.observed["b"]
    A_np, b_np = A.double().numpy(), b.double().numpy()
    print(f"{args.instances} LASSO instances, A {args.m} x {args.n}, torch threads {torch.get_num_threads()}")
    ok = True
    for lam in args.lams:
        sk = SkLasso(alpha=lam / args.m, fit_intercept=False, max_iter=100_000)
        start = time.perf_counter()
        x_sk = np.stack([sk.fit(A_np, b_np[i]).coef_.copy() for i in range(args.instances)])
        t_sk = time.perf_counter() - start

        fista = FISTA(lam=lam, restart=True, max_iter=20_000, tol=args.tol)
        fista.solve({"A": A, "b": b[:16]})  # warm-up
        start = time.perf_counter()
        solution = fista.solve({"A": A, "b": b})
        t_fista = time.perf_counter() - start

        A64, b64 = A.double(), b.double()
        p_sk = lasso_objective(A64, b64, torch.from_numpy(x_sk), lam)
        p_fista = lasso_objective(A64, b64, solution.estimate.double(), lam)
        excess = (p_fista - p_sk) / p_sk
        within = float((excess <= RELATIVE).double().mean())
        ok &= within == 1.0
        print(f"lam={lam}: scikit-learn {t_sk:.2f} s (one by one), FISTA {t_fista:.2f} s (batched, float32, "
              f"{solution.iterations.float().mean():.0f} iterations on average), ratio {t_sk / t_fista:.1f}x")
        print(f"  mean objective: scikit-learn {p_sk.mean():.6f}, FISTA {p_fista.mean():.6f}; "
              f"FISTA within {RELATIVE:g} relative on {within:.1%} of instances, max relative excess {excess.max():.2e}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
