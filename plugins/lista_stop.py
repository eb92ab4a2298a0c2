"""LISTA-stop: LISTA with a learned, instance-wise stopping policy (thesis chapter 5).

Predictive model: the T-layer LISTA network ``x_t = soft(W1_t b + W2_t x_{t-1}, theta_t)``
(thesis eq. 5.11, ``l2obench.unrolled.LISTANetwork``). Stopping policy:
``pi_t = pi_phi(b, x_t)``, the probability of stopping after layer ``t < T``
(eq. 5.2), an MLP over ``[b, b - A x_t, x_t, e_t]`` (the authors' policy,
``policy_features = "vectors"``) or over scale-free summaries of the iterates
(``"summary"``: the relative step ``||x_t - x_{t-1}|| / ||x_t||``, ``||x_t|| /
||b||`` and the fraction of non-zeros, which cost O(n) an instance where the
vectors cost a product with ``A`` and an MLP layer as wide as a LISTA layer),
with ``e_t`` a sinusoidal encoding of ``t``. Training follows section 5.4 with the stopping mathematics
of ``l2obench.stopping`` (per-layer losses are the family's ``loss``):

- stage I fits the network against the oracle stop distribution ``q*`` (eq. 5.8-5.9),
  from the ISTA initialisation as in the authors' code, with the learning-rate
  decay stages (``lr_decays``). With ``warm_start`` the network is first trained
  as LISTA is (``schedule``) and stage I starts from there: its last layer is
  then the best on nearly every instance and the policy learns to run all T;
- stage II fixes the network and fits the policy by the forward KL (eq. 5.10).
  With ``hard_oracle`` (the default, as in the authors' code) ``q*`` is
  replaced by its mode, the best layer: imitating a spread ``q*`` leaves every
  stop probability below 1/2, so the ``threshold`` rule would rarely stop;
- stage III (``finetune_steps > 0``) fine-tunes both on eq. 5.6 (Table 5.3).

The prior over stop times is uniform (the thesis's experiments) unless
``layer_cost`` is set: ``p(t) ∝ exp(-layer_cost t / beta)`` (section 5.3.4),
so that a layer is worth running only where it lowers the loss, in units of
the mean ``||x*||^2``, by more than ``layer_cost``
(``l2obench.stopping.with_depth_prior``); model selection in stage II then
scores the rule by the same penalised loss.

After training, the policy is kept only after the layers where its stop
distribution ``q_phi``, averaged over the validation split, holds at least
``support_mass`` (the authors' code likewise restricts stopping to the layers
where the posterior has mass): elsewhere it would almost never stop, and not
running it there is most of what makes stopping cheaper than running on.

At test time the policy decides sequentially after each of those layers, by the rule
``stop_rule``: ``threshold`` stops when ``pi_t > 0.5`` (deterministic),
``sample`` draws the decision from ``Bernoulli(pi_t)`` with a seeded generator,
``never`` runs all T layers (the stage-I network alone). Instances that stop
leave the batch, so early stopping saves real computation.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from l2obench.contracts import FitContext, Solution
from l2obench.learned import VALIDATION_CHUNK, LearnedSolver, mean_loss, split_mean
from l2obench.stopping import (layer_losses, log_stop_distribution, stage1_loss, stage2_loss, stage3_loss,
                               with_depth_prior)
from l2obench.training import decayed_stages, train, train_stages
from l2obench.unrolled import LISTANetwork, shared_design

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


def summary_features(b: torch.Tensor, x: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """Scale-free summaries of iterate ``x_t`` (``(..., N, n)``) after ``previous = x_{t-1}``: the
    log relative step ``||x_t - x_{t-1}||^2 / ||x_t||^2``, the log ratio ``||x_t||^2 / ||b||^2`` and
    the fraction of non-zeros, ``(..., N, 3)``. Row-wise dot products and no product with ``A``:
    a few percent of a LISTA layer's cost."""
    tiny = torch.finfo(x.dtype).tiny
    dot = torch.linalg.vecdot
    size, before, cross = dot(x, x), dot(previous, previous), dot(x, previous)
    step = (size + before - 2 * cross).clamp_min(0)  # ||x_t - x_{t-1}||^2
    nonzero = x.sign().abs().sum(-1) / x.shape[-1]
    return torch.stack([torch.log((step + tiny) / (size + tiny)), torch.log((size + tiny) / (dot(b, b) + tiny)),
                        nonzero], dim=-1)


