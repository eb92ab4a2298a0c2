"""Recurrent learned optimizers for the LASSO: "RNN" and "RNN-l1".

"RNN" is the coordinate-wise LSTM optimizer of Andrychowicz et al. (2016),
"Learning to learn by gradient descent by gradient descent"; "RNN-l1" adds a
soft-thresholding step after each update, the sparse-recovery baseline of
Xinshi Chen's PhD thesis, section 7.7.1. Per instance the optimizee is

    F(x) = 0.5 ||A x - b||^2 + lam ||x||_1,

with ``A`` shared ``(m, n)`` or per instance ``(N, m, n)``. From ``x_0 = 0``,
for ``t = 0 .. T-1``:

    g_t          = A^T (A x_t - b)                         (RNN-l1: the smooth part's gradient)
    g_t          = A^T (A x_t - b) + lam sign(x_t)         (RNN: a subgradient of F, 0 at x_i = 0)
    u_t, h_{t+1} = m(rho(g_t / s), h_t; phi)               (2-layer LSTM, shared by all coordinates)
    x_{t+1}      = x_t + c (s / kappa) u_t                 (RNN)
    x_{t+1}      = soft(x_t + c (s / kappa) u_t, theta_t)  (RNN-l1)

``m`` runs on every coordinate of every instance as one batch of ``N n``
rows; ``c`` is ``out_scale``. Normalisation, per instance:
``s = RMS(A^T b)`` is the root mean square of the first gradient ``g_0``, and
``kappa = ||A||_F^2 / n`` the mean eigenvalue of ``A^T A`` (1 for unit-norm
columns), so ``s / kappa`` is the scale of the matched filter ``A^T b /
kappa``, an estimate of the scale of ``x*``. The LSTM thus sees ``g_t / s``
(O(1) at ``t = 0``, and fixed over the steps, so it still tells how far the
gradient has shrunk, unlike a per-step RMS) and its output is a step in units
of ``s / kappa``; with ``b -> beta b`` and ``A -> alpha A`` the input is
unchanged and the steps scale like ``x*``, by ``beta / alpha``. (The l1 terms
``lam`` and ``theta_t`` are absolute, as in ISTA.) RNN-l1 learns ``T``
thresholds ``theta_t = exp(r_t) lam_init / L``, ``L = ||A||_2^2`` per design,
with ``r_t = 0`` at initialisation; the exponential keeps them positive.

``rho`` is the preprocessing of Andrychowicz et al., appendix A, with p = 10:
``rho(g) = (log|g| / p, sign g)`` if ``|g| >= e^-p``, else ``(-1, e^p g)``
(``preprocess=False`` feeds ``g / s`` itself). As in their section 2, the
optimizee gradient is an input whose dependence on ``phi`` is ignored (no
second derivatives). Training minimises ``sum_t gamma^(T-t) ||x_t - x*||^2``
(batch mean) with Adam through all ``T`` steps (full back-propagation through
time), early-stopped on the validation loss (``l2obench.learned.LearnedSolver``).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from l2obench.contracts import FitContext
from l2obench.learned import LearnedSolver
from l2obench.ops import lipschitz, matvec, per_instance, rmatvec, soft_threshold

# Preprocessing exponent p of Andrychowicz et al., appendix A.
PREPROCESS_P = 10.0


def preprocess_gradient(g: torch.Tensor, p: float = PREPROCESS_P) -> torch.Tensor:
    """Andrychowicz et al. (2016), appendix A: two features per gradient entry.

    Parameters
    ----------
    g : Tensor
        Gradient entries, any shape.
    p : float
        Magnitude cut-off exponent: entries with ``|g| >= e^-p`` map to
        ``(log|g| / p, sign g)``, smaller ones to ``(-1, e^p g)``.

    Returns
    -------
    Tensor
        Shape ``g.shape + (2,)``.
    """
    cut = math.exp(-p)
    big = g.abs() >= cut
    # The clamp keeps log finite on the branch torch.where discards (no NaN gradients).
    magnitude = torch.where(big, torch.log(g.abs().clamp_min(cut)) / p, torch.full_like(g, -1.0))
    direction = torch.where(big, torch.sign(g), g * math.exp(p))
    return torch.stack([magnitude, direction], dim=-1)


def smooth_gradient(A: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``A^T (A x - b)`` per instance, the gradient of ``0.5 ||A x - b||^2``.

    ``A`` is shared ``(m, n)`` or per instance ``(N, m, n)``; ``b`` is ``(N, m)``, ``x`` ``(N, n)``.
    """
    return rmatvec(A, matvec(A, x) - b)


