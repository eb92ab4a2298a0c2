"""Learned stopping: a predictive model with intermediate outputs and a stopping policy (thesis chapter 5).

``LearnedStopping`` is the solver machinery that any "predictive model with
intermediate outputs ``x_1 .. x_T`` + stopping policy ``pi_t``" needs, once
for all of them (LISTA-stop, DnCNN-stop); the mathematics is in
``l2obench.stopping``. It trains by thesis section 5.4:

- optional warm start (``warm_start``): the predictive model trained first as
  the plain learned solver is (``LearnedSolver.train_network``);
- stage I fits the predictive model against the oracle stop distribution
  ``q*`` (eq. 5.8-5.9), with the learning-rate decay stages (``lr_decays``),
  validated by each instance's best output (the oracle's choice);
- stage II fixes the predictive model (in evaluation mode: batch normalisation
  on its running statistics) and fits the policy by the forward KL
  (eq. 5.10), the oracle replaced by its mode with ``hard_oracle``; model
  selection scores the ``threshold`` rule (its mean loss, or with a depth prior
  ``layer_cost`` the penalised ``l / l_0 + c t``, ``l_0`` the zero estimate's);
- stage III (``finetune_steps > 0``) fine-tunes both on eq. 5.6 (Table 5.3);
- the policy support: the policy runs only after the outputs where its stop
  distribution ``q_phi``, averaged over the validation split, holds at least
  ``support_mass`` (``StoppingModel.stop_layers``).

At solve time the policy decides sequentially after each allowed output, by
``stop_rule`` (``threshold``: ``pi_t > 0.5``; ``sample``: Bernoulli with seeded
uniforms; ``never``: all T); instances that stop leave the batch, so the rest
of the predictive model is not run for them. ``solve(trajectory=True)`` is the
full-depth pass: every output, each instance's estimate held from its stop on,
and ``q_phi`` for every instance. ``full_depth()`` is the same model with
``stop_rule = "never"`` (the runner times what stopping saves against it).

A subclass declares, besides ``network_config`` / ``make_network`` /
``init_network`` of ``LearnedSolver`` (its network is a ``StoppingModel``):

- ``INSTANCE_KEYS``: the observation keys with one row per instance (the
  early exit drops the stopped rows from them);
- ``exit_step(t, state, observation)``: the predictive model's computation from
  output ``t - 1`` to output ``t`` (0-based; ``state`` is ``None`` before the
  first), returning the new state (a tensor, one row per instance);
- ``exit_output(t, state, observation)``: output ``x_{t+1}`` from that state
  (an estimate of the family's target);
- ``layer_logits(observation, t, output, state, previous)``: the policy's stop
  logits ``(N,)`` after output ``t`` (``previous``: the state before the step,
  ``None`` at ``t = 0``);
- ``all_logits(observation, outputs)``: stop logits ``(N, T-1)`` after every
  output but the last, from the full list of outputs (training and the
  full-depth pass; one batched call where the policy allows it);
- ``zero_estimate(observation)``: the zero estimate (the unit of the penalised
  rule's loss);

and may override ``n_outputs`` (T, default ``depth``), ``training_batch`` (what
every stage trains on, e.g. random patches of the batch), ``warm_start_network``,
``stage1_lr``, ``validation_chunk`` and ``label`` (progress bars).
The hyper-parameters it reads are those of LISTA-stop's spec: ``beta``,
``layer_cost``, ``warm_start``, ``lr``, ``lr_decays``, ``fresh_samples``,
``policy_lr``, ``policy_steps``, ``hard_oracle``, ``finetune_steps``,
``support_mass``, ``stop_rule``, ``sample_seed``; and ``stage1_steps`` where
the spec declares it (stage I's steps, shared by its decay stages; otherwise,
and when null, the budget's).
"""
from __future__ import annotations

import copy
import math
from dataclasses import replace
from typing import Any, Mapping

import torch
from torch import nn

from l2obench.contracts import FitContext, Instances, Solution
from l2obench.learned import VALIDATION_CHUNK, LearnedSolver, mean_loss, split_mean
from l2obench.stopping import (layer_losses, log_stop_distribution, stage1_loss, stage2_loss, stage3_loss,
                               with_depth_prior)
from l2obench.training import Stage, decayed_stages, train, train_stages

__all__ = ["FINETUNE_LR_FACTOR", "LearnedStopping", "StoppingModel", "position_encoding"]

# Stage III fine-tunes at this fraction of stage I's learning rate.
FINETUNE_LR_FACTOR = 0.1


