"""The learned-solver layer: one base class for every learned solver.

A learned solver declares its network and its forward pass; ``LearnedSolver``
does the rest, once for all of them: seeded initialisation, training through
``l2obench.training`` on the problem family's own ``loss`` (layer-weighted),
validation on the family's ``loss``, ``solve``, and ``state_dict`` /
``load_state_dict`` / ``to``. A subclass implements:

- ``network_config(context)``: what is needed to rebuild the network (shapes
  and flags; plain numbers, strings, booleans, lists), read from the fit
  context; stored with the fitted state.
- ``make_network(config)``: the ``torch.nn.Module`` (its architecture; weights
  and buffers are then filled by initialisation or by a loaded state).
- ``forward(observation, keep_all, depth=None)``: the layers' outputs on an
  observation, every layer's (``keep_all``) or the last one only, as a list
  (the first ``depth`` layers when given).

and may override ``init_network`` (problem-informed initialisation, e.g. from
ISTA), ``depth`` (the number of layers), ``training_loss``,
``validation_score`` (e.g. LISTA-stop's best-layer rule) and
``train_network`` (e.g. a progressive schedule or several stages).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Mapping

import torch
from torch import nn

from l2obench.contracts import FitContext, Instances, Solution, Solver
from l2obench.training import decayed_stages, train_progressive, train_stages

__all__ = ["LearnedSolver", "VALIDATION_CHUNK", "layer_weights", "mean_loss", "split_mean", "weighted_layer_loss"]

# Validation (and any other pass over a whole split without gradients) runs in chunks of
# this many instances, so that memory stays bounded whatever the split size.
VALIDATION_CHUNK = 1024


def layer_weights(n_layers: int, gamma: float, like: torch.Tensor | None = None) -> torch.Tensor:
    """``gamma^(T-t)``, t = 1..T: the weights of the layer-wise training loss (thesis 5.5.1, eq. 6.5, eq. 7.7)."""
    kwargs = {} if like is None else {"dtype": like.dtype, "device": like.device}
    return torch.tensor([gamma ** (n_layers - t) for t in range(1, n_layers + 1)], **kwargs)


def weighted_layer_loss(problem, outputs: list[torch.Tensor], target: Mapping[str, Any],
                        weights: torch.Tensor) -> torch.Tensor:
    """``sum_t w_t mean_i loss(out_t^(i), target^(i))`` with the family's per-instance ``loss``."""
    return sum(w * problem.loss(out, target).mean() for w, out in zip(weights, outputs))


def split_mean(instances: Instances, per_instance: Callable[[Instances], torch.Tensor],
               chunk: int = VALIDATION_CHUNK) -> float:
    """Mean of ``per_instance(part)`` (one value per instance of ``part``) over ``instances``,
    computed in chunks of ``chunk`` instances without gradients."""
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(instances), chunk):
            total += float(per_instance(instances.subset(slice(start, start + chunk))).double().sum())
    return total / max(len(instances), 1)


def mean_loss(problem, predict: Callable[[dict], torch.Tensor], instances: Instances,
              chunk: int = VALIDATION_CHUNK) -> float:
    """Mean over ``instances`` of the family's ``loss`` of ``predict(observation)`` (chunked, no gradients)."""
    return split_mean(instances, lambda part: problem.loss(predict(part.observation()), part.target), chunk)


