"""Sparse precision matrix estimation in Gaussian graphical models (the ``spe`` family).

The setting of GLAD (thesis section 6.5, lines ~1451-1515) and of PLISA's SPE
experiments (section 7.7.1, lines ~1846-1852, Table 7.1): each instance is a
sparse precision matrix ``Theta*`` in ``R^{d x d}`` (``d in {50, 100}`` in the
thesis), ``M`` samples ``x_1 .. x_M ~ N(0, Theta*^{-1})`` and their sample
covariance ``S = (1/M) sum_k x_k x_k^T`` (the mean is known to be zero, so
``S`` is not centred). The solver sees ``S`` and ``M``, never ``Theta*``.

``Theta*`` (the thesis names the graph types, line ~1480 and Fig. 6.3, but
gives no weights, edge probabilities or sample sizes for its synthetic
experiments; the numbers below are this module's choices):

* graph: Erdos-Renyi (``graph = "er"``), every pair an edge with probability
  ``p_i`` drawn per instance uniformly from ``edge_prob = [lo, hi]`` (Fig. 6.3
  uses ``p = 0.05``; the default range ``[0.05, 0.15]`` gives 2.5 to 7.5
  neighbours per node at ``d = 50``), or a grid (``graph = "grid"``, the
  graphs of Ravikumar et al. [142] in section 6.5.2): node ``k`` sits at
  ``(k // w, k mod w)`` with ``w = ceil(sqrt(d))`` and is joined to its right
  and lower neighbours (a ``w x w`` lattice for square ``d``, else one with a
  partial last row);
* off-diagonal weights ``W_ij = W_ji`` of magnitude uniform on
  ``weights = [0.5, 1.0]`` (the range of GLAD's public example notebook,
  which uses positive weights only) with a random sign, so the signed edge
  set is non-trivial;
* diagonal shifted per instance so that the smallest eigenvalue is exactly
  1: ``Theta* = W + (1 - lambda_min(W)) I``.

``M`` is one sample size or a list of them (the sample-complexity sweep of
Fig. 6.2): with a list, every split holds the levels in equal numbers
(``torch.arange(n) % len(levels)``) and ``evaluate`` reports every metric for
each level as well (subsets ``"M=20"``, group key ``"M"``).

Metrics. NMSE ``sum ||Theta - Theta*||_F^2 / sum ||Theta*||_F^2`` over the
split (thesis line ~1458) in dB and linear; the squared Frobenius error
averaged over instances (Table 7.1); two probabilities of success over
instances: ``success``, the thesis' PS (line ~1460),
``P[sign_tol(Theta_ij) = sign(Theta*_ij) for every edge (i, j) of Theta*]``,
every true edge found with its sign (false edges are not counted: read it
with FPR / FDR, since a dense estimate with the right signs scores 1; a
graph without edges counts as a success), and
``exact_recovery``, the estimated signed edge set equals the true one
(also ``sign_tol(Theta_ij) = 0 = Theta*_ij`` on every non-edge; the sign
consistency of Ravikumar et al. [142]); and TPR, FPR, FDR of the (unsigned)
edge set, pooled
over the split (sums of counts over all instances, then ratios; FDR is 0
when no edge is estimated). An estimated entry is an edge when
``|Theta_ij| > edge_tol`` (default 0.01, absolute): learned solvers return
small non-zeros where the graphical lasso returns exact zeros, and an
exact-zero rule would read them as dense graphs. The true weights are at
least 0.5 and ``Theta*``'s diagonal at least 1, so an entry below 0.01 is a
partial correlation below 0.01 (for an estimate with the same diagonal
scale), statistically invisible at the sample sizes used here
(``1/sqrt(M) >= 0.03`` for ``M <= 1000``).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from l2obench.contracts import Instances, Measurement, Metric, ProblemFamily
from l2obench_problems.lasso import NMSE, NMSE_DB, nmse, to_db
from l2obench_problems.levels import as_levels, checked_split_sizes, level_index, per_level

FROBENIUS = Metric("frobenius_sq", "lower", "", "mean over instances of ||Theta - Theta*||_F^2 (thesis Table 7.1)")
SUCCESS = Metric("success", "higher", "",
                 "thesis PS: fraction of instances with every true edge found (|Theta_ij| > edge_tol) "
                 "with its sign")
EXACT = Metric("exact_recovery", "higher", "",
               "fraction of instances whose signed edge set is exact (true edges with their signs, no false edge)")
TPR = Metric("tpr", "higher", "", "pooled over the split: true edges found / true edges")
FPR = Metric("fpr", "lower", "", "pooled over the split: non-edges estimated as edges / non-edges")
FDR = Metric("fdr", "lower", "", "pooled over the split: estimated edges that are not edges / estimated edges")

GRAPHS = ("er", "grid")
# Gaussian draws per chunk when sampling (bounds memory for large M).
SAMPLE_CHUNK = 1 << 24


def grid_adjacency(d: int) -> torch.Tensor:
    """Upper-triangular ``(d, d)`` bool adjacency of the grid graph on ``d`` nodes.

    Node ``k`` is at row ``k // w``, column ``k mod w`` with ``w = ceil(sqrt(d))``;
    it is joined to ``k + 1`` (same row) and ``k + w`` (next row) where they exist.
    """
    w = math.isqrt(d - 1) + 1 if d > 1 else 1
    k = torch.arange(d)
    adjacency = torch.zeros(d, d, dtype=torch.bool)
    right = k[(k % w != w - 1) & (k + 1 < d)]
    adjacency[right, right + 1] = True
    down = k[k + w < d]
    adjacency[down, down + w] = True
    return adjacency


def signs(X: torch.Tensor, tol: float) -> torch.Tensor:
    """``sign(X)`` with entries ``|X| <= tol`` set to 0 (int8)."""
    return (torch.sign(X) * (X.abs() > tol)).to(torch.int8)


def upper_pairs(d: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices of the pairs ``i < j``."""
    index = torch.triu_indices(d, d, offset=1, device=device)
    return index[0], index[1]


