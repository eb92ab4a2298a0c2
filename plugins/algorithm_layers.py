"""Algorithm layers on quadratic energies: GD, NAG and an RNN, classical and learned (thesis chapter 4).

The iterations minimize ``E(y) = 0.5 y^T Q y + b^T y`` from ``y_0 = z_0 = 0``
(thesis eq. 4.9):

    GD:   y_{k+1} = y_k - phi (Q y_k + b)
    NAG:  y_{k+1} = z_k - phi (Q z_k + b),
          z_{k+1} = y_{k+1} + (1 - sqrt(mu phi)) / (1 + sqrt(mu phi)) (y_{k+1} - y_k)
    RNN:  y_{k+1} = V relu(W^L ... relu(W^1 [y_k; Q y_k + b]))   (eq. 4.18, one cell unrolled k times)

One iteration serves the classical solvers and the learned ones (the
classical run is the learned model without learned parameters):

* ``GD`` / ``NAG`` (classical, ``given`` mode, the solver sees ``Q`` and ``b``):
  ``phi = step / lambda_max(Q)`` per instance, ``step`` tuned on validation,
  NAG's momentum from ``mu = lambda_min(Q)``; ``k`` steps.
* ``GDLayer`` / ``NAGLayer`` / ``RNNLayer`` (learned): ``Alg^k_phi(Q_theta(x), b)``
  (eq. 4.3) in ``hybrid`` mode, where ``Q_theta`` has the architecture of
  ``Q*`` (``l2obench.energies.SpectralEnergy``, eigenvalues in ``[mu, L]``)
  with a hidden size of its own, or ``Alg^k_phi(Q, b)`` in ``given`` mode
  (learning to optimize, NeurIPS 2020 Fig. 6). Trained end to end on the
  family's loss ``||Alg^k - y*||_2`` (eq. 4.10) of the last iterate, by Adam
  or SGD (``optimizer``), one run per optimizer and learning rate of ``lr``
  from the same start, the run best on
  validation kept; within a run the state of lowest training loss is kept
  (``select = "train"``, the thesis's protocol) or of lowest validation loss.
  Each ``k`` is a separately trained model (thesis 4.7).

Stable region. GD's and NAG's learned step is ``phi = phi_max sigmoid(r)``
with ``phi_max`` the end of the stable region of thesis Table 4.1,
``2 / (mu + L)`` for GD and ``4 / (mu + 3 L)`` for NAG, ``mu, L`` the
eigenvalue bounds of the family's class ``S_{mu, L}`` (every ``Q_theta`` lies in
it by construction): ``phi`` stays in ``(0, phi_max)`` whatever the training
does, so ``Cvg``, ``Stab`` and ``Sens`` stay finite for every ``k`` (thesis
4.4.1, IV). NAG's momentum uses the class's ``mu``, as the authors' code does.
The RNN's stable region (``c_phi < 1``, Table 4.2) is not enforced; its cell
starts as a GD step of size ``step_init / L`` (``rnn_init = "gd"``), so ``RNN^k``
starts as ``GD^k``.
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
from torch import nn

from l2obench.contracts import FitContext, Solution
from l2obench.datafits import QuadraticEnergy
from l2obench.energies import SpectralEnergy, glorot_uniform_
from l2obench.errors import DivergedError
from l2obench.learned import LearnedSolver, mean_loss
from l2obench.training import train
from l2obench.tuning import ClassicalSolver

Gradient = Callable[[torch.Tensor], torch.Tensor]


# -- the iterations (eq. 4.9), shared by the classical and the learned solvers --------------------

def gd_iterates(gradient: Gradient, y0: torch.Tensor, step, k: int, keep_all: bool = True) -> list[torch.Tensor]:
    """``k`` gradient steps ``y <- y - step * gradient(y)`` from ``y0``.

    ``step`` is a number, a scalar tensor or ``(N, 1)``. Returns the iterates
    ``y_1 .. y_k`` (``keep_all``) or a list holding ``y_k``.
    """
    y, out = y0, []
    for t in range(k):
        y = y - step * gradient(y)
        if keep_all or t == k - 1:
            out.append(y)
    return out


def nag_momentum(mu, step):
    """NAG's momentum ``(1 - sqrt(mu phi)) / (1 + sqrt(mu phi))`` (eq. 4.9)."""
    root = torch.sqrt(mu * step) if torch.is_tensor(mu * step) else math.sqrt(mu * step)
    return (1 - root) / (1 + root)


