"""Learned stopping (thesis chapter 5): the mathematics shared by every predictive model with a stopping policy.

A policy gives, after each layer ``t < T`` of a predictive model, the
probability ``pi_t`` of stopping there (eq. 5.2), which induces the stop-time
distribution (eq. 5.3)

    q_phi(t) = pi_t prod_{tau < t} (1 - pi_tau),  t < T;   q_phi(T) = prod_{tau < T} (1 - pi_tau).

Training (section 5.4) uses per-layer losses ``l_t`` in units of the loss of
the zero estimate, so that the temperature ``beta`` is dimensionless:

- stage I fits the predictive model against the oracle ``q*(t) =
  softmax_t(-l_t / beta)`` (eq. 5.8); with a uniform prior the objective of
  eq. 5.9, ``E_{q*} l - beta H(q*)``, equals ``-beta log sum_t exp(-l_t / beta)``
  up to a constant (``stage1_loss``);
- stage II fits the policy by the forward KL ``KL(q* || q_phi)`` (eq. 5.10;
  ``stage2_loss``);
- stage III (optional) fine-tunes both on the beta-VAE objective of eq. 5.6,
  ``E_{q_phi} l - beta H(q_phi)`` (``stage3_loss``).

The prior over stop times is uniform in the thesis's experiments; section
5.3.4 proposes "a prior with smaller probability on deeper layers" to reduce
the computation. With ``p(t) ∝ exp(-c t / beta)`` every formula above holds
with ``l_t`` replaced by ``l_t + c t`` (``with_depth_prior``): the oracle
stops where one more layer would lower the loss by less than ``c``.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

__all__ = ["layer_losses", "log_stop_distribution", "oracle", "stage1_loss", "stage2_loss", "stage3_loss",
           "with_depth_prior"]


def log_stop_distribution(logits: torch.Tensor) -> torch.Tensor:
    """``log q_phi(t)`` (eq. 5.3) from stop logits ``(N, T-1)``; returns ``(N, T)``."""
    log_stop, log_go = F.logsigmoid(logits), F.logsigmoid(-logits)
    survive = torch.cumsum(log_go, dim=-1)  # log prod_{tau <= t} (1 - pi_tau)
    before = F.pad(survive[:, :-1], (1, 0))  # log prod_{tau < t} (1 - pi_tau)
    return torch.cat([log_stop + before, survive[:, -1:]], dim=-1)


def layer_losses(problem, outputs: list[torch.Tensor], target: Mapping[str, Any]) -> torch.Tensor:
    """``l_t``: the family's loss of each layer's output over the batch mean loss of the zero
    estimate (``||x*||^2`` for squared errors), shape ``(N, T)``."""
    scale = problem.loss(torch.zeros_like(outputs[0]), target).mean().clamp_min(1e-12).detach()
    return torch.stack([problem.loss(x, target) for x in outputs], dim=-1) / scale


def with_depth_prior(losses: torch.Tensor, cost: float) -> torch.Tensor:
    """``l_t + c t``, t = 1..T: the losses of ``(N, T)`` under the prior ``p(t) ∝ exp(-c t / beta)``
    (section 5.3.4; uniform when ``cost`` is 0), up to a constant of ``t``."""
    if not cost:
        return losses
    return losses + cost * torch.arange(1, losses.shape[-1] + 1, dtype=losses.dtype, device=losses.device)


def stage1_loss(losses: torch.Tensor, beta: float) -> torch.Tensor:
    """Stage I (eq. 5.9 with the oracle of eq. 5.8): ``mean_i -beta log sum_t exp(-l_t / beta)``."""
    return (-beta * torch.logsumexp(-losses / beta, dim=-1)).mean()


def oracle(losses: torch.Tensor, beta: float, hard: bool) -> torch.Tensor:
    """``q*(t) = softmax_t(-l_t / beta)`` (eq. 5.8), or its mode as a one-hot (``hard``)."""
    if hard:
        return F.one_hot(losses.argmin(-1), losses.shape[-1]).to(losses.dtype)
    return torch.softmax(-losses / beta, dim=-1)


def stage2_loss(losses: torch.Tensor, logits: torch.Tensor, beta: float, hard: bool) -> torch.Tensor:
    """Stage II (eq. 5.10): the forward KL ``KL(q* || q_phi)`` up to a constant, batch mean."""
    with torch.no_grad():
        target = oracle(losses, beta, hard)
    return -(target * log_stop_distribution(logits)).sum(-1).mean()


def stage3_loss(losses: torch.Tensor, logits: torch.Tensor, beta: float) -> torch.Tensor:
    """Stage III (eq. 5.6, uniform prior): ``mean_i E_{q_phi} l - beta H(q_phi)``."""
    log_q = log_stop_distribution(logits)
    q = log_q.exp()
    return ((q * losses).sum(-1) + beta * (q * log_q).sum(-1)).mean()
