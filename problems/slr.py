"""Sparse linear regression with a design of its own per instance (the ``slr`` family).

The PLISA experiments of thesis section 7.7.1 (lines ~1811-1845) recover
``beta* in R^d``, ``d in {256, 1024}``, from ``y = X beta* + e`` where every
problem has its own design ``X``. The thesis states the dimension only; the
distribution below is this module's choice, made so that the LASSO is neither
trivial nor hopeless at the default settings (``tests/test_slr.py`` checks
that scikit-learn's LASSO recovers the support far better than chance but not
exactly):

* sample count ``n_i`` uniform on the integers of ``n_samples = [lo, hi]``
  (one value: fixed), drawn per instance;
* rows of ``X`` i.i.d. ``N(0, Sigma)`` with the Toeplitz correlation
  ``Sigma_jk = rho^|j - k|`` (``rho = 0.5``, the classical correlated design
  of Tibshirani's LASSO paper), then every column scaled to unit l2 norm over
  the instance's real rows;
* ``beta*`` with exactly ``s`` non-zeros at uniformly random positions,
  magnitudes uniform on ``[beta_min, beta_max]`` and random signs: a spread
  of magnitudes, so that both the small and the large non-zeros of the
  thesis' Lemma 7.4.1 (lines ~1723-1733) occur;
* ``e ~ N(0, sigma_i^2 I)`` with ``sigma_i = rms(X beta*) * 10^(-SNR/20)``,
  the rms over the instance's observed rows, the SNR taken from a set of levels in dB that
  every split holds in equal numbers (``torch.arange(n) % len(levels)``, as
  the LASSO family does); ``null`` / ``inf``: noiseless.

Layout (the data conventions of l2obench): ``observed = {"A": (N, n_max, d),
"b": (N, n_max), "n_samples": (N,) int64}`` with rows beyond ``n_samples``
zero, so ``0.5 ||A x - b||^2`` and ``A^T A`` are those of the real rows and
every LASSO solver applies as is; ``target = {"x": beta* (N, d)}``.

Held-out samples (thesis section 7.6, eq. 7.17; Table 7.4 scores real data
by least squares on held-out samples): with ``holdout`` set (a count, or a
fraction of each instance's ``n_i`` samples, rounded half to even), that many of the
instance's samples go to ``target["A_holdout"] (N, h_max, d)``,
``target["b_holdout"] (N, h_max)`` (zero-padded; ``target["n_holdout"]``
counts the real rows) and the solver sees the other ``n_i - h_i``. Held-out
rows are scaled by the same column norms as the observed design, so the same
linear model ``b = A beta* + e`` (same ``sigma_i``) holds for them. With
``supervised = false`` the training / tuning loss is the held-out least
squares ``0.5 ||A_holdout beta - b_holdout||^2``, which needs no ``beta*``;
``evaluate`` still reports the errors against ``beta*`` (the generator knows
it) and the held-out mean squared error.

Support recovery. An estimate's support is ``{j : |beta_j| > support_tol}``,
an absolute threshold (default ``0.01``): learned solvers (an LSTM optimizer,
unrolled networks) return small non-zeros where a proximal method returns
exact zeros, so an exact-zero rule would score them as dense. The threshold
is 50 times below the smallest true non-zero (``beta_min = 0.5``) and below
the noise level of a single coefficient (``sigma_i``, the standard deviation
of ``<A_j, e>`` for a unit-norm column, about 0.03 at 20 dB), so an entry
under it carries no statistically detectable signal; an absolute rule (rather
than one relative to ``max_j |beta_j|``) also keeps a near-zero estimate from
being read as a dense support. Precision, recall and F1 pool the counts over
the split (sum of true positives over sum of predicted / true non-zeros);
precision is 0 when nothing is predicted (scikit-learn's convention).
"""
from __future__ import annotations

import math
from numbers import Integral
from typing import Any, Mapping

import torch

from l2obench.contracts import Instances, Measurement, Metric, ProblemFamily
from l2obench_problems.levels import as_levels, checked_split_sizes, level_index, per_level, snr_levels
from l2obench_problems.lasso import NMSE, NMSE_DB, nmse, snr_label, to_db

L2_ERROR = Metric("l2_error", "lower", "", "mean over instances of ||beta - beta*||_2 (thesis Fig. 7.4)")
PRECISION = Metric("support_precision", "higher", "",
                   "pooled over the split: true non-zeros found / non-zeros estimated (|beta_j| > support_tol)")
RECALL = Metric("support_recall", "higher", "", "pooled over the split: true non-zeros found / true non-zeros")
F1 = Metric("support_f1", "higher", "", "harmonic mean of support precision and recall")
HOLDOUT_MSE = Metric("holdout_mse", "lower", "",
                     "sum ||A_holdout beta - b_holdout||^2 / number of held-out samples, over the split")