def lasso_subgradient(A: torch.Tensor, b: torch.Tensor, x: torch.Tensor, lam: float) -> torch.Tensor:
    """``A^T (A x - b) + lam sign(x)``, a subgradient of the LASSO objective (0 at ``x_i = 0``)."""
    return smooth_gradient(A, b, x) + lam * torch.sign(x)


class CoordinatewiseLSTM(nn.Module):
    """Two stacked ``LSTMCell`` and a linear read-out, applied to every coordinate alike.

    Parameters
    ----------
    hidden : int
        Hidden (and cell) size of both layers.
    preprocess : bool
        Inputs are ``preprocess_gradient`` features (2 per coordinate), else the raw value (1).
    """

    def __init__(self, hidden: int = 20, preprocess: bool = True):
        super().__init__()
        self.preprocess = preprocess
        self.cell1 = nn.LSTMCell(2 if preprocess else 1, hidden)
        self.cell2 = nn.LSTMCell(hidden, hidden)
        self.head = nn.Linear(hidden, 1)

    def initial_state(self, rows: int, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        zeros = like.new_zeros(rows, self.cell1.hidden_size)
        return zeros, zeros, zeros, zeros

    def forward(self, g: torch.Tensor, state: tuple[torch.Tensor, ...]):
        """One step on ``g`` of shape ``(R,)`` (R = instances x coordinates); returns ``(update (R,), state)``."""
        features = preprocess_gradient(g) if self.preprocess else g.unsqueeze(-1)
        h1, c1 = self.cell1(features, state[:2])
        h2, c2 = self.cell2(h1, state[2:])
        return self.head(h2).squeeze(-1), (h1, c1, h2, c2)


class RNNOptimizerNetwork(nn.Module):
    """The optimizer unrolled for ``n_steps`` steps; ``forward`` returns the iterates.

    Parameters
    ----------
    n_steps : int
        Number of steps ``T``.
    hidden : int
        LSTM hidden size.
    preprocess : bool
        Use the log-magnitude/sign preprocessing.
    out_scale : float
        Output scale ``c``: the step is ``c (s / kappa) u_t``.
    lam : float
        l1 weight in the subgradient the LSTM reads (``l1=False``; unused otherwise).
    l1 : bool
        Soft-threshold after each step (RNN-l1) with learned ``theta_t = exp(r_t) lam_init / L``.
    lam_init : float
        Initial threshold in units of ``1 / L`` (``l1=True``).
    """

    def __init__(self, n_steps: int, hidden: int = 20, preprocess: bool = True, out_scale: float = 0.1,
                 lam: float = 0.1, l1: bool = False, lam_init: float = 0.1):
        super().__init__()
        self.n_steps, self.out_scale, self.lam, self.l1, self.lam_init = n_steps, out_scale, lam, l1, lam_init
        self.lstm = CoordinatewiseLSTM(hidden, preprocess)
        # theta_t > 0 through a log-parameterisation, r_t = 0 at initialisation.
        self.log_theta = nn.Parameter(torch.zeros(n_steps)) if l1 else None

    def gradient(self, A: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """What the LSTM reads (before normalisation): see the module docstring."""
        return smooth_gradient(A, b, x) if self.l1 else lasso_subgradient(A, b, x, self.lam)

    def forward(self, A: torch.Tensor, b: torch.Tensor, keep_all: bool = True,
                depth: int | None = None) -> list[torch.Tensor]:
        """The iterates ``x_1 .. x_depth`` (default ``n_steps``), or a list holding the last."""
        n_steps = self.n_steps if depth is None else int(depth)
        N, n = b.shape[0], A.shape[-1]
        x = b.new_zeros(N, n)
        s = rmatvec(A, b).pow(2).mean(-1).sqrt().clamp_min(torch.finfo(b.dtype).tiny).unsqueeze(-1)  # (N, 1)
        kappa = A.pow(2).sum((-2, -1)) / n  # mean eigenvalue of A^T A: scalar or (N,)
        step_scale = self.out_scale * s / per_instance(kappa, x)
        if self.l1:
            unit = self.lam_init / per_instance(lipschitz(A), x)  # lam_init / L, L scalar or (N,)
            thetas = torch.exp(self.log_theta)
        state = self.lstm.initial_state(N * n, b)
        outputs = []
        for t in range(n_steps):
            # The optimizee gradient is an input: no second derivatives (Andrychowicz et al., section 2).
            g = (self.gradient(A, b, x).detach() / s).reshape(-1)
            update, state = self.lstm(g, state)
            x = x + step_scale * update.view(N, n)
            if self.l1:
                x = soft_threshold(x, thetas[t] * unit)
            if keep_all or t == n_steps - 1:
                outputs.append(x)
        return outputs


class _RecurrentOptimizer(LearnedSolver):
    """What ``RNN`` and ``RNNL1`` share: the network and its forward pass (the rest is ``LearnedSolver``'s)."""

    label = "RNN"

    def _network_kwargs(self) -> dict:
        raise NotImplementedError

    @property
    def depth(self) -> int:
        return int(self.n_steps)

    def network_config(self, context: FitContext) -> dict:
        if "A" not in context.train.observation():
            raise ValueError(f"{self.label} needs a design 'A' of shape (m, n) or (N, m, n) in the observation")
        return {}

    def make_network(self, config) -> RNNOptimizerNetwork:
        return RNNOptimizerNetwork(**self._network_kwargs())

    def forward(self, observation, keep_all: bool = True, depth: int | None = None):
        return self.network_(observation["A"], observation["b"], keep_all=keep_all, depth=depth)

    def describe_training(self) -> str:
        return f"train {self.label} (T={self.n_steps})"


class RNN(_RecurrentOptimizer):
    """Coordinate-wise LSTM optimizer (Andrychowicz et al. 2016) on the LASSO subgradient.

    The LSTM reads ``A^T (A x_t - b) + lam sign(x_t)`` normalised by ``RMS(A^T b)``
    and adds its scaled output to ``x_t`` (module docstring). Works with a
    shared ``A`` ``(m, n)`` and with per-instance designs ``(N, m, n)``.

    Hyper-parameters: ``n_steps``, ``hidden``, ``preprocess``, ``out_scale``,
    ``lam``, ``gamma``, ``lr``, ``fresh_samples``. Fitted state: ``network_``.
    """

    label = "RNN"

    def _network_kwargs(self) -> dict:
        return dict(n_steps=self.n_steps, hidden=self.hidden, preprocess=self.preprocess,
                    out_scale=self.out_scale, lam=self.lam, l1=False)


class RNNL1(_RecurrentOptimizer):
    """RNN-l1 (Chen, PhD thesis, section 7.7.1): the LSTM step then ``soft(., theta_t)``.

    The LSTM reads the smooth-part gradient ``A^T (A x_t - b)`` normalised by
    ``RMS(A^T b)``; the thresholds ``theta_t = exp(r_t) lam_init / L`` are
    learned (``T`` scalars ``r_t``, zero at initialisation, so positive).

    Hyper-parameters: ``n_steps``, ``hidden``, ``preprocess``, ``out_scale``,
    ``lam_init``, ``gamma``, ``lr``, ``fresh_samples``. Fitted state: ``network_``.
    """

    label = "RNN-l1"

    def _network_kwargs(self) -> dict:
        return dict(n_steps=self.n_steps, hidden=self.hidden, preprocess=self.preprocess,
                    out_scale=self.out_scale, l1=True, lam_init=self.lam_init)
