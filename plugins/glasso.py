"""GLASSO: scikit-learn's graphical lasso, one instance at a time (optionally in a process pool).

Friedman, Hastie & Tibshirani (2008) block coordinate descent as implemented
by ``sklearn.covariance.graphical_lasso`` (off-diagonal penalty), solving

    min_Theta  -logdet(Theta) + tr(S Theta) + alpha ||Theta||_{1,off}

for each instance's sample covariance ``S``. scikit-learn has no batched
solver: instances are solved one by one, split into ``n_jobs`` chunks over a
joblib (loky) process pool when ``n_jobs > 1``.

An instance on which scikit-learn raises (``FloatingPointError`` for an
ill-conditioned system, a linear-algebra error) does not stop the batch: its
estimate is ``diag(1 / S_ii)``, the graphical lasso's solution for a large
penalty and the only estimate available without solving; the instance is
flagged in ``failures_`` and counted in the fit log. That keeps its metric
finite but poor, so a failing penalty is charged for its failures on
validation rather than excluded or crashing the run.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from l2obench.contracts import FitContext, Solution
from l2obench.tuning import ClassicalSolver


def _solve_chunk(S: np.ndarray, alpha: float, mode: str, tol: float, enet_tol: float, max_iter: int):
    """Solve the instances of ``S`` ``(n, d, d)``; returns ``(precisions, n_iter, failed, converged)``."""
    from sklearn.covariance import graphical_lasso
    from sklearn.exceptions import ConvergenceWarning

    precisions = np.empty_like(S)
    n_iter = np.zeros(S.shape[0], dtype=np.int64)
    failed = np.zeros(S.shape[0], dtype=bool)
    converged = np.zeros(S.shape[0], dtype=bool)
    for i in range(S.shape[0]):
        try:
            with warnings.catch_warnings(record=True) as caught:
                # scikit-learn warns "graphical_lasso: did not converge" when its gap is above tol at max_iter.
                warnings.simplefilter("always", ConvergenceWarning)
                _, precisions[i], n_iter[i] = graphical_lasso(S[i], alpha, mode=mode, tol=tol, enet_tol=enet_tol,
                                                              max_iter=max_iter, return_n_iter=True)
            failed[i] = not np.isfinite(precisions[i]).all()
            # (the inner coordinate descent warns too, under enet_tol: not the outer loop's tolerance)
            converged[i] = not failed[i] and not any(issubclass(w.category, ConvergenceWarning)
                                                     and str(w.message).startswith("graphical_lasso")
                                                     for w in caught)
        except (FloatingPointError, ValueError, np.linalg.LinAlgError):
            failed[i] = True
        if failed[i]:
            precisions[i] = np.diag(1.0 / np.diag(S[i]))
    return precisions, n_iter, failed, converged


def graphical_lasso_batch(S: torch.Tensor, alpha: float, mode: str = "cd", tol: float = 1e-4,
                          enet_tol: float = 1e-4, max_iter: int = 100, n_jobs: int = 1):
    """scikit-learn's ``graphical_lasso`` on every instance of ``S`` ``(N, d, d)``.

    Parameters
    ----------
    S : torch.Tensor
        Sample covariances; solved in float64 on the CPU.
    alpha, mode, tol, enet_tol, max_iter
        Passed to ``sklearn.covariance.graphical_lasso``.
    n_jobs : int
        Processes of the joblib pool; the instances are cut into ``n_jobs``
        contiguous chunks (one task each). ``1``: no pool.

    Returns
    -------
    precision : torch.Tensor
        ``(N, d, d)`` in ``S``'s dtype and device; ``diag(1 / S_ii)`` where
        scikit-learn failed.
    n_iter : torch.Tensor
        ``(N,)`` iterations scikit-learn used (0 where it failed).
    failed : torch.Tensor
        ``(N,)`` bool, True where scikit-learn raised or returned non-finite values.
    converged : torch.Tensor
        ``(N,)`` bool, True where scikit-learn met ``tol`` (it did not warn of non-convergence).
    """
    S_np = S.detach().to("cpu", torch.float64).numpy()
    args = (float(alpha), mode, tol, enet_tol, max_iter)
    if n_jobs == 1 or S_np.shape[0] < 2:
        precision, n_iter, failed, converged = _solve_chunk(S_np, *args)
    else:
        from joblib import Parallel, delayed

        chunks = [c for c in np.array_split(S_np, n_jobs) if len(c)]
        parts = Parallel(n_jobs=len(chunks))(delayed(_solve_chunk)(c, *args) for c in chunks)
        precision, n_iter, failed, converged = (np.concatenate(p) for p in zip(*parts))
    n_iter = np.where(failed, 0, n_iter)
    as_tensor = lambda a: torch.from_numpy(a).to(S.device)  # noqa: E731
    return as_tensor(precision).to(S.dtype), as_tensor(n_iter), as_tensor(failed), as_tensor(converged)


class GLASSO(ClassicalSolver):
    """scikit-learn's graphical lasso (block coordinate descent), per instance.

    Hyper-parameters (see ``l2obench list``): ``alpha`` (penalty), ``mode``
    (``"cd"`` or ``"lars"``), ``tol`` (scikit-learn's duality-gap tolerance),
    ``enet_tol``, ``max_iter``, ``n_jobs`` (processes).

    Attributes set by ``solve``: ``failures_``, the ``(N,)`` bool mask of
    instances where scikit-learn failed (estimate ``diag(1 / S_ii)``).
    Attributes set by ``fit``: ``failures_log_``, ``[{"alpha", "failures",
    "not_converged"}]`` for each validation solve, also stored in the fit
    log under ``"glasso_failures"``.
    """

    def solve(self, observation, trajectory=False) -> Solution:
        precision, n_iter, failed, converged = graphical_lasso_batch(
            observation["S"], self.alpha, self.mode, self.tol, self.enet_tol, self.max_iter, self.n_jobs)
        self.failures_ = failed
        if getattr(self, "_recording", None) is not None:
            self._recording.append({"alpha": self.alpha, "failures": int(failed.sum()),
                                    "not_converged": int((~converged).sum())})
        return Solution(precision, None, n_iter, converged=converged)

    def fit(self, context: FitContext) -> "GLASSO":
        self._recording = []
        try:
            super().fit(context)
        finally:
            self.failures_log_, self._recording = self._recording, None
        context.log["glasso_failures"] = self.failures_log_
        return self
