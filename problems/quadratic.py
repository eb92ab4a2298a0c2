"""Quadratic energies with a hidden neural energy ``Q*(x)`` (the ``quadratic`` family, thesis chapter 4).

The setting of thesis sections 4.3 and 4.7 (NeurIPS 2020, section 7.1), as
the authors' code draws it (``neuralalgo/data_generator.py``):

* ``x ~ U[-x_max, x_max]^m`` and ``b ~ U[-a, a]^d`` with ``a = sqrt(3) sigma_b``,
  so ``E[b b^T] = sigma_b^2 I`` and ``b`` is bounded (section 4.3);
* a rotation ``R`` per instance, Haar-distributed, which the model sees
  (the authors' code feeds it to both ``Q*`` and ``Q_theta``: the thesis's
  input "x" is the pair ``(x, R)`` here);
* ``Q*(x, R) = R diag(e*(x)) R^T`` with eigenvalues ``e*(x) = (L, mu + (L -
  mu) softmax(f*(x)), mu)`` from a randomly fixed two-layer network ``f*`` of
  hidden size ``energy_hidden`` (3 in the thesis), Glorot-uniform weights and
  zero biases drawn from ``energy_seed`` (``l2obench.energies``): every
  ``Q*`` is symmetric positive definite with eigenvalues spanning ``[mu, L]``.
  As in the authors' code the network is one for all seeds of a setting (their
  20 instantiations redraw the data, not ``Q*``);
* the label ``y* = argmin_y 0.5 y^T Q* y + b^T y = -Q*^{-1} b`` (eq. 4.4), by
  a batched Cholesky solve in float64.

The training split is the first ``n_train`` pairs of a random permutation of a
pool of ``pool`` pairs (thesis 4.7: "10000 pairs ..., n samples are randomly
drawn from these"); ``n_train`` is left out of the seed streams
(``stream_free_settings``), so along a sweep of ``n_train`` the training sets
are nested and the validation and test splits are the same. Validation and
test pairs are drawn apart from the pool (the authors' code tests on the
whole pool, training pairs included).

Modes. ``hybrid`` (thesis eq. 4.3): the solver sees ``x``, ``R`` and ``b``;
``Q*`` is hidden (``target["Q"]``, for the module error). ``given`` (learning
to optimize, NeurIPS Fig. 6): the solver sees ``Q = Q*`` and ``b``.

Metrics. ``l2_error``, the mean over instances of ``||y - y*||_2``, is the
loss of eq. 4.10 that the thesis's figures plot (training error, Fig. 4.3;
generalization gap, Fig. 4.5, test minus train); ``nmse`` / ``nmse_db`` as in
the other families. A solution carrying its neural module's energy in
``extras["Q"]`` is also scored by ``module_error``, the mean of ``||Q_theta -
Q*||_F^2`` (Fig. 4.4, ``P ||Q_theta - Q*||_F^2``), and
``module_error_spectral``, the mean of ``||Q_theta - Q*||_2`` (what the
authors' code computes).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from l2obench.contracts import Instances, Measurement, Metric, ProblemFamily
from l2obench.datafits import QuadraticEnergy
from l2obench.energies import SpectralEnergy, glorot_uniform_, random_rotations
from l2obench_problems.lasso import NMSE, NMSE_DB, nmse, to_db
from l2obench_problems.levels import checked_split_sizes

L2_ERROR = Metric("l2_error", "lower", "", "mean over instances of ||y - y*||_2, the loss of thesis eq. 4.10")
MODULE_ERROR = Metric("module_error", "lower", "",
                      "mean ||Q_theta - Q*||_F^2 of a hybrid model's neural module (thesis Fig. 4.4)")
MODULE_ERROR_SPECTRAL = Metric("module_error_spectral", "lower", "",
                               "mean ||Q_theta - Q*||_2 (spectral norm) of a hybrid model's neural module")
MODES = ("hybrid", "given")


class QuadraticEnergies(ProblemFamily):
    """``y* = argmin_y 0.5 y^T Q*(x) y + b^T y`` with a hidden neural ``Q*`` (module docstring).

    Settings are documented in the registration (``l2obench_problems.QUADRATIC``).
    """

    metrics = {m.name: m for m in (L2_ERROR, NMSE_DB, NMSE, MODULE_ERROR, MODULE_ERROR_SPECTRAL)}
    primary_metric = "l2_error"
    gap_metric = "l2_error"
    version = "1"
    data_term = "quadratic"
    stream_free_settings = ("n_train",)

    def __init__(self, **settings: Any):
        super().__init__(**settings)
        if int(self.d) != self.d or self.d < 3:
            raise ValueError(f"d must be an integer >= 3 (the eigenvalues L and mu and at least one computed "
                             f"from x), got {self.d}")
        if int(self.m) != self.m or self.m < 1:
            raise ValueError(f"m must be a positive integer, got {self.m}")
        if not 0 < self.mu < self.L:
            raise ValueError(f"need 0 < mu < L (the eigenvalue range of Q*), got mu = {self.mu}, L = {self.L}")
        for name in ("sigma_b", "x_max"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.pool is not None and self.pool < self.n_train:
            raise ValueError(f"pool ({self.pool}) must hold at least n_train ({self.n_train}) pairs")
        checked_split_sizes(self)
        self._energy: SpectralEnergy | None = None

    def split_sizes(self) -> dict[str, int]:
        return checked_split_sizes(self)

    def memory_bytes(self) -> int:
        """Per pair (for the training split, every pair of the pool) ``x``, ``b``, ``R``, ``Q*`` and ``y*``
        as drawn (float64)."""
        sizes = self.split_sizes()
        pairs = sum(sizes.values()) - sizes["train"] + max(sizes["train"], int(self.pool or 0))
        d, m = int(self.d), int(self.m)
        return pairs * 8 * (m + 2 * d + 2 * d * d)

    @property
    def energy(self) -> SpectralEnergy:
        """The fixed network ``(x, R) -> Q*`` (float64), drawn from ``energy_seed`` on first use."""
        if self._energy is None:
            with torch.random.fork_rng(devices=[]):  # nn.Linear's own initialisation draws from the global RNG
                net = SpectralEnergy(self.m, self.d, self.energy_hidden, self.mu, self.L).double()
            glorot_uniform_(net, torch.Generator().manual_seed(int(self.energy_seed)))
            self._energy = net.requires_grad_(False).eval()
        return self._energy

    def draw(self, n: int, generator: torch.Generator, shared: Mapping[str, torch.Tensor],
             split: str) -> Instances:
        pooled = split == "train" and self.pool is not None
        size = int(self.pool) if pooled else n
        if n > size:
            raise ValueError(f"cannot draw {n} training pairs from a pool of {size}")
        d, m = int(self.d), int(self.m)
        x = (2 * torch.rand(size, m, generator=generator, dtype=torch.float64) - 1) * self.x_max
        b = (2 * torch.rand(size, d, generator=generator, dtype=torch.float64) - 1) * (math.sqrt(3) * self.sigma_b)
        R = random_rotations(size, d, generator)
        if pooled:
            pick = torch.randperm(size, generator=generator)[:n]
            x, b, R = x[pick], b[pick], R[pick]
        Q = self.energy(x, R)
        y = QuadraticEnergy(Q, b).minimizer()
        if self.mode == "given":
            return Instances(observed={"Q": Q.float(), "b": b.float()}, target={"y": y.float()})
        return Instances(observed={"x": x.float(), "R": R.float(), "b": b.float()},
                         target={"y": y.float(), "Q": Q.float()})

    def loss(self, estimate: torch.Tensor, target: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``||y - y*||_2`` per instance (thesis eq. 4.10)."""
        return torch.linalg.vector_norm(estimate - target["y"], dim=-1)

    def evaluate(self, estimate: torch.Tensor, instances: Instances,
                 per_subset: bool = True) -> list[Measurement]:
        y = instances.target["y"]
        value = nmse(estimate, y)
        l2 = float(torch.linalg.vector_norm((estimate - y).double(), dim=-1).mean())
        return [Measurement("l2_error", l2), Measurement("nmse", value), Measurement("nmse_db", to_db(value))]

    def minimizer(self, observation: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """``-Q^{-1} b`` when the observation holds ``Q`` (given mode); ``None`` in hybrid mode."""
        return QuadraticEnergy(observation["Q"], observation["b"]).minimizer() if "Q" in observation else None

    def perturb(self, observation: Mapping[str, torch.Tensor], eps: float,
                generator: torch.Generator) -> tuple[dict, torch.Tensor]:
        """``b`` moved by ``eps`` (l2 norm) and ``Q`` by a symmetric ``eps E``, ``||E||_2 = 1`` (given
        mode) or ``x`` by ``eps`` (hybrid mode), in random directions; size ``||dQ||_2 + ||db||_2``
        (thesis eq. 4.7) or ``||dx||_2 + ||db||_2``, i.e. ``2 eps``."""
        def direction(like: torch.Tensor) -> torch.Tensor:
            u = torch.randn(like.shape, generator=generator, dtype=torch.float64)
            if like.dim() == 3:  # a symmetric matrix of unit spectral norm
                u = u + u.transpose(-1, -2)
                return u / torch.linalg.matrix_norm(u, ord=2)[:, None, None]
            return u / torch.linalg.vector_norm(u, dim=-1, keepdim=True)

        out = dict(observation)
        for key in ("Q", "b") if "Q" in observation else ("x", "b"):
            out[key] = observation[key] + (eps * direction(observation[key])).to(observation[key])
        b = observation["b"]
        return out, torch.full((len(b),), 2 * eps, dtype=torch.float64, device=b.device)

    def evaluate_extras(self, extras: Mapping[str, Any], instances: Instances,
                        per_subset: bool = True) -> list[Measurement]:
        """The module errors of ``extras["Q"]`` (a hybrid model's ``Q_theta(x)``) against ``Q*``."""
        if "Q" not in extras or "Q" not in instances.target:
            return []
        diff = (extras["Q"] - instances.target["Q"]).double()
        frobenius = float(diff.pow(2).sum((-2, -1)).mean())
        spectral = float(torch.linalg.matrix_norm(diff, ord=2).mean())
        return [Measurement("module_error", frobenius), Measurement("module_error_spectral", spectral)]
