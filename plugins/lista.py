"""LISTA: learned ISTA with untied layers (Gregor & LeCun 2010; thesis eq. 5.11).

    x_t = soft(W1_t b + W2_t x_{t-1}, theta_t),  t = 1..T,  x_0 = 0

initialised from ISTA (``W1 = A^T / L``, ``W2 = I - A^T A / L``, ``theta = lam / L``)
and trained either layer-wise with learning-rate decay stages, as the
reference code of LISTA-CPSS (Chen et al. 2018) trains it (``schedule =
"progressive"``, the default), or on the layer-weighted loss ``sum_t
gamma^(T-t) ||x_t - x*||^2`` of thesis section 5.5.1 (``"joint"``), early-stopped
on the validation loss.
"""
from __future__ import annotations

from l2obench.contracts import FitContext
from l2obench.learned import LearnedSolver
from l2obench.unrolled import LISTANetwork, shared_design


class LISTA(LearnedSolver):
    """Learned ISTA for a fixed sensing matrix (``lasso`` family).

    Hyper-parameters (see ``l2obench list``): ``n_layers``, ``schedule``,
    ``gamma``, ``lr``, ``lam_init``, ``fresh_samples``. Fitted state:
    ``network_`` (a ``LISTANetwork``).
    """

    def network_config(self, context: FitContext) -> dict:
        m, n = shared_design(context, "LISTA").shape
        return {"m": int(m), "n": int(n)}

    def make_network(self, config) -> LISTANetwork:
        return LISTANetwork(config["m"], config["n"], self.n_layers)

    def init_network(self, network: LISTANetwork, context: FitContext) -> None:
        network.set_ista(shared_design(context, "LISTA"), self.lam_init)

    def forward(self, observation, keep_all: bool = True, depth: int | None = None):
        return self.network_(observation["b"], keep_all=keep_all, depth=depth)