def nag_iterates(gradient: Gradient, y0: torch.Tensor, step, momentum, k: int,
                 keep_all: bool = True) -> list[torch.Tensor]:
    """``k`` steps of Nesterov's accelerated gradient (eq. 4.9) from ``y_0 = z_0 = y0``; see ``gd_iterates``."""
    y, z, out = y0, y0, []
    for t in range(k):
        y_next = z - step * gradient(z)
        z = y_next + momentum * (y_next - y)
        y = y_next
        if keep_all or t == k - 1:
            out.append(y)
    return out


# -- classical GD and NAG (given mode) ----------------------------------------------------------

class _Classical(ClassicalSolver):
    """GD or NAG on the observed energy; ``step`` in units of ``1 / lambda_max(Q)``."""

    needs = ("gradient", "eigenvalue_bounds", "start", "finish")

    def iterates(self, term: QuadraticEnergy, keep_all: bool) -> list[torch.Tensor]:
        raise NotImplementedError

    def solve(self, observation, trajectory: bool = False) -> Solution:
        term = self.data_term_for(observation)
        with torch.no_grad():
            path = self.iterates(term, trajectory)
        estimate = term.finish(path[-1])
        iterations = torch.full((estimate.shape[0],), self.k, dtype=torch.long, device=estimate.device)
        return Solution(estimate, [term.finish(y) for y in path] if trajectory else None, iterations)


class GD(_Classical):
    """Gradient descent ``y <- y - phi (Q y + b)``, ``phi = step / lambda_max(Q)``, ``k`` steps from 0.

    Hyper-parameters: ``k``, ``step`` (tuned on validation).
    """

    def iterates(self, term, keep_all):
        L = term.eigenvalue_bounds()[1].unsqueeze(-1)
        return gd_iterates(term.gradient, term.start(), self.step / L, self.k, keep_all)


class NAG(_Classical):
    """Nesterov's accelerated gradient (eq. 4.9), ``phi = step / lambda_max(Q)``, momentum from ``lambda_min(Q)``.

    Hyper-parameters: ``k``, ``step`` (tuned on validation).
    """

    def iterates(self, term, keep_all):
        mu, L = (v.unsqueeze(-1) for v in term.eigenvalue_bounds())
        phi = self.step / L
        return nag_iterates(term.gradient, term.start(), phi, nag_momentum(mu, phi), self.k, keep_all)


# -- learned algorithm layers --------------------------------------------------------------------

def _logit(p: float) -> float:
    return math.log(p / (1 - p))


class StepLayer(nn.Module):
    """``GD^k_phi`` or ``NAG^k_phi`` with ``phi = phi_max sigmoid(r)`` (module docstring: stable region).

    Parameters
    ----------
    algorithm : {"gd", "nag"}
    k : int
        Steps.
    mu, L : float
        Eigenvalue bounds of the energies (the class ``S_{mu, L}``).
    step_init : float
        Initial ``phi`` in units of ``1 / L``; must lie below ``L phi_max``.
    learn_step : bool
        Whether ``r`` is trained (else a buffer: the step stays at ``step_init / L``).
    """

    def __init__(self, algorithm: str, k: int, mu: float, L: float, step_init: float, learn_step: bool = True):
        super().__init__()
        self.algorithm, self.k, self.mu = algorithm, int(k), float(mu)
        self.phi_max = 2 / (mu + L) if algorithm == "gd" else 4 / (mu + 3 * L)
        ratio = step_init / L / self.phi_max
        if not 0 < ratio < 1:
            raise ValueError(f"step_init = {step_init} (phi = step_init / L) must lie inside {algorithm.upper()}'s "
                             f"stable region (0, {self.phi_max * L:.4g} / L) for mu = {mu}, L = {L}")
        r = torch.tensor(_logit(ratio))
        if learn_step:
            self.r = nn.Parameter(r)
        else:
            self.register_buffer("r", r)

    def step(self) -> torch.Tensor:
        """The step ``phi``, in ``(0, phi_max)``."""
        return self.phi_max * torch.sigmoid(self.r)

    def forward(self, term: QuadraticEnergy, keep_all: bool = True, depth: int | None = None) -> list[torch.Tensor]:
        """The iterates ``y_1 .. y_depth`` (default ``k``), or a list holding the last."""
        phi, k = self.step(), self.k if depth is None else int(depth)
        if self.algorithm == "gd":
            return gd_iterates(term.gradient, term.start(), phi, k, keep_all)
        return nag_iterates(term.gradient, term.start(), phi, nag_momentum(self.mu, phi), k, keep_all)