def position_encoding(n_positions: int, dim: int) -> torch.Tensor:
    """Sinusoidal encoding ``(n_positions, dim)`` of positions ``1..n_positions``."""
    position = torch.arange(1, n_positions + 1, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    encoding = torch.zeros(n_positions, dim)
    encoding[:, 0::2] = torch.sin(position * frequency)
    encoding[:, 1::2] = torch.cos(position * frequency)[:, : dim // 2]
    return encoding


class StoppingModel(nn.Module):
    """Base of a learned-stopping network: a predictive model (``predictive``, set by the
    subclass under a name of its own), a stopping policy (``policy``) and the outputs after
    which the policy may stop (buffer ``stop_layers``, ``(T-1,)`` booleans, all true until the
    support is computed after training)."""

    def __init__(self, n_outputs: int):
        super().__init__()
        self.register_buffer("stop_layers", torch.ones(n_outputs - 1, dtype=torch.bool))

    @property
    def predictive(self) -> nn.Module:
        """The predictive model (trained in stage I)."""
        raise NotImplementedError


class LearnedStopping(LearnedSolver):
    """Base class of learned solvers with a learned stopping policy (see the module docstring).

    Fitted state: ``network_`` (a ``StoppingModel``) and ``config_``.
    """

    INSTANCE_KEYS: tuple[str, ...] = ()

    # -- what a subclass declares ------------------------------------------------------
    def exit_step(self, t: int, state: torch.Tensor | None, observation: Mapping[str, Any]) -> torch.Tensor:
        """The predictive model from output ``t - 1`` to output ``t`` (0-based): the new state."""
        raise NotImplementedError

    def exit_output(self, t: int, state: torch.Tensor, observation: Mapping[str, Any]) -> torch.Tensor:
        """Output ``t`` (0-based; an estimate of the target) from the state after step ``t``."""
        raise NotImplementedError

    def layer_logits(self, observation: Mapping[str, Any], t: int, output: torch.Tensor, state: torch.Tensor,
                     previous: torch.Tensor | None) -> torch.Tensor:
        """Stop logits ``(N,)`` after output ``t`` (``previous``: the state before step ``t``)."""
        raise NotImplementedError

    def all_logits(self, observation: Mapping[str, Any], outputs: list[torch.Tensor]) -> torch.Tensor:
        """Stop logits ``(N, T-1)`` after every output but the last."""
        raise NotImplementedError

    def zero_estimate(self, observation: Mapping[str, Any]) -> torch.Tensor:
        """The zero estimate for ``observation`` (its loss is the unit of the penalised rule)."""
        raise NotImplementedError

    @property
    def n_outputs(self) -> int:
        """T: the predictive model's outputs, the stop times ``1 .. T``."""
        return self.depth

    @property
    def label(self) -> str:
        """The solver's name in progress bars."""
        return type(self).__name__

    def training_batch(self, batch: Instances) -> Instances:
        """The batch stage I and III train on (default: ``batch`` itself)."""
        return batch

    # -- the predictive model's passes --------------------------------------------------
    def forward(self, observation, keep_all: bool = True, depth: int | None = None) -> list[torch.Tensor]:
        """The predictive model's outputs (no stopping): every one (``keep_all``) or the last, of the
        first ``depth`` (default all)."""
        depth = self.n_outputs if depth is None else depth
        state, outputs = None, []
        for t in range(depth):
            state = self.exit_step(t, state, observation)
            if keep_all or t == depth - 1:
                outputs.append(self.exit_output(t, state, observation))
        return outputs

    def predictive_eval(self) -> None:
        """Put the predictive model in evaluation mode (batch norm on its running statistics) where it is
        held fixed while the policy trains (stage II)."""
        self.network_.predictive.eval()

    # -- training ----------------------------------------------------------------------
    def warm_start_network(self, context: FitContext) -> list[dict]:
        """Train the predictive model as the plain learned solver is (``LearnedSolver.train_network``:
        its schedule, layer weighting and decay stages) before stage I."""
        return LearnedSolver.train_network(self, context)

    def train_network(self, context: FitContext) -> dict:
        """Warm start (optional), stage I, stage II, stage III (optional), the policy support;
        returns each one's history."""
        problem, policy = context.problem, self.network_.policy
        history = {}
        if self.warm_start:
            history["warm_start"] = self.warm_start_network(context)

        def losses(batch) -> torch.Tensor:
            return with_depth_prior(layer_losses(problem, self.forward(batch.observation()), batch.target),
                                    self.layer_cost)

        def best_layer_loss() -> float:  # the oracle's choice: what stage I optimises
            return split_mean(context.val, lambda part: torch.stack(
                [problem.loss(x, part.target) for x in self.forward(part.observation())]).amin(0),
                self.validation_chunk)

        # The loss of the zero estimate on the validation split: the unit of the penalised rule's loss.
        zero = split_mean(context.val, lambda part: problem.loss(self.zero_estimate(part.observation()), part.target),
                          self.validation_chunk) if self.layer_cost else None

        def threshold_rule_loss() -> float:  # model selection with the deterministic rule
            if not self.layer_cost:
                return mean_loss(problem, lambda obs: self._solve(obs, False, "threshold").estimate, context.val,
                                 self.validation_chunk)

            def penalised(part) -> torch.Tensor:  # l + c t of the stop the rule takes, l in units of the zero loss
                stopped = self._solve(part.observation(), False, "threshold")
                return problem.loss(stopped.estimate, part.target) / zero + self.layer_cost * stopped.iterations

            return split_mean(context.val, penalised, self.validation_chunk)

        stage1_steps = getattr(self, "stage1_steps", None)
        stage1_context = context if stage1_steps is None else replace(
            context, budget=replace(context.budget, steps=int(stage1_steps)))
        history["stage1"] = train_stages(self.network_, self.stage1_schedule(
            lambda batch: stage1_loss(losses(self.training_batch(batch)), self.beta), best_layer_loss, context),
            stage1_context, self.fresh_samples)

        def policy_loss(batch) -> torch.Tensor:
            batch = self.training_batch(batch)
            observation = batch.observation()
            self.predictive_eval()
            with torch.no_grad():
                outputs = self.forward(observation)
            return stage2_loss(with_depth_prior(layer_losses(problem, outputs, batch.target), self.layer_cost),
                               self.all_logits(observation, outputs), self.beta, self.hard_oracle)

        history["stage2"] = train(self.network_, policy_loss, threshold_rule_loss, context, lr=self.policy_lr,
                                  fresh_samples=self.fresh_samples, desc=f"{self.label} stage II (policy)",
                                  parameters=list(policy.parameters()), steps=self.policy_steps)
        if self.finetune_steps:
            def joint_loss(batch) -> torch.Tensor:
                batch = self.training_batch(batch)
                observation = batch.observation()
                outputs = self.forward(observation)
                return stage3_loss(with_depth_prior(layer_losses(problem, outputs, batch.target), self.layer_cost),
                                   self.all_logits(observation, outputs), self.beta)

            history["stage3"] = train(self.network_, joint_loss, threshold_rule_loss, context,
                                      lr=FINETUNE_LR_FACTOR * self.lr, fresh_samples=self.fresh_samples,
                                      desc=f"{self.label} stage III (joint)", steps=self.finetune_steps)
        mass = self.stop_mass(context.val)
        self.network_.stop_layers.copy_(mass[:-1] >= self.support_mass)
        history["stop_support"] = {"q_phi_mean": mass.tolist(),
                                   "stop_layers": (torch.nonzero(self.network_.stop_layers).flatten() + 1).tolist()}
        return history

    @property
    def stage1_lr(self) -> float:
        """Stage I's learning rate (before its decay stages); default: the hyper-parameter ``lr``."""
        return self.lr

    def stage1_schedule(self, loss_fn, validate, context: FitContext) -> list[Stage]:
        """Stage I's stages (``train_stages``) on its loss ``loss_fn`` and validation ``validate``: the
        predictive model at ``stage1_lr``, then its decay stages."""
        return decayed_stages(loss_fn, validate, self.stage1_lr, self.decays(),
                              list(self.network_.predictive.parameters()), f"{self.label} stage I (T={self.n_outputs})")

    @property
    def validation_chunk(self) -> int:
        """Instances per chunk of a pass over a whole split."""
        return VALIDATION_CHUNK

    def stop_mass(self, instances: Instances) -> torch.Tensor:
        """``q_phi(t)`` averaged over ``instances``, ``(T,)``, every output allowed to stop."""
        total = 0.0
        with torch.no_grad():
            for start in range(0, len(instances), self.validation_chunk):
                observation = instances.subset(slice(start, start + self.validation_chunk)).observation()
                logits = self.all_logits(observation, self.forward(observation))
                total = total + log_stop_distribution(logits).exp().double().sum(0)
        return (total / max(len(instances), 1)).float()

    # -- solving -----------------------------------------------------------------------
    def _uniforms(self, N: int, rule: str, device) -> torch.Tensor | None:
        """Per-instance uniforms of the ``sample`` rule, drawn up front so that the
        early-exit and full-depth passes take the same decisions."""
        if rule != "sample":
            return None
        generator = torch.Generator().manual_seed(self.sample_seed)
        return torch.rand(N, self.n_outputs - 1, generator=generator).to(device)

    @staticmethod
    def _stops(logits: torch.Tensor, uniforms: torch.Tensor | None, t: int) -> torch.Tensor:
        if uniforms is None:  # threshold rule: pi_t > 0.5
            return logits > 0
        return uniforms[:, t] < torch.sigmoid(logits)

    def solve(self, observation, trajectory=False) -> Solution:
        self._check_fitted()
        with torch.no_grad():
            return self._solve(observation, trajectory, self.stop_rule)

    def _keep_rows(self, observation: Mapping[str, Any], rows: torch.Tensor) -> dict[str, Any]:
        """``observation`` with only ``rows`` of its per-instance entries (``INSTANCE_KEYS``)."""
        return {key: value.index_select(0, rows) if key in self.INSTANCE_KEYS else value
                for key, value in observation.items()}

    def _solve(self, observation, trajectory: bool, rule: str) -> Solution:
        """The sequential early-exit pass (or, with ``trajectory``, the full-depth pass)."""
        if trajectory:
            return self._solve_full_depth(observation, rule)
        first = observation[self.INSTANCE_KEYS[0]]
        N, T, device = first.shape[0], getattr(self, "max_outputs_", None) or self.n_outputs, first.device
        uniforms = self._uniforms(N, rule, device)
        estimate = None
        stop_time = torch.full((N,), T, dtype=torch.long, device=device)
        active = torch.arange(N, device=device)
        state = None
        may_stop = self.network_.stop_layers.tolist()
        for t in range(T):
            previous = state
            state = self.exit_step(t, state, observation)
            if t == T - 1 or rule == "never" or not may_stop[t]:
                continue
            output = self.exit_output(t, state, observation)
            stop = self._stops(self.layer_logits(observation, t, output, state, previous), uniforms, t)
            if stop.any():
                if estimate is None:
                    estimate = output.new_empty(N, *output.shape[1:])
                rows = torch.nonzero(stop).flatten()
                where = active.index_select(0, rows)
                estimate.index_copy_(0, where, output.index_select(0, rows))
                stop_time[where] = t + 1
                keep = torch.nonzero(~stop).flatten()
                active, state = active.index_select(0, keep), state.index_select(0, keep)
                observation = self._keep_rows(observation, keep)
                if uniforms is not None:
                    uniforms = uniforms.index_select(0, keep)
                if active.numel() == 0:
                    break
        if active.numel():
            last = self.exit_output(T - 1, state, observation)
            if estimate is None:
                estimate = last.new_empty(N, *last.shape[1:])
            estimate.index_copy_(0, active, last)
        return Solution(estimate, None, stop_time)

    def _solve_full_depth(self, observation, rule: str) -> Solution:
        """Every output on every instance: the trajectory (each instance's output held
        from its stop on, so it ends at the estimate) and ``q_phi`` for all instances."""
        outputs = self.forward(observation)
        N, T, device = outputs[0].shape[0], self.n_outputs, outputs[0].device
        logits = self.all_logits(observation, outputs).masked_fill(~self.network_.stop_layers, -math.inf)
        distribution = log_stop_distribution(logits).exp()
        if rule == "never":
            stop_time = torch.full((N,), T, dtype=torch.long, device=device)
        else:
            uniforms = self._uniforms(N, rule, device)
            stops = torch.stack([self._stops(logits[:, t], uniforms, t) for t in range(T - 1)], dim=-1)
            stops = torch.cat([stops, stops.new_ones(N, 1)], dim=-1)
            stop_time = stops.int().argmax(-1) + 1  # first output whose decision is "stop"
        held = [outputs[0]]
        for t in range(1, T):  # hold each instance's output from its stop on
            stopped = (stop_time <= t).view(-1, *([1] * (outputs[t].dim() - 1)))
            held.append(torch.where(stopped, held[t - 1], outputs[t]))
        return Solution(held[-1], held, stop_time, stop_distribution=distribution)

    def truncated(self, depth: int) -> "LearnedStopping":
        """The same fitted model stopping every instance by output ``depth`` (its trajectory's
        estimate there; the runner times the trajectory with it, ``l2obench.timing.truncated``)."""
        clone = copy.copy(self)
        clone.max_outputs_ = depth
        return clone

    def full_depth(self) -> "LearnedStopping":
        """The same fitted model running all T outputs (to time what stopping saves)."""
        clone = copy.copy(self)
        clone.stop_rule = "never"
        return clone
