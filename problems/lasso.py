"""Compressed sensing with a fixed sensing matrix (the LASSO family).

The setup of LISTA-CPSS / ALISTA and of the learning-to-stop experiments
(thesis section 5.5.1): per setting and seed one sensing matrix ``A`` in
``R^{m x n}`` with i.i.d. ``N(0, 1/m)`` entries and unit-norm columns
(optionally with a prescribed condition number); ``x*`` with Bernoulli(p)
support and ``N(0, 1)`` non-zeros; ``b = A x* + e`` where
``e ~ N(0, sigma^2 I)``, ``sigma = std(A x*) * 10^(-SNR/20)`` per instance and
the SNR taken from a set of levels ("mixed", equal counts per level in every
split and training batch, so uniform over instances) or infinite (noiseless).

An out-of-distribution split ``ood`` (``n_ood`` instances, same ``A``) is drawn
when the setting ``ood`` overrides the sparsity ``p`` and/or the SNR levels,
e.g. ``{"snr": [10, 50]}`` or ``{"p": 0.2}``; the runner reports it with its own
generalization gap (ood minus train).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from l2obench.contracts import Instances, Measurement, Metric, ProblemFamily
from l2obench_problems.levels import level_index, per_level, snr_levels

NMSE_DB = Metric("nmse_db", "lower", "dB", "10 log10(sum ||x - x*||^2 / sum ||x*||^2) over the split")
NMSE = Metric("nmse", "lower", "", "sum ||x - x*||^2 / sum ||x*||^2 over the split (linear)")


def nmse(estimate: torch.Tensor, target: torch.Tensor) -> float:
    """Normalized mean squared error over a set of instances (linear); NaN (undefined) when every target is zero."""
    err = ((estimate - target) ** 2).sum().double()
    ref = (target**2).sum().double()
    return float(err / ref) if ref > 0 else math.nan


def to_db(value: float) -> float:
    """``value`` in decibels; NaN (undefined) stays NaN, 0 (exact) is -inf."""
    if math.isnan(value):
        return math.nan
    return 10.0 * math.log10(value) if value > 0 else -math.inf


def snr_label(level: float) -> str:
    return "noiseless" if math.isinf(level) else f"snr={level:g}"


OOD_KEYS = {"p", "snr"}


def _check_p(p: float) -> None:
    if not 0.0 < p <= 1.0:
        raise ValueError(f"p must lie in (0, 1], got {p}")


class Lasso(ProblemFamily):
    """Sparse recovery ``b = A x* + e`` with a fixed ``A`` per setting and seed.

    Settings are documented in the registration (``l2obench_problems``).
    """

    metrics = {m.name: m for m in (NMSE_DB, NMSE)}
    primary_metric = "nmse_db"
    gap_metric = "nmse"
    version = "2"
    data_term = "least_squares"

    def __init__(self, **settings: Any):
        super().__init__(**settings)
        if self.m <= 0 or self.n <= 0:
            raise ValueError("m and n must be positive")
        _check_p(self.p)
        self.levels = snr_levels(self.snr)
        self.ood, self.n_ood = settings.get("ood") or {}, settings.get("n_ood")
        ood = self.ood
        unknown = set(ood) - OOD_KEYS
        if unknown:
            raise ValueError(f"ood may override {', '.join(sorted(OOD_KEYS))}; got {', '.join(sorted(unknown))}")
        from l2obench_problems import LASSO  # an override is checked as the setting it overrides

        for key, value in ood.items():
            LASSO.params[key].check(f"ood.{key}", value)
        _check_p(ood.get("p", self.p))
        self.ood_levels = snr_levels(ood.get("snr", self.snr))

    def split_sizes(self) -> dict[str, int]:
        sizes = {"train": self.n_train, "val": self.n_val, "test": self.n_test}
        if self.ood:
            sizes["ood"] = self.n_ood if self.n_ood is not None else self.n_test
        return sizes

    def memory_bytes(self) -> int:
        """``A`` as drawn (float64) and, per instance, ``x`` and ``b`` (float32) and its SNR (float64)."""
        return 8 * self.m * self.n + sum(self.split_sizes().values()) * (4 * (self.n + self.m) + 8)

    def draw_shared(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        m, n = self.m, self.n
        A = torch.randn(m, n, generator=generator, dtype=torch.float64) / math.sqrt(m)
        if self.condition_number:
            # Singular values log-spaced from 1 to 1/kappa, rescaled so that
            # ||A||_F^2 = n before column normalisation (as in LISTA-CPSS).
            U, _, Vh = torch.linalg.svd(A, full_matrices=False)
            s = torch.logspace(0, -math.log10(self.condition_number), min(m, n), dtype=torch.float64)
            A = (U * (s * math.sqrt(n) / s.norm())) @ Vh
        A = A / A.norm(dim=0, keepdim=True)
        return {"A": A.float()}

    def draw(self, n: int, generator: torch.Generator, shared: Mapping[str, torch.Tensor],
             split: str) -> Instances:
        A = shared["A"]
        p, levels = (self.ood.get("p", self.p), self.ood_levels) if split == "ood" else (self.p, self.levels)
        support = torch.rand(n, self.n, generator=generator) < p
        x = torch.randn(n, self.n, generator=generator) * support
        clean = x @ A.T
        # Every split (and every fresh training batch) holds the levels in equal
        # numbers, so train and test metrics compare like with like (the gap).
        snr = torch.tensor(levels, dtype=torch.float64)[level_index(n, len(levels))]
        sigma = clean.std(dim=1).double() * torch.pow(10.0, -snr / 20.0)
        noise = torch.randn(n, self.m, generator=generator) * sigma.float().unsqueeze(1)
        return Instances(observed={"b": clean + noise}, target={"x": x}, shared={"A": A},
                         groups={"snr": snr})

    def loss(self, estimate: torch.Tensor, target: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return ((estimate - target["x"]) ** 2).sum(-1)

    def evaluate(self, estimate: torch.Tensor, instances: Instances,
                 per_subset: bool = True) -> list[Measurement]:
        x = instances.target["x"]

        def measure(mask, subset: str) -> list[Measurement]:
            value = nmse(estimate[mask], x[mask])
            return [Measurement("nmse", value, subset), Measurement("nmse_db", to_db(value), subset)]

        out = measure(slice(None), "all")
        if per_subset:
            out += per_level(instances.groups["snr"], snr_label, measure)
        return out