class RNNCellLayer(nn.Module):
    """``RNN^k_phi``: the cell of eq. 4.18 unrolled ``k`` times (weights shared by the steps).

    ``y_{k+1} = V relu(W^depth ... relu(W^1 [y_k; Q y_k + b]))``, no biases
    (the authors' ``MLPRNN``). ``init_as_gd(s)`` makes the cell the GD step
    ``y - s (Q y + b)``: the first ``2d`` units carry ``relu(y - s g)`` and
    ``relu(s g - y)``, their difference is the output; other units keep
    PyTorch's incoming weights and start with zero outgoing weights.
    """

    def __init__(self, k: int, d: int, width: int, depth: int):
        super().__init__()
        if width < 1 or depth < 1:
            raise ValueError("the RNN cell needs width >= 1 and depth >= 1")
        self.k, self.d = int(k), int(d)
        self.hidden = nn.ModuleList([nn.Linear(2 * d if i == 0 else width, width, bias=False) for i in range(depth)])
        self.out = nn.Linear(width, d, bias=False)

    def init_as_gd(self, step: float) -> None:
        d = self.d
        if self.out.in_features < 2 * d:
            raise ValueError(f"rnn_init = 'gd' needs rnn_width >= 2d = {2 * d}, got {self.out.in_features}")
        eye = torch.eye(d)
        with torch.no_grad():
            first = self.hidden[0].weight
            first[:2 * d] = torch.cat([torch.cat([eye, -step * eye], 1), torch.cat([-eye, step * eye], 1)])
            for layer in self.hidden[1:]:
                layer.weight[:2 * d] = 0.0
                layer.weight[:2 * d, :2 * d] = torch.eye(2 * d)
                layer.weight[2 * d:, :2 * d] = 0.0  # extra units read nothing of the GD path ...
            self.out.weight.zero_()
            self.out.weight[:, :d] = eye  # ... and write nothing at the start
            self.out.weight[:, d:2 * d] = -eye

    def cell(self, y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        h = torch.cat([y, g], dim=-1)
        for layer in self.hidden:
            h = torch.relu(layer(h))
        return self.out(h)

    def forward(self, term: QuadraticEnergy, keep_all: bool = True, depth: int | None = None) -> list[torch.Tensor]:
        """The iterates ``y_1 .. y_depth`` (default ``k``), or a list holding the last."""
        k = self.k if depth is None else int(depth)
        y, out = term.start(), []
        for t in range(k):
            y = self.cell(y, term.gradient(y))
            if keep_all or t == k - 1:
                out.append(y)
        return out


class HybridModel(nn.Module):
    """``Alg^k_phi(Q_theta(x), b)`` (eq. 4.3); without a neural module, ``Alg^k_phi(Q, b)`` on the observed ``Q``."""

    def __init__(self, algorithm: nn.Module, energy: SpectralEnergy | None = None):
        super().__init__()
        self.algorithm, self.energy = algorithm, energy

    def energy_of(self, observation) -> torch.Tensor:
        """``Q_theta(x, R)`` in hybrid mode, the observed ``Q`` otherwise."""
        return observation["Q"] if self.energy is None else self.energy(observation["x"], observation["R"])

    def forward(self, observation, keep_all: bool = True, depth: int | None = None) -> list[torch.Tensor]:
        return self.algorithm(QuadraticEnergy(self.energy_of(observation), observation["b"]), keep_all, depth)


class _AlgorithmLayer(LearnedSolver):
    """What the learned layers share: the neural module, training over a learning-rate grid, extras."""

    label = ""

    @property
    def depth(self) -> int:
        return int(self.k)

    def network_config(self, context: FitContext) -> dict:
        observation = context.train.observation()
        mu, L = getattr(context.problem, "mu", None), getattr(context.problem, "L", None)
        if mu is None or L is None:
            raise ValueError(f"{self.label} needs a family with settings mu and L (energies in S_mu,L)")
        if "Q" in observation:
            mode, m = "given", 0
        elif {"x", "R", "b"} <= set(observation):
            mode, m = "hybrid", int(observation["x"].shape[-1])
        else:
            raise ValueError(f"{self.label} needs an observation with Q and b (given mode) or x, R and b (hybrid "
                             f"mode); got {', '.join(sorted(observation))}")
        return {"mode": mode, "m": m, "d": int(observation["b"].shape[-1]), "mu": float(mu), "L": float(L)}

    def make_algorithm(self, config) -> nn.Module:
        raise NotImplementedError

    def make_network(self, config) -> HybridModel:
        energy = None
        if config["mode"] == "hybrid":
            energy = glorot_uniform_(SpectralEnergy(config["m"], config["d"], self.hidden, config["mu"], config["L"]))
        return HybridModel(self.make_algorithm(config), energy)

    def forward(self, observation, keep_all: bool = True, depth: int | None = None):
        return self.network_(observation, keep_all, depth)

    def solve(self, observation, trajectory: bool = False) -> Solution:
        solution = super().solve(observation, trajectory)
        if self.network_.energy is not None:  # the neural module's energy, for the module error
            with torch.no_grad():
                solution.extras["Q"] = self.network_.energy_of(observation)
        return solution

    def training_loss(self, outputs, batch, problem) -> torch.Tensor:
        """The family's loss of the last iterate (eq. 4.10), batch mean."""
        return problem.loss(outputs[-1], batch.target).mean()

    def validation_score(self, context: FitContext) -> float:
        """Mean loss of the output on the training split (``select = "train"``) or the validation split."""
        split = context.train if self.select == "train" else context.val
        return mean_loss(context.problem, lambda obs: self.forward(obs, keep_all=False)[-1], split)

    def training_runs(self) -> list[tuple[str, float]]:
        """The (optimizer, learning rate) pairs tried: every ``optimizer`` with every ``lr``."""
        def listed(value):
            return [value] if isinstance(value, (str, int, float)) else list(value)

        return [(name, float(lr)) for name in listed(self.optimizer) for lr in listed(self.lr)]

    def train_network(self, context: FitContext) -> list[dict]:
        """One training run per optimizer and learning rate from the same start; the run with the lowest
        validation loss is kept (thesis 4.7: Adam and SGD over a learning-rate grid, the best reported).

        Each run gets the whole budget (steps; ``max_seconds`` is shared).
        A run whose loss diverges is dropped (all diverging: ``DivergedError``).
        """
        trainable = [p for p in self.network_.parameters() if p.requires_grad]
        if not trainable:  # e.g. a fixed-step GD layer on given energies: nothing to learn
            return []
        problem, runs = context.problem, self.training_runs()
        start = copy.deepcopy(self.network_.state_dict())
        limit = context.budget.max_seconds
        best, history, failures = None, [], []
        for optimizer, lr in runs:
            self.network_.load_state_dict(start)
            run = f"{optimizer} lr {lr:g}"
            try:
                entries = train(self.network_, lambda batch: self.training_loss(
                    self.forward(batch.observation()), batch, problem), lambda: self.validation_score(context),
                    context, lr=lr, fresh_samples=self.fresh_samples, desc=f"{self.describe_training()} {run}",
                    seconds=None if limit is None else limit / len(runs), optimizer=optimizer)
            except DivergedError as exc:
                failures.append(f"{run}: {exc}")
                continue
            val = mean_loss(problem, lambda obs: self.forward(obs, keep_all=False)[-1], context.val)
            history += [{**entry, "optimizer": optimizer, "lr": lr, "val_loss": val} for entry in entries]
            if best is None or val < best[0]:
                best = (val, copy.deepcopy(self.network_.state_dict()))
        if best is None:
            raise DivergedError("training diverged in every run: " + "; ".join(failures))
        self.network_.load_state_dict(best[1])
        return history

    def describe_training(self) -> str:
        return f"train {self.label} (k={self.k})"


class GDLayer(_AlgorithmLayer):
    """``GD^k_phi(Q_theta(x), b)``: learned step in GD's stable region, learned neural module in hybrid mode.

    Hyper-parameters: ``k``, ``hidden``, ``step_init``, ``learn_step``, ``lr``,
    ``optimizer``, ``select``, ``fresh_samples``. Fitted state: ``network_`` (a ``HybridModel``).
    """

    label = "GD layer"

    def make_algorithm(self, config) -> StepLayer:
        return StepLayer("gd", self.k, config["mu"], config["L"], self.step_init, self.learn_step)


class NAGLayer(_AlgorithmLayer):
    """``NAG^k_phi(Q_theta(x), b)``: as ``GDLayer`` with Nesterov's iteration (eq. 4.9)."""

    label = "NAG layer"

    def make_algorithm(self, config) -> StepLayer:
        return StepLayer("nag", self.k, config["mu"], config["L"], self.step_init, self.learn_step)


class RNNLayer(_AlgorithmLayer):
    """``RNN^k_phi(Q_theta(x), b)`` (hybrid) or ``RNN^k_phi(Q, b)`` (given): the cell of eq. 4.18 unrolled ``k`` times.

    Hyper-parameters: ``k``, ``hidden``, ``rnn_width`` (null: ``2d``),
    ``rnn_depth``, ``rnn_init``, ``step_init``, ``lr``, ``optimizer``, ``select``, ``fresh_samples``.
    """

    label = "RNN layer"

    def make_algorithm(self, config) -> RNNCellLayer:
        d = config["d"]
        rnn = RNNCellLayer(self.k, d, self.rnn_width or 2 * d, self.rnn_depth)
        if self.rnn_init == "gd":
            rnn.init_as_gd(self.step_init / config["L"])
        return rnn
