"""LISTA-stop: LISTA with a learned, instance-wise stopping policy (thesis chapter 5).

Predictive model: the T-layer LISTA network ``x_t = soft(W1_t b + W2_t x_{t-1}, theta_t)``
(thesis eq. 5.11). Stopping policy: ``pi_t = pi_phi(b, x_t)``, the probability of
stopping after layer ``t < T`` (eq. 5.2), an MLP over ``[b, b - A x_t, x_t, e_t]``
with ``e_t`` a sinusoidal encoding of ``t``. The policy induces the stop-time
distribution (eq. 5.3)

    q_phi(t) = pi_t prod_{tau < t} (1 - pi_tau),  t < T;   q_phi(T) = prod_{tau < T} (1 - pi_tau).

Training (section 5.4), with the loss ``l_t = ||x_t - x*||^2 / s`` (``s`` the
batch mean of ``||x*||^2``, so that the temperature ``beta`` is dimensionless):

- Stage I fits the network against the oracle stop distribution
  ``q*(t) = softmax_t(-l_t / beta)`` (eq. 5.8). The objective of eq. 5.9 with a
  uniform prior, ``E_{q*} l - beta H(q*)``, equals ``-beta log sum_t exp(-l_t / beta)``
  up to a constant, which is the loss minimised.
- Stage II fixes the network and fits the policy by the forward KL
  ``KL(q* || q_phi) = -sum_t q*(t) log q_phi(t) + const`` (eq. 5.10). With
  ``hard_oracle`` (the default, as in the authors' code) ``q*`` is replaced by
  its mode, the best layer: imitating a spread ``q*`` leaves every stop
  probability below 1/2, so the ``threshold`` rule would rarely stop.
- Stage III (joint fine-tuning) is optional in the thesis and not implemented.

With ``warm_start`` the network is first trained as LISTA (the layer-weighted
loss, same budget) and stage I starts from there: on a training budget that
fits a CPU, stage I from the ISTA initialisation leaves the last layers worse
than LISTA's, and the policy has little to choose from.

At test time the policy decides sequentially after each layer, by the rule
``stop_rule``: ``threshold`` stops when ``pi_t > 0.5`` (deterministic),
``sample`` draws the decision from ``Bernoulli(pi_t)`` with a seeded generator,
``never`` runs all T layers (the stage-I network alone). Instances that stop
leave the batch, so early stopping saves real computation.
"""
from __future__ import annotations

import copy
import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from l2obench.contracts import Budget, FitContext, Solution, Solver
from l2obench.training import train
from l2obench_plugins.lista import (EVAL_CHUNK, LISTANetwork, chunked_nmse_db, shared_sensing_matrix,
                                    train_unrolled)

STOP_RULES = ("threshold", "sample", "never")