def support_counts(estimate: torch.Tensor, truth: torch.Tensor, tol: float) -> tuple[float, float, float]:
    """True positives, predicted positives and actual positives, summed over everything given.

    ``estimate`` entries count as non-zero when ``|value| > tol``; ``truth``
    entries when they are exactly non-zero.
    """
    predicted = estimate.abs() > tol
    actual = truth != 0
    return (float((predicted & actual).sum()), float(predicted.sum()), float(actual.sum()))


def precision_recall_f1(tp: float, predicted: float, actual: float) -> tuple[float, float, float]:
    """Pooled precision, recall and F1 (0 where a denominator is 0)."""
    precision = tp / predicted if predicted > 0 else 0.0
    recall = tp / actual if actual > 0 else math.nan
    f1 = 2 * tp / (predicted + actual) if predicted + actual > 0 else math.nan
    return precision, recall, f1


def _holdout_count(holdout, n: torch.Tensor) -> torch.Tensor:
    """Held-out samples of instances with ``n`` samples (``holdout``: count or fraction)."""
    if isinstance(holdout, Integral) and not isinstance(holdout, bool):
        return torch.full_like(n, int(holdout))
    return torch.round(n.double() * float(holdout)).long()


class SparseLinearRegression(ProblemFamily):
    """Sparse linear regression ``y = X beta* + e`` with a design per instance.

    Settings are documented in the registration (``l2obench_problems.SLR``)
    and the distribution in this module's docstring.
    """

    metrics = {m.name: m for m in (NMSE_DB, NMSE, L2_ERROR, PRECISION, RECALL, F1, HOLDOUT_MSE)}
    primary_metric = "nmse_db"
    gap_metric = "nmse"
    version = "1"
    data_term = "least_squares"

    def __init__(self, **settings: Any):
        super().__init__(**settings)
        if int(self.d) != self.d or self.d < 1:
            raise ValueError(f"d must be a positive integer, got {self.d}")
        if int(self.s) != self.s or not 1 <= self.s <= self.d:
            raise ValueError(f"s (non-zeros of beta*) must be an integer in [1, d = {self.d}], got {self.s}")
        bounds = as_levels(self.n_samples, "n_samples", int)
        if len(bounds) == 1:
            bounds = bounds * 2
        if len(bounds) != 2 or not 1 <= bounds[0] <= bounds[1]:
            raise ValueError(f"n_samples must be a positive integer or a range [lo, hi] with 1 <= lo <= hi, "
                             f"got {self.n_samples}")
        self.n_range = tuple(bounds)
        if not 0.0 <= self.rho < 1.0:
            raise ValueError(f"rho (design correlation) must lie in [0, 1), got {self.rho}")
        if not 0.0 < self.beta_min <= self.beta_max:
            raise ValueError(f"need 0 < beta_min <= beta_max, got {self.beta_min}, {self.beta_max}")
        self.levels = snr_levels(self.snr)
        if self.support_tol < 0:
            raise ValueError(f"support_tol must be >= 0, got {self.support_tol}")
        if not isinstance(self.supervised, bool):
            raise ValueError(f"supervised must be true or false, got {self.supervised!r}")
        if self.holdout is None:
            if not self.supervised:
                raise ValueError("supervised = false needs holdout (held-out samples per instance: "
                                 "a count, or a fraction in (0, 1))")
        else:
            h = self.holdout
            is_count = isinstance(h, Integral) and not isinstance(h, bool)
            if not (is_count and h >= 1) and not (not is_count and isinstance(h, float) and 0.0 < h < 1.0):
                raise ValueError(f"holdout must be a count >= 1 or a fraction in (0, 1), got {h!r}")
            lo = torch.tensor([self.n_range[0]])
            h_lo = int(_holdout_count(h, lo))
            if h_lo < 1 or self.n_range[0] - h_lo < 1:
                raise ValueError(f"holdout {h!r} must leave at least one held-out and one observed sample "
                                 f"for n_samples = {self.n_range[0]}")
        checked_split_sizes(self)

    def split_sizes(self) -> dict[str, int]:
        return checked_split_sizes(self)

    def memory_bytes(self) -> int:
        """Per instance the design as drawn, ``(n_max, d)``, ``b`` and ``beta*`` (float32), and two counts."""
        hi, d = self.n_range[1], int(self.d)
        return sum(self.split_sizes().values()) * (4 * (hi * d + hi + d) + 16)

    def correlation_factor(self) -> torch.Tensor:
        """Cholesky factor ``L`` (float64) of ``Sigma_jk = rho^|j - k|``: rows ``z L^T`` have covariance Sigma."""
        j = torch.arange(int(self.d), dtype=torch.float64)
        sigma = torch.pow(torch.tensor(float(self.rho), dtype=torch.float64), (j[:, None] - j[None, :]).abs())
        return torch.linalg.cholesky(sigma)

    def draw(self, n: int, generator: torch.Generator, shared: Mapping[str, torch.Tensor],
             split: str) -> Instances:
        d, s = int(self.d), int(self.s)
        lo, hi = self.n_range
        n_total = torch.randint(lo, hi + 1, (n,), generator=generator)
        n_hold = _holdout_count(self.holdout, n_total) if self.holdout is not None else torch.zeros_like(n_total)
        n_obs = n_total - n_hold
        rows = torch.arange(hi)
        observed_rows = rows < n_obs[:, None]                                   # (n, hi)
        real_rows = rows < n_total[:, None]                                     # observed and held out

        # Correlated Gaussian rows, then unit-norm columns over the observed rows.
        X = torch.randn(n, hi, d, generator=generator) @ self.correlation_factor().float().T
        X.mul_(real_rows.unsqueeze(-1))
        norms = torch.bmm(observed_rows.float().unsqueeze(1), X * X).sqrt_()    # (n, 1, d)
        X.div_(norms)

        # beta*: s non-zeros at random positions, |beta_j| ~ U[beta_min, beta_max], random signs.
        position = torch.rand(n, d, generator=generator).argsort(dim=1)[:, :s]
        magnitude = self.beta_min + (self.beta_max - self.beta_min) * torch.rand(n, s, generator=generator)
        sign = torch.randint(0, 2, (n, s), generator=generator).float() * 2 - 1
        beta = torch.zeros(n, d).scatter_(1, position, magnitude * sign)

        clean = torch.bmm(X, beta.unsqueeze(-1)).squeeze(-1)                    # (n, hi), 0 on padding
        snr = torch.tensor(self.levels, dtype=torch.float64)[level_index(n, len(self.levels))]
        rms = ((clean * observed_rows) ** 2).sum(1).double().div(n_obs.double()).sqrt()
        sigma = (rms * torch.pow(10.0, -snr / 20.0)).float()                   # 0 when noiseless
        noise = torch.randn(n, hi, generator=generator) * sigma[:, None]
        y = (clean + noise) * real_rows

        # Observed rows are rows 0 .. n_obs - 1, padded to the largest possible count (n - h(n) and
        # h(n) are non-decreasing in n, so both maxima are reached at n = hi).
        h_max = int(_holdout_count(self.holdout, torch.tensor([hi]))[0]) if self.holdout is not None else 0
        n_obs_max = hi - h_max
        if self.holdout is None:  # every real row is observed and padding rows are already zero
            observed = {"A": X, "b": y, "n_samples": n_obs}
        else:
            mask = observed_rows[:, :n_obs_max]
            observed = {"A": X[:, :n_obs_max] * mask.unsqueeze(-1), "b": y[:, :n_obs_max] * mask,
                        "n_samples": n_obs}
        target = {"x": beta}
        if self.holdout is not None:
            # Each instance's held-out rows n_obs .. n_total - 1, moved to the front of its block.
            index = (n_obs[:, None] + torch.arange(h_max)).clamp(max=hi - 1)     # (n, h_max)
            keep = torch.arange(h_max) < n_hold[:, None]
            target["A_holdout"] = torch.gather(X, 1, index.unsqueeze(-1).expand(-1, -1, d)) * keep.unsqueeze(-1)
            target["b_holdout"] = torch.gather(y, 1, index) * keep
            target["n_holdout"] = n_hold
        return Instances(observed=observed, target=target, groups={"snr": snr})

    def loss(self, estimate: torch.Tensor, target: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``||beta - beta*||^2`` per instance; unsupervised: ``0.5 ||A_holdout beta - b_holdout||^2``."""
        if not self.supervised:
            return 0.5 * self.holdout_residual(estimate, target)
        return ((estimate - target["x"]) ** 2).sum(-1)

    @staticmethod
    def holdout_residual(estimate: torch.Tensor, target: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``||A_holdout beta - b_holdout||^2`` per instance (padding rows are zero)."""
        residual = torch.bmm(target["A_holdout"], estimate.unsqueeze(-1)).squeeze(-1) - target["b_holdout"]
        return (residual**2).sum(-1)

    def _measure(self, estimate: torch.Tensor, target: Mapping[str, torch.Tensor], subset: str) -> list[Measurement]:
        x = target["x"]
        value = nmse(estimate, x)
        l2 = float((estimate - x).double().norm(dim=-1).mean())
        precision, recall, f1 = precision_recall_f1(*support_counts(estimate, x, self.support_tol))
        out = [Measurement("nmse", value, subset), Measurement("nmse_db", to_db(value), subset),
               Measurement("l2_error", l2, subset), Measurement("support_precision", precision, subset),
               Measurement("support_recall", recall, subset), Measurement("support_f1", f1, subset)]
        if "A_holdout" in target:
            total = float(self.holdout_residual(estimate, target).double().sum())
            count = float(target["n_holdout"].sum())
            out.append(Measurement("holdout_mse", total / count if count > 0 else math.nan, subset))
        return out

    def evaluate(self, estimate: torch.Tensor, instances: Instances,
                 per_subset: bool = True) -> list[Measurement]:
        out = self._measure(estimate, instances.target, "all")
        if per_subset:
            out += per_level(instances.groups["snr"], snr_label, lambda mask, subset: self._measure(
                estimate[mask], {k: v[mask] for k, v in instances.target.items()}, subset))
        return out