class StopPolicy(nn.Module):
    """``pi_phi(b, x_t)``: an MLP to the stop logit from ``[b, b - A x_t, x_t, e_t]`` (``vectors``, the
    authors' policy) or from ``[summary_features(b, x_t, x_{t-1}), e_t]`` (``summary``)."""

    FEATURES = ("vectors", "summary")

    def __init__(self, m: int, n: int, n_layers: int, hidden: int, position_dim: int, features: str = "vectors"):
        super().__init__()
        if features not in self.FEATURES:
            raise ValueError(f"policy features must be one of {', '.join(self.FEATURES)}, got {features!r}")
        self.features = features
        self.register_buffer("encoding", position_encoding(n_layers, position_dim))
        width = (2 * m + n if features == "vectors" else 3) + position_dim
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, A: torch.Tensor, b: torch.Tensor, x: torch.Tensor, t: torch.Tensor | int,
                previous: torch.Tensor) -> torch.Tensor:
        """Stop logits for iterates ``x`` (``(..., N, n)``) after layers ``t`` (0-based), ``previous``
        the iterates before them (zeros before layer 0).

        ``t`` is an int, or a tensor of layer indices broadcastable to ``x``'s
        leading dimensions with a trailing 1 (``(T-1, 1)`` for all layers at once
        during training, with ``x`` of shape ``(T-1, N, n)``).
        """
        code = self.encoding[t]
        code = code.expand(*x.shape[:-1], code.shape[-1])
        b = b.expand(*x.shape[:-1], b.shape[-1])
        if self.features == "vectors":
            features = torch.cat([b, b - x @ A.T, x, code], dim=-1)
        else:
            features = torch.cat([summary_features(b, x, previous), code], dim=-1)
        return self.mlp(features).squeeze(-1)


class LISTAStopModel(nn.Module):
    """The predictive model (``lista``), the stopping policy (``policy``) and the layers after
    which the policy may stop (``stop_layers``, ``(T-1,)`` booleans) of LISTA-stop."""

    def __init__(self, m: int, n: int, n_layers: int, hidden: int, position_dim: int, features: str = "vectors"):
        super().__init__()
        self.lista = LISTANetwork(m, n, n_layers)
        self.policy = StopPolicy(m, n, n_layers, hidden, position_dim, features)
        self.register_buffer("stop_layers", torch.ones(n_layers - 1, dtype=torch.bool))

    def layer_parameters(self, t: int) -> list[nn.Parameter]:
        """Layer ``t``'s parameters of the predictive model (its progressive training)."""
        return self.lista.layer_parameters(t)