def position_encoding(n_positions: int, dim: int) -> torch.Tensor:
    """Sinusoidal encoding ``(n_positions, dim)`` of positions ``1..n_positions``."""
    position = torch.arange(1, n_positions + 1, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    encoding = torch.zeros(n_positions, dim)
    encoding[:, 0::2] = torch.sin(position * frequency)
    encoding[:, 1::2] = torch.cos(position * frequency)[:, : dim // 2]
    return encoding


class StopPolicy(nn.Module):
    """``pi_phi(b, x_t)``: an MLP from ``[b, b - A x_t, x_t, e_t]`` to the stop logit."""

    def __init__(self, m: int, n: int, n_layers: int, hidden: int, position_dim: int):
        super().__init__()
        self.register_buffer("encoding", position_encoding(n_layers, position_dim))
        self.mlp = nn.Sequential(nn.Linear(2 * m + n + position_dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, A: torch.Tensor, b: torch.Tensor, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """Stop logits for iterates ``x`` (``(..., N, n)``) after layers ``t`` (0-based).

        ``t`` is an int, or a tensor of layer indices broadcastable to ``x``'s
        leading dimensions with a trailing 1 (``(T-1, 1)`` for all layers at once
        during training, with ``x`` of shape ``(T-1, N, n)``).
        """
        code = self.encoding[t]
        code = code.expand(*x.shape[:-1], code.shape[-1])
        b = b.expand(*x.shape[:-1], b.shape[-1])
        features = torch.cat([b, b - x @ A.T, x, code], dim=-1)
        return self.mlp(features).squeeze(-1)


def log_stop_distribution(logits: torch.Tensor) -> torch.Tensor:
    """``log q_phi(t)`` (eq. 5.3) from stop logits ``(N, T-1)``; returns ``(N, T)``."""
    log_stop, log_go = F.logsigmoid(logits), F.logsigmoid(-logits)
    survive = torch.cumsum(log_go, dim=-1)  # log prod_{tau <= t} (1 - pi_tau)
    before = F.pad(survive[:, :-1], (1, 0))  # log prod_{tau < t} (1 - pi_tau)
    return torch.cat([log_stop + before, survive[:, -1:]], dim=-1)


def oracle_losses(outputs: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """``l_t = ||x_t - x*||^2 / mean ||x*||^2``, shape ``(N, T)``."""
    scale = (target**2).sum(-1).mean().clamp_min(1e-12).detach()
    return torch.stack([((x - target) ** 2).sum(-1) for x in outputs], dim=-1) / scale


class LISTAStop(Solver):
    """LISTA with a learned stopping policy (``lasso`` family).

    Hyper-parameters (see ``l2obench list``): ``n_layers``, ``beta``, ``warm_start``, ``gamma``, ``lr``,
    ``lam_init``, ``fresh_samples``, ``policy_hidden``, ``policy_lr``,
    ``policy_steps``, ``hard_oracle``, ``stop_rule``, ``sample_seed``. Fitted state:
    ``network_`` (the predictive model) and ``policy_``.
    """

    POSITION_DIM = 8

    def _check(self) -> None:
        if self.stop_rule not in STOP_RULES:
            raise ValueError(f"stop_rule must be one of {', '.join(STOP_RULES)}; got {self.stop_rule!r}")

    def fit(self, context: FitContext) -> "LISTAStop":
        self._check()
        A = shared_sensing_matrix(context, "LISTA-stop")
        m, n = A.shape
        self.network_ = LISTANetwork.from_ista(A, self.n_layers, self.lam_init)
        self.policy_ = StopPolicy(m, n, self.n_layers, self.policy_hidden, self.POSITION_DIM).to(context.device)
        beta = self.beta
        if self.warm_start:
            warm_history = train_unrolled(self.network_, self.n_layers, context, self.gamma, self.lr,
                                          self.fresh_samples, desc=f"LISTA-stop warm start (T={self.n_layers})")

        def stage1_loss(batch):
            losses = oracle_losses(self.network_(batch.observed["b"]), batch.target["x"])
            return (-beta * torch.logsumexp(-losses / beta, dim=-1)).mean()

        def best_layer_nmse_db() -> float:  # the oracle's choice: what stage I optimises
            err = ref = 0.0
            for start in range(0, len(context.val), EVAL_CHUNK):
                part = context.val.subset(slice(start, start + EVAL_CHUNK))
                outputs = self.network_(part.observed["b"])
                x = part.target["x"]
                err += float(torch.stack([((o - x) ** 2).sum(-1) for o in outputs]).amin(0).sum())
                ref += float((x**2).sum())
            return 10 * math.log10(err / ref) if err > 0 else -math.inf

        history = train(self.network_, stage1_loss, best_layer_nmse_db, context, lr=self.lr,
                        fresh_samples=self.fresh_samples, desc=f"LISTA-stop stage I (T={self.n_layers})")
        self.network_.requires_grad_(False)

        def stage2_loss(batch):
            b = batch.observed["b"]
            with torch.no_grad():
                outputs = self.network_(b)
                losses = oracle_losses(outputs, batch.target["x"])
                if self.hard_oracle:
                    oracle = F.one_hot(losses.argmin(-1), self.n_layers).to(losses.dtype)
                else:
                    oracle = torch.softmax(-losses / beta, dim=-1)
            logits = self._all_logits(A, b, outputs)
            return -(oracle * log_stop_distribution(logits)).sum(-1).mean()

        stage2 = replace(context, budget=_policy_budget(context.budget, self.policy_steps))

        def policy_nmse_db() -> float:  # model selection with the deterministic rule
            return chunked_nmse_db(lambda obs: self._solve(A, obs["b"], False, "threshold").estimate, context.val)

        policy_history = train(self.policy_, stage2_loss, policy_nmse_db, stage2, lr=self.policy_lr,
                               fresh_samples=self.fresh_samples, desc="LISTA-stop stage II (policy)")
        context.log["training"] = {"stage1": history, "stage2": policy_history}
        if self.warm_start:
            context.log["training"]["warm_start"] = warm_history
        return self

    def _all_logits(self, A: torch.Tensor, b: torch.Tensor, outputs: list[torch.Tensor]) -> torch.Tensor:
        """Stop logits ``(N, T-1)`` after every layer but the last, in one MLP call."""
        states = torch.stack(outputs[:-1])  # (T-1, N, n)
        layers = torch.arange(len(outputs) - 1, device=b.device).unsqueeze(-1)  # (T-1, 1)
        return self.policy_(A, b.unsqueeze(0), states, layers).T

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
        self._check()
        with torch.no_grad():
            return self._solve(observation["A"], observation["b"], trajectory, self.stop_rule)

    def _solve(self, A: torch.Tensor, b: torch.Tensor, trajectory: bool, rule: str) -> Solution:
        if trajectory:
            return self._solve_full_depth(A, b, rule)
        N, T = b.shape[0], self.n_layers
        uniforms = self._uniforms(N, rule, b.device)
        estimate = b.new_empty(N, A.shape[1])
        stop_time = torch.full((N,), T, dtype=torch.long, device=b.device)
        active = torch.arange(N, device=b.device)
        x = None
        for t in range(T):
            x = self.network_.layer(t, b, x)
            if t == T - 1 or rule == "never":
                continue
            stop = self._stops(self.policy_(A, b, x, t), uniforms, t)
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

    def _solve_full_depth(self, A: torch.Tensor, b: torch.Tensor, rule: str) -> Solution:
        """Every layer on every instance: the trajectory (each instance's iterate held
        from its stop on, so it ends at the estimate) and ``q_phi`` for all instances."""
        N, T = b.shape[0], self.n_layers
        outputs = self.network_(b)
        logits = self._all_logits(A, b, outputs)
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

    def state_dict(self) -> dict:
        return {"params": self.get_params(), "network": self.network_.stacked(),
                "policy": {k: v.detach().cpu() for k, v in self.policy_.state_dict().items()}}

    def load_state_dict(self, state) -> "LISTAStop":
        self.set_params(**state["params"])
        w = state["network"]
        self.network_ = LISTANetwork(w["W1"], w["W2"], w["theta"])
        n, m = w["W1"].shape[1:]
        self.policy_ = StopPolicy(m, n, self.n_layers, self.policy_hidden, self.POSITION_DIM)
        self.policy_.load_state_dict(state["policy"])
        self.network_.requires_grad_(False)
        self.policy_.requires_grad_(False)
        return self

    def to(self, device) -> "LISTAStop":
        self.network_.to(device)
        self.policy_.to(device)
        return self


def _policy_budget(budget: Budget, steps: int | None) -> Budget:
    """Stage II's budget: the suite's, with ``steps`` steps when given."""
    return replace(budget, steps=steps or budget.steps)
