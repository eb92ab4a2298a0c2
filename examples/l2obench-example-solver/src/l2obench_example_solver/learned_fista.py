"""Unrolled FISTA with a learned step, threshold and momentum per layer.

Layer ``k = 1..T`` from ``x_0 = y_1 = 0``, with ``L`` each instance's Lipschitz
constant of the data term's gradient (so the network is coordinate-free: it
applies to a shared design, ``lasso``, and to one design per instance, ``slr``):

    x_k     = prox_{(s_k / L) theta_k ||.||_1}(y_k - (s_k / L) grad L(y_k))
    y_{k+1} = x_k + m_k (x_k - x_{k-1})

The ``3T`` scalars ``s_k`` (step, in units of ``1 / L``), ``theta_k``
(threshold) and ``m_k`` (momentum) start as FISTA's (``1``, ``lam_init`` and
``(t_k - 1) / t_{k+1}``) and are trained by ``l2obench.learned.LearnedSolver``
on the family's loss, every layer weighted by ``gamma^(T-k)``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from l2obench.datafits import build
from l2obench.learned import LearnedSolver
from l2obench.ops import per_instance


class FISTALayers(nn.Module):
    """The learned scalars of ``n_layers`` FISTA iterations."""

    def __init__(self, n_layers: int):
        super().__init__()
        self.step = nn.Parameter(torch.ones(n_layers))
        self.theta = nn.Parameter(torch.zeros(n_layers))
        self.momentum = nn.Parameter(torch.zeros(n_layers))


class LearnedFISTA(LearnedSolver):
    """Unrolled FISTA (module docstring); hyper-parameters ``n_layers``, ``lam_init``, ``lr``, ``gamma``."""

    NEEDS = ("start", "gradient", "lipschitz", "prox_l1", "finish")

    def network_config(self, context) -> dict:
        name = context.problem.data_term
        if name != "least_squares":
            raise ValueError(f"LearnedFISTA needs a least-squares data term, the family names {name!r}")
        return {"data_term": name}

    def make_network(self, config) -> FISTALayers:
        return FISTALayers(self.n_layers)

    def init_network(self, network: FISTALayers, context) -> None:
        t = 1.0
        for k in range(self.n_layers):
            t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
            network.momentum[k] = (t - 1) / t_next
            t = t_next
        network.theta.fill_(self.lam_init)

    def forward(self, observation, keep_all=True, depth=None):
        term = build(self.config_["data_term"], observation, self.NEEDS, "LearnedFISTA")
        net = self.network_
        x = y = term.start()
        inv_L = per_instance(1.0 / term.lipschitz(), x)
        outputs = []
        for k in range(self.n_layers if depth is None else depth):
            s = net.step[k] * inv_L
            x_next = term.prox_l1(y - s * term.gradient(y), (s * net.theta[k]).reshape(-1))
            y, x = x_next + net.momentum[k] * (x_next - x), x_next
            outputs.append(term.finish(x))
        return outputs if keep_all else outputs[-1:]