class LISTAStop(LearnedSolver):
    """LISTA with a learned stopping policy (``lasso`` family).

    Hyper-parameters (see ``l2obench list``): ``n_layers``, ``beta``,
    ``layer_cost``, ``policy_features``, ``warm_start``, ``schedule``, ``gamma``, ``lr``, ``lam_init``,
    ``fresh_samples``, ``policy_hidden``, ``policy_lr``, ``policy_steps``, ``support_mass``,
    ``hard_oracle``, ``finetune_steps``, ``stop_rule``, ``sample_seed``.
    Fitted state: ``network_`` (a ``LISTAStopModel``).
    """

    POSITION_DIM = 8

    def network_config(self, context: FitContext) -> dict:
        m, n = shared_design(context, "LISTA-stop").shape
        return {"m": int(m), "n": int(n)}

    def make_network(self, config) -> LISTAStopModel:
        return LISTAStopModel(config["m"], config["n"], self.n_layers, self.policy_hidden, self.POSITION_DIM,
                              self.policy_features)

    def init_network(self, network: LISTAStopModel, context: FitContext) -> None:
        network.lista.set_ista(shared_design(context, "LISTA-stop"), self.lam_init)

    def forward(self, observation, keep_all: bool = True, depth: int | None = None):
        """The predictive model's layer outputs (no stopping)."""
        return self.network_.lista(observation["b"], keep_all=keep_all, depth=depth)

    def train_network(self, context: FitContext) -> dict:
        """Warm start (optional), stage I, stage II, stage III (optional); returns each one's history."""
        problem, lista, policy = context.problem, self.network_.lista, self.network_.policy
        history = {}
        if self.warm_start:
            history["warm_start"] = super().train_network(context)

        def losses(batch) -> torch.Tensor:
            return with_depth_prior(layer_losses(problem, self.forward(batch.observation()), batch.target),
                                    self.layer_cost)

        def best_layer_loss() -> float:  # the oracle's choice: what stage I optimises
            return split_mean(context.val, lambda part: torch.stack(
                [problem.loss(x, part.target) for x in self.forward(part.observation())]).amin(0))

        # The loss of the zero estimate on the validation split: the unit of the penalised rule's loss.
        zero = split_mean(context.val, lambda part: problem.loss(
            part.observation()["b"].new_zeros(len(part), self.config_["n"]), part.target)) if self.layer_cost else None

        def threshold_rule_loss() -> float:  # model selection with the deterministic rule
            if not self.layer_cost:
                return mean_loss(problem, lambda obs: self._solve(obs, False, "threshold").estimate, context.val)

            def penalised(part) -> torch.Tensor:  # l + c t of the stop the rule takes, l in units of the zero loss
                stopped = self._solve(part.observation(), False, "threshold")
                return problem.loss(stopped.estimate, part.target) / zero + self.layer_cost * stopped.iterations

            return split_mean(context.val, penalised)

        history["stage1"] = train_stages(self.network_, decayed_stages(
            lambda batch: stage1_loss(losses(batch), self.beta), best_layer_loss, self.lr, self.decays(),
            list(lista.parameters()), f"LISTA-stop stage I (T={self.n_layers})"), context, self.fresh_samples)

        def policy_loss(batch) -> torch.Tensor:
            observation = batch.observation()
            with torch.no_grad():
                outputs = self.forward(observation)
            return stage2_loss(with_depth_prior(layer_losses(problem, outputs, batch.target), self.layer_cost),
                               self._all_logits(observation, outputs), self.beta, self.hard_oracle)

        history["stage2"] = train(self.network_, policy_loss, threshold_rule_loss, context, lr=self.policy_lr,
                                  fresh_samples=self.fresh_samples, desc="LISTA-stop stage II (policy)",
                                  parameters=list(policy.parameters()), steps=self.policy_steps)
        if self.finetune_steps:
            def joint_loss(batch) -> torch.Tensor:
                observation = batch.observation()
                outputs = self.forward(observation)
                return stage3_loss(with_depth_prior(layer_losses(problem, outputs, batch.target), self.layer_cost),
                                   self._all_logits(observation, outputs), self.beta)

            history["stage3"] = train(self.network_, joint_loss, threshold_rule_loss, context,
                                      lr=FINETUNE_LR_FACTOR * self.lr, fresh_samples=self.fresh_samples,
                                      desc="LISTA-stop stage III (joint)", steps=self.finetune_steps)
        mass = self.stop_mass(context.val)
        self.network_.stop_layers.copy_(mass[:-1] >= self.support_mass)
        history["stop_support"] = {"q_phi_mean": mass.tolist(),
                                   "stop_layers": (torch.nonzero(self.network_.stop_layers).flatten() + 1).tolist()}
        return history

    def stop_mass(self, instances) -> torch.Tensor:
        """``q_phi(t)`` averaged over ``instances``, ``(T,)``, every layer allowed to stop."""
        total = 0.0
        with torch.no_grad():
            for start in range(0, len(instances), VALIDATION_CHUNK):
                observation = instances.subset(slice(start, start + VALIDATION_CHUNK)).observation()
                logits = self._all_logits(observation, self.forward(observation))
                total = total + log_stop_distribution(logits).exp().double().sum(0)
        return (total / max(len(instances), 1)).float()

    def _all_logits(self, observation, outputs: list[torch.Tensor]) -> torch.Tensor:
        """Stop logits ``(N, T-1)`` after every layer but the last, in one MLP call."""
        b = observation["b"]
        states = torch.stack(outputs[:-1])  # (T-1, N, n)
        previous = torch.cat([torch.zeros_like(states[:1]), states[:-1]])
        layers = torch.arange(len(outputs) - 1, device=b.device).unsqueeze(-1)  # (T-1, 1)
        return self.network_.policy(observation["A"], b.unsqueeze(0), states, layers, previous).T

    def _uniforms(self, N: int, rule: str, device) -> torch.Tensor | None:
        """Per-instance uniforms of the ``sample`` rule, drawn up front so that the
        early-exit and full-depth passes take the same decisions."""
        if rule != "sample":
            return None
        generator = torch.Generator().manual_seed(self.sample_seed)
        return torch.rand(N, self.n_layers - 1, generator=generator).to(device)

    @staticmethod
    def _stops(logits: torch.Tensor, uniforms: torch.Tensor | None, t: int) -> torch.Tensor:
        if uniforms is None:  # threshold rule: pi_t > 0.5
            return logits > 0
        return uniforms[:, t] < torch.sigmoid(logits)

    def solve(self, observation, trajectory=False) -> Solution:
        self._check_fitted()
        with torch.no_grad():
            return self._solve(observation, trajectory, self.stop_rule)

    def _solve(self, observation, trajectory: bool, rule: str) -> Solution:
        if trajectory:
            return self._solve_full_depth(observation, rule)
        A, b = observation["A"], observation["b"]
        lista, policy = self.network_.lista, self.network_.policy
        N, T = b.shape[0], self.n_layers
        uniforms = self._uniforms(N, rule, b.device)
        estimate = b.new_empty(N, A.shape[1])
        stop_time = torch.full((N,), T, dtype=torch.long, device=b.device)
        active = torch.arange(N, device=b.device)
        x = None
        may_stop = self.network_.stop_layers.tolist()
        for t in range(T):
            previous = x
            x = lista.layer(t, b, x)
            if t == T - 1 or rule == "never" or not may_stop[t]:
                continue
            if previous is None:
                previous = torch.zeros_like(x)
            stop = self._stops(policy(A, b, x, t, previous), uniforms, t)
            if stop.any():
                rows = torch.nonzero(stop).flatten()
                where = active.index_select(0, rows)
                estimate.index_copy_(0, where, x.index_select(0, rows))
                stop_time[where] = t + 1
                keep = torch.nonzero(~stop).flatten()
                active, b, x = active.index_select(0, keep), b.index_select(0, keep), x.index_select(0, keep)
                if uniforms is not None:
                    uniforms = uniforms.index_select(0, keep)
                if active.numel() == 0:
                    break
        if active.numel():
            estimate.index_copy_(0, active, x)
        return Solution(estimate, None, stop_time)

    def _solve_full_depth(self, observation, rule: str) -> Solution:
        """Every layer on every instance: the trajectory (each instance's iterate held
        from its stop on, so it ends at the estimate) and ``q_phi`` for all instances."""
        b = observation["b"]
        N, T = b.shape[0], self.n_layers
        outputs = self.forward(observation)
        logits = self._all_logits(observation, outputs).masked_fill(~self.network_.stop_layers, -math.inf)
        distribution = log_stop_distribution(logits).exp()
        if rule == "never":
            stop_time = torch.full((N,), T, dtype=torch.long, device=b.device)
        else:
            uniforms = self._uniforms(N, rule, b.device)
            stops = torch.stack([self._stops(logits[:, t], uniforms, t) for t in range(T - 1)], dim=-1)
            stops = torch.cat([stops, stops.new_ones(N, 1)], dim=-1)
            stop_time = stops.int().argmax(-1) + 1  # first layer whose decision is "stop"
        held = [outputs[0]]
        for t in range(1, T):  # hold each instance's iterate from its stop on
            held.append(torch.where((stop_time <= t).unsqueeze(-1), held[t - 1], outputs[t]))
        return Solution(held[-1], held, stop_time, stop_distribution=distribution)

    def full_depth(self) -> "LISTAStop":
        """The same fitted model running all T layers (to time what stopping saves)."""
        clone = copy.copy(self)
        clone.stop_rule = "never"
        return clone