def edge_counts(estimate: torch.Tensor, truth: torch.Tensor, tol: float) -> dict[str, Any]:
    """Per-instance signed-edge agreement and pooled edge counts over pairs ``i < j``.

    Returns ``signed_edges`` ((N,) bool: every true edge estimated with its
    sign), ``exact`` ((N,) bool: the signed edge sets agree), and the pooled
    counts ``tp``, ``fp``, ``positives`` (true edges), ``negatives`` (true non-edges).
    """
    i, j = upper_pairs(truth.shape[-1], truth.device)
    est = signs(estimate[..., i, j], tol)
    true = signs(truth[..., i, j], 0.0)
    predicted, actual = est != 0, true != 0
    agree = est == true
    return {"signed_edges": (agree | ~actual).all(-1), "exact": agree.all(-1),
            "tp": float((predicted & actual).sum()), "fp": float((predicted & ~actual).sum()),
            "positives": float(actual.sum()), "negatives": float((~actual).sum())}


class SparsePrecisionEstimation(ProblemFamily):
    """Estimate a sparse precision matrix ``Theta*`` from the sample covariance ``S`` of ``M`` samples.

    Settings are documented in the registration (``l2obench_problems.SPE``)
    and the distribution in this module's docstring.
    """

    metrics = {m.name: m for m in (NMSE_DB, NMSE, FROBENIUS, SUCCESS, EXACT, TPR, FPR, FDR)}
    primary_metric = "nmse_db"
    gap_metric = "nmse"
    version = "1"
    data_term = "logdet"

    def __init__(self, **settings: Any):
        super().__init__(**settings)
        if int(self.d) != self.d or self.d < 2:
            raise ValueError(f"d must be an integer >= 2, got {self.d}")
        if self.graph not in GRAPHS:
            raise ValueError(f"graph must be one of {', '.join(GRAPHS)}, got {self.graph!r}")
        prob = as_levels(self.edge_prob, "edge_prob")
        prob = prob * 2 if len(prob) == 1 else prob
        if len(prob) != 2 or not 0.0 <= prob[0] <= prob[1] <= 1.0:
            raise ValueError(f"edge_prob must be a probability or a range [lo, hi] with 0 <= lo <= hi <= 1, "
                             f"got {self.edge_prob}")
        self.prob_range = tuple(prob)
        weights = as_levels(self.weights, "weights")
        weights = weights * 2 if len(weights) == 1 else weights
        if len(weights) != 2 or not 0.0 <= weights[0] <= weights[1] or weights[1] == 0:
            raise ValueError(f"weights must be a magnitude or a range [lo, hi] with 0 <= lo <= hi, hi > 0, "
                             f"got {self.weights}")
        self.weight_range = tuple(weights)
        self.levels = as_levels(self.M, "M", lambda v: v)
        if any(isinstance(m, bool) or int(m) != m or m < 1 for m in self.levels):
            raise ValueError(f"M must be a positive integer or a list of them, got {self.M}")
        self.levels = [int(m) for m in self.levels]
        if self.edge_tol < 0:
            raise ValueError(f"edge_tol must be >= 0, got {self.edge_tol}")
        checked_split_sizes(self)

    def split_sizes(self) -> dict[str, int]:
        return checked_split_sizes(self)

    def memory_bytes(self) -> int:
        """Per instance ``Theta*`` and ``S`` as drawn (float64, ``d x d``) and its sample size."""
        return sum(self.split_sizes().values()) * (16 * int(self.d) ** 2 + 8)

    def draw_precision(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` precision matrices ``Theta*`` (float64, ``(n, d, d)``) with smallest eigenvalue 1."""
        d = int(self.d)
        upper = torch.ones(d, d, dtype=torch.bool).triu(1)
        if self.graph == "er":
            lo, hi = self.prob_range
            p = lo + (hi - lo) * torch.rand(n, 1, 1, generator=generator, dtype=torch.float64)
            edges = (torch.rand(n, d, d, generator=generator, dtype=torch.float64) < p) & upper
        else:
            edges = grid_adjacency(d).expand(n, d, d)
        lo, hi = self.weight_range
        magnitude = lo + (hi - lo) * torch.rand(n, d, d, generator=generator, dtype=torch.float64)
        sign = torch.randint(0, 2, (n, d, d), generator=generator, dtype=torch.float64) * 2 - 1
        W = magnitude * sign * edges
        W = W + W.transpose(-1, -2)
        shift = 1.0 - torch.linalg.eigvalsh(W)[:, 0]
        return W + shift[:, None, None] * torch.eye(d, dtype=torch.float64)

    @staticmethod
    def sample_covariance(theta: torch.Tensor, M: int, generator: torch.Generator) -> torch.Tensor:
        """``S = X^T X / M`` of ``M`` samples ``N(0, Theta^{-1})`` per instance (float64).

        With ``Theta = L L^T`` (Cholesky), ``x = L^{-T} z`` for ``z ~ N(0, I)``
        has covariance ``L^{-T} L^{-1} = Theta^{-1}``.
        """
        n, d, _ = theta.shape
        Lt = torch.linalg.cholesky(theta).transpose(-1, -2)
        S = torch.empty_like(theta)
        chunk = max(1, SAMPLE_CHUNK // (M * d))
        for start in range(0, n, chunk):  # chunks of instances, to bound memory for large M
            part = slice(start, start + chunk)
            Z = torch.randn(Lt[part].shape[0], d, M, generator=generator, dtype=torch.float64)
            X = torch.linalg.solve_triangular(Lt[part], Z, upper=True)           # (n, d, M): columns are samples
            S[part] = X @ X.transpose(-1, -2) / M
        return S

    def draw(self, n: int, generator: torch.Generator, shared: Mapping[str, torch.Tensor],
             split: str) -> Instances:
        theta = self.draw_precision(n, generator)
        M = torch.tensor(self.levels)[level_index(n, len(self.levels))]
        S = torch.empty_like(theta)
        for level in self.levels:  # one batch per sample size (a handful of levels)
            index = (M == level).nonzero().squeeze(1)
            if len(index):
                S[index] = self.sample_covariance(theta[index], level, generator)
        return Instances(observed={"S": S.float(), "M": M.float()}, target={"Theta": theta.float()},
                         groups={"M": M})

    def loss(self, estimate: torch.Tensor, target: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``||Theta - Theta*||_F^2`` per instance."""
        return ((estimate - target["Theta"]) ** 2).sum((-2, -1))

    def _measure(self, estimate: torch.Tensor, theta: torch.Tensor, subset: str) -> list[Measurement]:
        value = nmse(estimate, theta)
        frobenius = float(((estimate - theta).double() ** 2).sum((-2, -1)).mean())
        c = edge_counts(estimate, theta, self.edge_tol)
        predicted = c["tp"] + c["fp"]
        tpr = c["tp"] / c["positives"] if c["positives"] > 0 else math.nan
        fpr = c["fp"] / c["negatives"] if c["negatives"] > 0 else math.nan
        fdr = c["fp"] / predicted if predicted > 0 else 0.0
        values = {"nmse": value, "nmse_db": to_db(value), "frobenius_sq": frobenius,
                  "success": float(c["signed_edges"].double().mean()),
                  "exact_recovery": float(c["exact"].double().mean()), "tpr": tpr, "fpr": fpr, "fdr": fdr}
        return [Measurement(k, v, subset) for k, v in values.items()]

    def evaluate(self, estimate: torch.Tensor, instances: Instances,
                 per_subset: bool = True) -> list[Measurement]:
        theta = instances.target["Theta"]
        out = self._measure(estimate, theta, "all")
        if per_subset:
            out += per_level(instances.groups["M"], lambda level: f"M={int(level)}",
                             lambda mask, subset: self._measure(estimate[mask], theta[mask], subset))
        return out