class LearnedSolver(Solver):
    """Base class of learned solvers (see the module docstring).

    Hyper-parameters read by the base when the spec declares them: ``lr``
    (Adam's learning rate), ``gamma`` (layer-loss discount, default 1: every
    layer weighs the same) and ``fresh_samples`` (fresh training instances at
    every step, default true). Fitted state: ``network_`` and ``config_``.
    """

    # -- what a subclass declares ----------------------------------------------------
    def network_config(self, context: FitContext) -> dict[str, Any]:
        """Shapes and flags needed to rebuild the network, from the fit context."""
        raise NotImplementedError

    def make_network(self, config: Mapping[str, Any]) -> nn.Module:
        """The network for ``config`` (weights are set by ``init_network`` or a loaded state)."""
        raise NotImplementedError

    def init_network(self, network: nn.Module, context: FitContext) -> None:
        """Problem-informed initialisation before training; default: PyTorch's, under the cell's seed."""

    def precompute(self, observation: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Per-instance tensors that ``forward`` derives from an observation alone (first axis =
        instance), under keys of the solver's own. ``fit`` computes them once for the splits it
        reuses (validation, and training when it does not draw fresh instances) and adds them to
        those splits' observations; elsewhere ``forward`` computes them itself. Default: none.
        """
        return {}

    def forward(self, observation: Mapping[str, Any], keep_all: bool = True,
                depth: int | None = None) -> list[torch.Tensor]:
        """Every layer's output on ``observation`` (``keep_all``), or a list holding the last one.

        ``depth``: run the first ``depth`` layers only. The progressive schedule needs it, and
        the runner times a convergence curve by solving with ``depth = t`` (``timing.truncated``):
        a forward that ignores it gets a modelled time axis instead of a measured one.
        """
        raise NotImplementedError

    @property
    def depth(self) -> int:
        """Layers (iterations) of one forward pass."""
        return int(self.n_layers)

    # -- training ------------------------------------------------------------------------
    def fit(self, context: FitContext) -> "LearnedSolver":
        self.initialize(context)
        history = self.train_network(self._with_precomputed(context))
        if history is not None and "training" not in context.log:
            context.log["training"] = history
        self.network_.eval()
        return self

    def initialize(self, context: FitContext) -> "LearnedSolver":
        """Build the untrained network for ``context``: ``make_network`` under ``context.seed``
        (PyTorch's initialisation, the same on any machine), then ``init_network``; returns ``self``."""
        self.config_ = dict(self.network_config(context))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(context.seed)
            network = self.make_network(self.config_)
        self.network_ = network.to(context.device)
        with torch.no_grad():
            self.init_network(self.network_, context)
        self.network_.eval()
        return self

    def _with_precomputed(self, context: FitContext) -> FitContext:
        """``context`` whose reused splits carry ``precompute``'s tensors (computed in chunks)."""
        def augmented(instances: Instances) -> Instances:
            parts = [self.precompute(instances.subset(slice(start, start + VALIDATION_CHUNK)).observation())
                     for start in range(0, len(instances), VALIDATION_CHUNK)]
            if not parts or not parts[0]:
                return instances
            extra = {key: torch.cat([part[key] for part in parts]) for key in parts[0]}
            return replace(instances, observed={**instances.observed, **extra})

        fresh = getattr(self, "fresh_samples", True) and context.draw_train is not None
        with torch.no_grad():
            return replace(context, val=augmented(context.val),
                           train=context.train if fresh else augmented(context.train))

    def train_network(self, context: FitContext) -> list[dict]:
        """Train ``network_`` in place; returns the training history.

        Default: Adam on ``training_loss`` over every layer, early-stopped on
        ``validation_score``, then again at ``lr * d`` for each ``d`` in the
        hyper-parameter ``lr_decays`` (learning-rate decay stages; none when
        the solver has no such parameter). With ``schedule = "progressive"``,
        layer-wise training with the same decay stages
        (``l2obench.training.train_progressive``), for networks with
        ``layer_parameters(t)`` whose ``forward`` takes a ``depth``. The
        budget's steps are shared by the stages.
        """
        problem, fresh = context.problem, getattr(self, "fresh_samples", True)
        decays = self.decays()
        if getattr(self, "schedule", "joint") == "progressive":
            def output(observation, depth):
                return self.forward(observation, keep_all=False, depth=depth)[-1]

            return train_progressive(
                self.network_, self.depth, self.network_.layer_parameters,
                lambda batch, t: problem.loss(output(batch.observation(), t), batch.target).mean(),
                lambda t: mean_loss(problem, lambda obs: output(obs, t), context.val),
                context, lr=self.lr, decays=decays, fresh_samples=fresh, desc=self.describe_training())
        stages = decayed_stages(lambda batch: self.training_loss(self.forward(batch.observation()), batch, problem),
                                lambda: self.validation_score(context), self.lr, decays,
                                desc=self.describe_training())
        return train_stages(self.network_, stages, context, fresh)

    def decays(self) -> tuple[float, ...]:
        """The learning-rate factors of the decay stages (hyper-parameter ``lr_decays``; none without it)."""
        decays = getattr(self, "lr_decays", None) or ()
        return (float(decays),) if isinstance(decays, (int, float)) else tuple(decays)

    def training_loss(self, outputs: list[torch.Tensor], batch: Instances, problem) -> torch.Tensor:
        """The layer-weighted family loss ``sum_t gamma^(T-t) mean loss(out_t)`` (thesis 5.5.1)."""
        weights = layer_weights(len(outputs), getattr(self, "gamma", 1.0), outputs[-1])
        return weighted_layer_loss(problem, outputs, batch.target, weights)

    def validation_score(self, context: FitContext) -> float:
        """Lower is better: the mean family loss of the last layer's output on the validation split."""
        return mean_loss(context.problem, lambda obs: self.forward(obs, keep_all=False)[-1], context.val)

    def describe_training(self) -> str:
        return f"train {type(self).__name__} (T={self.depth})"

    # -- solving and state --------------------------------------------------------------
    def solve(self, observation, trajectory: bool = False) -> Solution:
        self._check_fitted()
        with torch.no_grad():
            outputs = self.forward(observation, keep_all=trajectory)
        estimate = outputs[-1]
        iterations = torch.full((estimate.shape[0],), self.depth, dtype=torch.long, device=estimate.device)
        return Solution(estimate, outputs if trajectory else None, iterations)

    def state_dict(self) -> dict:
        self._check_fitted()
        weights = {k: v.detach().cpu().clone() for k, v in self.network_.state_dict().items()}
        return {"params": self.get_params(), "config": dict(self.config_), "weights": weights}

    def load_state_dict(self, state: Mapping[str, Any]) -> "LearnedSolver":
        self.set_params(**state["params"])
        self.config_ = dict(state["config"])
        self.network_ = self.make_network(self.config_)
        self.network_.load_state_dict(state["weights"])
        self.network_.requires_grad_(False)
        self.network_.eval()
        return self

    def to(self, device) -> "LearnedSolver":
        self._check_fitted()
        self.network_.to(device)
        return self

    def _check_fitted(self) -> None:
        if getattr(self, "network_", None) is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(context) or load_state_dict(state) first")

