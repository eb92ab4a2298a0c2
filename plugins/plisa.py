"""PLISA: the unrolled path-following algorithm of thesis chapter 7 (Algorithms 5 and 6).

PLISA unrolls APF (thesis section 7.3.1) into ``T`` blocks of ``K`` layers. Block
``t`` shrinks an element-wise regularisation (eq. 7.5),

    lambda_t = max(sigmoid(eta) o lambda_{t-1}, lambda*),

and runs ``K`` modified proximal-gradient layers (Algorithm 6, eq. 7.3) on
``L(beta) + P_w(lambda_t, beta)``,

    beta <- soft(beta - alpha_t (grad L(beta) + grad Q_w(lambda_t, beta)), alpha_t lambda_t),

where ``P_w = sum_i softmax(w)_i P^(i)`` combines l1, MCP (gamma = 3) and SCAD
(a = 3.7) (eq. 7.6) and ``Q_w = P_w - ||lambda o beta||_1`` is its concave part
(``l2obench.penalties``). Learned: ``eta``, ``lambda*`` (one value per
coordinate, shared by all instances), ``w`` and the step sizes. The training
loss is eq. 7.7, ``sum_t gamma^(T-t) loss(beta_t)`` over the block outputs, with
the family's own per-instance ``loss``: the squared error ``||beta_t - beta*||^2``
in the supervised setting, the held-out least squares of section 7.6 (eq.
7.17) when the family's target holds held-out samples instead; one code path.

Two problems (chosen from the observation's keys):

Sparse linear regression (``A`` (N, n_max, d) zero-padded per-instance design
with unit-norm columns, ``b``): ``L(beta) = 0.5 ||A beta - b||^2``; with unit-norm
columns ``grad L = A^T (A beta - b)`` and ``lambda`` have the same scale for every
sample count ``n``, so one learned ``lambda*`` serves all instances. Choices
where the thesis leaves freedom, each stated:

- ``lambda_0``: ``lam0 = "max"`` (default) starts every coordinate at
  ``||grad L(0)||_inf = ||A^T b||_inf``, APF's start, so that coordinates enter
  the path in order of their correlation; ``lam0 = "abs"`` is Algorithm 5 read
  literally, ``lambda_0 = |grad L(0)| = |A^T b|`` element-wise (then the first
  blocks shrink every coordinate by the same factor and select nothing).
- Step size: ``alpha_t = s_t / L_i`` with ``L_i = ||A_i||_2^2`` per instance and
  one learned ``s_t = max_step sigmoid(u_t)`` per block (``s_t = 1`` initially:
  ISTA's step). The thesis learns one ``alpha``; designs differ per instance
  here, hence the ``1/L_i`` units.
- Stability safeguard: learned steps beyond ``2 / L_i`` are useful (the
  iterates are sparse, and the curvature along them is below ``L_i``) but make
  some instances diverge, which wrecks training. A step ``d`` of an instance is
  accepted when ``alpha d^T A^T A d <= 2 ||d||^2`` (the gradient step does not
  expand along ``d``; always true for ``alpha <= 2 / L_i``, so the ISTA
  reduction is exact); otherwise it is halved, up to ``MAX_BACKTRACK`` times.
  ``A^T A d`` comes from ``A^T A beta_new``, which the next layer needs anyway.
- ``lambda*`` and the decay ``sigmoid(eta)`` are learned through ``log lambda*``
  and ``eta``, initialised at ``lam_init`` and ``decay_init``.

Sparse precision estimation (``S`` (N, d, d), ``M`` (N,)): ``L(Theta) = -logdet
Theta + tr(S Theta)``, gradient ``S - Theta^{-1}``, penalty on the off-diagonal
entries only (as the graphical lasso); ``lambda*`` (a symmetric ``d x d``
matrix, shared by all instances) is in units of the graphical lasso's rate
``(log d / M)^{1/2}`` of each instance. Further choices:

- ``Theta_0 = (S + rho I)^{-1}``, a ridge estimate with learned ``rho``; the
  gradient at ``Theta_0`` is ``-rho I``, so ``lambda_0 = max_{i != j} |S_ij|``
  (``lam0 = "max"``) or ``|S_ij|`` (``"abs"``).
- Step size ``alpha = s_t lambda_min(Theta)^2``: ``lambda_min(Theta)^{-2}`` bounds
  the curvature of ``-logdet`` near ``Theta`` (G-ISTA's step, Rolfs et al. 2012),
  with one learned ``s_t = max_step sigmoid(u_t)`` per block.
- Positive definiteness: a step is accepted only if the new iterate has
  ``lambda_min >= PD_MARGIN lambda_min(Theta)`` (a Cholesky test of
  ``Theta_new - PD_MARGIN lambda_min(Theta) I``); otherwise the step of that
  instance is halved, up to ``MAX_BACKTRACK`` times, after which the instance
  keeps ``Theta``. Every layer's output is therefore symmetric positive
  definite.

In both safeguards the choice of step is piecewise constant in the
parameters, so gradients flow through the accepted step.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from l2obench.contracts import FitContext, Instances, Solution, Solver
from l2obench.ops import gram, lipschitz, per_instance, rmatvec, soft_threshold
from l2obench.penalties import PENALTY_NAMES, penalty
from l2obench.precision import cholesky_inverse, offdiag_abs_max, offdiag_mask, symmetrize
from l2obench.training import train

__all__ = ["PLISA", "PLISANetwork", "PLISAPrecisionNetwork", "concave_gradient", "block_weights"]

PENALTIES = tuple(penalty(name) for name in PENALTY_NAMES)  # l1, MCP, SCAD (eq. 7.6)
PD_MARGIN = 0.1
# SLR: a step d is accepted when alpha d^T A^T A d <= STABLE_CURVATURE ||d||^2.
STABLE_CURVATURE = 2.0
MAX_BACKTRACK = 10
EVAL_CHUNK = 1024
# Defaults of the spec's null hyper-parameters, per problem. lambda*: absolute for SLR (unit-norm
# columns), in units of (log d / M)^{1/2} for SPE. Blocks x layers: on SLR (d = 128, s = 8) 100
# layers come within 0.3 dB of least squares on the true support (-27.9 against -28.2 dB), 50 are
# 1.2 dB short and train in half the time; on SPE (d = 20, M = 20) 50 layers gain nothing over 20
# and cost 2.5 times as much.
DEFAULTS = {"slr": {"lam_init": 0.05, "n_blocks": 20, "n_layers": 5},
            "spe": {"lam_init": 0.5, "n_blocks": 5, "n_layers": 4}}


def concave_gradient(x: torch.Tensor, lam, weights: torch.Tensor) -> torch.Tensor:
    """``grad Q_w(lambda, x) = sum_i w_i q_i'(x; lambda)`` for (l1, MCP, SCAD) weights ``w`` (eq. 7.6).

    ``weights`` are the softmax-normalised ``w~``; l1's concave part is zero.
    """
    out = 0.0 * x
    for weight, pen in zip(weights, PENALTIES):
        if pen.name != "l1":
            out = out + weight * pen.q_grad(x, lam)
    return out


def block_weights(n_blocks: int, gamma: float, like: torch.Tensor) -> torch.Tensor:
    """``gamma^(T-t)``, t = 1..T: the block weights of the training loss eq. 7.7."""
    return torch.tensor([gamma ** (n_blocks - t) for t in range(1, n_blocks + 1)], dtype=like.dtype,
                        device=like.device)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


class _PLISABase(nn.Module):
    """Parameters shared by both problems: ``eta``, ``log lambda*``, ``w`` (3), step logits (T).

    The steps are ``s_t = max_step * sigmoid(step_logit_t)`` in the problem's
    units (positive and bounded). ``forward(observation, keep)`` returns the outputs
    kept: ``"layers"`` (all ``K T``), ``"blocks"`` (the ``T`` block outputs, eq.
    7.7) or ``"last"``.
    """

    def __init__(self, eta: torch.Tensor, log_lam: torch.Tensor, w: torch.Tensor, step_logit: torch.Tensor,
                 n_layers: int, lam0: str, max_step: float):
        super().__init__()
        if lam0 not in ("max", "abs"):
            raise ValueError(f"lam0 must be 'max' or 'abs', got {lam0!r}")
        self.eta = nn.Parameter(eta.clone())
        self.log_lam = nn.Parameter(log_lam.clone())
        self.w = nn.Parameter(w.clone())
        self.step_logit = nn.Parameter(step_logit.clone())
        self.n_layers = int(n_layers)
        self.lam0 = lam0
        self.max_step = float(max_step)

    @property
    def n_blocks(self) -> int:
        return self.step_logit.shape[0]

    def steps(self) -> torch.Tensor:
        """``s_t = max_step * sigmoid(step_logit_t)``, t = 1..T."""
        return self.max_step * torch.sigmoid(self.step_logit)

    @staticmethod
    def step_logits(step: float, max_step: float, n_blocks: int, **like) -> torch.Tensor:
        """Logits giving ``s_t = step`` for every block (``0 < step < max_step``)."""
        if not 0 < step < max_step:
            raise ValueError(f"step_init must lie in (0, max_step = {max_step}), got {step}")
        return torch.full((n_blocks,), _logit(step / max_step), **like)

    def penalty_weights(self) -> torch.Tensor:
        """``w~ = softmax(w)`` over (l1, MCP, SCAD)."""
        return torch.softmax(self.w, 0)

    def stacked(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.state_dict().items()}

    @staticmethod
    def _keep(outputs: list, x, t: int, k: int, n_blocks: int, n_layers: int, keep: str) -> None:
        last_layer = k == n_layers - 1
        if keep == "layers" or (keep == "blocks" and last_layer) or (last_layer and t == n_blocks - 1):
            outputs.append(x)


class PLISANetwork(_PLISABase):
    """PLISA for sparse linear regression ``min 0.5 ||A beta - b||^2 + P_w(lambda, beta)``.

    Parameters: ``eta`` (d,), ``log_lam`` (d,) = ``log lambda*``, ``w`` (3,),
    ``step_logit`` (T,) (steps in units of ``1 / ||A_i||_2^2``); ``n_layers`` = K.
    """

    @classmethod
    def initial(cls, d: int, n_blocks: int, n_layers: int, lam_init: float, decay_init: float,
                step_init: float = 1.0, lam0: str = "max", max_step: float = 8.0, dtype=torch.float32,
                device=None) -> "PLISANetwork":
        full = lambda n, v: torch.full((n,), float(v), dtype=dtype, device=device)  # noqa: E731
        return cls(full(d, _logit(decay_init)), full(d, math.log(lam_init)), full(3, 0.0),
                   cls.step_logits(step_init, max_step, n_blocks, dtype=dtype, device=device), n_layers, lam0,
                   max_step)

    def forward(self, observation: dict, keep: str = "blocks") -> list[torch.Tensor]:
        A, b = observation["A"], observation["b"]
        G = gram(A)  # A^T A: (d, d) shared or (N, d, d)
        c = rmatvec(A, b)  # A^T b = -grad L(0)
        inv_L = per_instance(1.0 / lipschitz(A), c)
        lam = c.abs().amax(-1, keepdim=True).expand_as(c) if self.lam0 == "max" else c.abs()
        lam_star = torch.exp(self.log_lam)
        decay = torch.sigmoid(self.eta)
        weights, steps = self.penalty_weights(), self.steps()
        beta = torch.zeros_like(c)
        G_beta = torch.zeros_like(c)  # G beta, carried from layer to layer
        outputs: list[torch.Tensor] = []
        for t in range(self.n_blocks):
            lam = torch.maximum(decay * lam, lam_star)  # eq. 7.5
            alpha = (steps[t] * inv_L).expand(c.shape[0], 1)
            for k in range(self.n_layers):  # Algorithm 6
                grad = G_beta - c + concave_gradient(beta, lam, weights)
                beta, G_beta = self.safeguarded_step(G, beta, G_beta, grad, alpha, lam)
                self._keep(outputs, beta, t, k, self.n_blocks, self.n_layers, keep)
        return outputs

    @staticmethod
    def safeguarded_step(G, beta, G_beta, grad, alpha, lam):
        """``soft(beta - alpha grad, alpha lam)`` with the stability safeguard; returns it and ``G`` times it.

        A step ``d`` is accepted when ``alpha d^T G d <= STABLE_CURVATURE ||d||^2``
        (the gradient step does not expand along ``d``; always true for
        ``alpha <= 2 / L``); otherwise that instance's step is halved, up to
        ``MAX_BACKTRACK`` times, after which it keeps ``beta``. ``G d`` comes
        from ``G beta_new``, which the next layer's gradient needs anyway.
        """
        shrink = torch.ones_like(alpha)
        accepted = torch.zeros(beta.shape[0], dtype=torch.bool, device=beta.device)
        out, G_out = beta, G_beta
        for _ in range(MAX_BACKTRACK):
            a = alpha * shrink
            candidate = soft_threshold(beta - a * grad, a * lam)
            G_candidate = _gram_times(G, candidate)
            with torch.no_grad():
                step = candidate - beta
                curvature = a.squeeze(-1) * (step * (G_candidate - G_beta)).sum(-1)
                ok = (curvature <= STABLE_CURVATURE * (step * step).sum(-1)) & ~accepted
            out = torch.where(ok[:, None], candidate, out)
            G_out = torch.where(ok[:, None], G_candidate, G_out)
            accepted = accepted | ok
            if bool(accepted.all()):
                break
            shrink = torch.where(accepted[:, None], shrink, 0.5 * shrink)
        return out, G_out


def _gram_times(G: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``G x`` for a symmetric ``G``, shared ``(d, d)`` or per instance ``(N, d, d)``.

    The per-instance product is taken as ``x^T G`` (a row times each matrix),
    several times faster on CPU than ``G x`` as a batched column product.
    """
    if G.dim() == 2:
        return x @ G
    return torch.bmm(x.unsqueeze(1), G).squeeze(1)


class PLISAPrecisionNetwork(_PLISABase):
    """PLISA for sparse precision estimation ``min -logdet Theta + tr(S Theta) + P_w(lambda, Theta_off)``.

    Parameters: ``eta`` and ``log_lam`` (d, d) (symmetrised; diagonal unused),
    ``w`` (3,), ``step_logit`` (T,) (steps in units of ``lambda_min(Theta)^2``),
    ``log_rho`` (the ridge of ``Theta_0``). See the module docstring for the safeguards.
    """

    def __init__(self, eta, log_lam, w, step_logit, n_layers, lam0, max_step, log_rho):
        super().__init__(eta, log_lam, w, step_logit, n_layers, lam0, max_step)
        self.log_rho = nn.Parameter(log_rho.clone())

    @classmethod
    def initial(cls, d: int, n_blocks: int, n_layers: int, lam_init: float, decay_init: float,
                step_init: float = 1.0, lam0: str = "max", max_step: float = 8.0, rho_init: float = 1.0,
                dtype=torch.float32, device=None) -> "PLISAPrecisionNetwork":
        full = lambda shape, v: torch.full(shape, float(v), dtype=dtype, device=device)  # noqa: E731
        return cls(full((d, d), _logit(decay_init)), full((d, d), math.log(lam_init)), full((3,), 0.0),
                   cls.step_logits(step_init, max_step, n_blocks, dtype=dtype, device=device), n_layers, lam0,
                   max_step, full((), math.log(rho_init)))

    def forward(self, observation: dict, keep: str = "blocks") -> list[torch.Tensor]:
        S, M = observation["S"], observation["M"]
        d = S.shape[-1]
        eye = torch.eye(d, dtype=S.dtype, device=S.device)
        off = offdiag_mask(d, S.device, S.dtype)  # the penalised entries (graphical lasso)
        Theta = cholesky_inverse(torch.linalg.cholesky(S + torch.exp(self.log_rho) * eye))
        # grad L(Theta_0) = S - Theta_0^{-1} = -rho I: its off-diagonal part is S's.
        lam = (offdiag_abs_max(S)[:, None, None] * off) if self.lam0 == "max" else S.abs() * off
        rate = torch.sqrt(math.log(d) / M.to(S.dtype).clamp_min(1.0))[:, None, None]
        lam_star = torch.exp(symmetrize(self.log_lam)) * rate
        decay = torch.sigmoid(symmetrize(self.eta))
        weights, steps = self.penalty_weights(), self.steps()
        outputs: list[torch.Tensor] = []
        for t in range(self.n_blocks):
            lam = torch.maximum(decay * lam, lam_star) * off  # eq. 7.5; lambda = 0 on the diagonal
            for k in range(self.n_layers):
                Theta = self.layer(Theta, S, lam, weights, steps[t], eye)
                self._keep(outputs, Theta, t, k, self.n_blocks, self.n_layers, keep)
        return outputs

    @staticmethod
    def layer(Theta, S, lam, weights, step, eye) -> torch.Tensor:
        """One modified proximal-gradient layer (Algorithm 6) with the positive-definiteness safeguard.

        ``lam`` is zero on the entries left unpenalised, the diagonal (then the
        concave gradient and the soft-thresholding leave them alone).
        """
        grad = S - cholesky_inverse(torch.linalg.cholesky(Theta))
        grad = grad + concave_gradient(Theta, lam, weights)
        # Differentiable (the backward of eigenvalues alone, V diag(g) V^T, is defined even at ties).
        low = torch.linalg.eigvalsh(Theta)[..., 0]
        alpha = step * (low**2)[:, None, None]
        # Backtracking: halve the step of the instances whose candidate loses positive definiteness.
        shrink = torch.ones_like(low)
        accepted = torch.zeros_like(low, dtype=torch.bool)
        out = Theta
        for _ in range(MAX_BACKTRACK):
            a = alpha * shrink[:, None, None]
            candidate = symmetrize(soft_threshold(Theta - a * grad, a * lam))
            with torch.no_grad():
                _, info = torch.linalg.cholesky_ex(candidate - (PD_MARGIN * low)[:, None, None].detach() * eye)
                ok = (info == 0) & ~accepted
            out = torch.where(ok[:, None, None], candidate, out)
            accepted = accepted | ok
            if bool(accepted.all()):
                break
            shrink = torch.where(accepted, shrink, 0.5 * shrink)
        return out


def _chunks(instances: Instances):
    for start in range(0, len(instances), EVAL_CHUNK):
        yield instances.subset(slice(start, start + EVAL_CHUNK))


def mean_loss(problem, estimate: Callable[[dict], torch.Tensor], instances: Instances) -> float:
    """Mean over ``instances`` of the family's per-instance ``loss`` of ``estimate(observation)``."""
    total = 0.0
    for part in _chunks(instances):
        total += float(problem.loss(estimate(part.observation()), part.target).double().sum())
    return total / max(len(instances), 1)


class PLISA(Solver):
    """PLISA (thesis Algorithms 5-6) for the ``slr`` and ``spe`` families.

    Hyper-parameters (see ``l2obench list``): ``n_blocks`` (T), ``n_layers``
    (K per block), ``gamma`` (eq. 7.7), ``lr``, ``lam_init``, ``decay_init``,
    ``step_init``, ``max_step``, ``lam0``, ``rho_init``, ``fresh_samples``; null
    ``lam_init``, ``n_blocks``, ``n_layers`` take the problem's ``DEFAULTS``. The
    problem is recognised from the observation: ``S`` (precision) or ``A, b``
    (regression). Training: ``l2obench.training.train`` on eq. 7.7 with the
    family's ``loss``, early-stopped on the mean validation ``loss`` of the last
    layer. Fitted state: ``network_``.
    """

    def resolved(self, kind: str) -> dict:
        """``lam_init``, ``n_blocks``, ``n_layers`` with nulls replaced by the problem's defaults."""
        return {k: v if getattr(self, k) is None else getattr(self, k) for k, v in DEFAULTS[kind].items()}

    def _build(self, observation: dict, dtype, device) -> _PLISABase:
        kind = "spe" if "S" in observation else "slr"
        common = dict(**self.resolved(kind), decay_init=self.decay_init, step_init=self.step_init,
                      lam0=self.lam0, max_step=self.max_step, dtype=dtype, device=device)
        if kind == "spe":
            return PLISAPrecisionNetwork.initial(observation["S"].shape[-1], rho_init=self.rho_init, **common)
        return PLISANetwork.initial(observation["A"].shape[-1], **common)

    def fit(self, context: FitContext) -> "PLISA":
        observation = context.train.observation()
        like = observation["S"] if "S" in observation else observation["b"]
        self.network_ = self._build(observation, like.dtype, context.device)
        network, problem = self.network_, context.problem
        weights = block_weights(network.n_blocks, self.gamma, like)

        def loss_fn(batch: Instances) -> torch.Tensor:
            outputs = network(batch.observation(), keep="blocks")
            return sum(w * problem.loss(x, batch.target).mean() for w, x in zip(weights, outputs))

        def validate() -> float:
            return mean_loss(problem, lambda obs: network(obs, keep="last")[-1], context.val)

        train(network, loss_fn, validate, context, lr=self.lr, fresh_samples=self.fresh_samples,
              desc=f"train PLISA (T={network.n_blocks}, K={network.n_layers})")
        return self

    def solve(self, observation, trajectory: bool = False) -> Solution:
        with torch.no_grad():
            outputs = self.network_(observation, keep="layers" if trajectory else "last")
        n, layers = outputs[-1].shape[0], self.network_.n_blocks * self.network_.n_layers
        iterations = torch.full((n,), layers, dtype=torch.long, device=outputs[-1].device)
        return Solution(outputs[-1], outputs if trajectory else None, iterations)

    def state_dict(self) -> dict:
        kind = "spe" if isinstance(self.network_, PLISAPrecisionNetwork) else "slr"
        return {"params": self.get_params(), "kind": kind, "weights": self.network_.stacked()}

    def load_state_dict(self, state) -> "PLISA":
        self.set_params(**state["params"])
        w = state["weights"]
        n_layers = self.resolved(state["kind"])["n_layers"]
        if state["kind"] == "spe":
            self.network_ = PLISAPrecisionNetwork(w["eta"], w["log_lam"], w["w"], w["step_logit"], n_layers,
                                                  self.lam0, self.max_step, w["log_rho"])
        else:
            self.network_ = PLISANetwork(w["eta"], w["log_lam"], w["w"], w["step_logit"], n_layers, self.lam0,
                                         self.max_step)
        return self

    def to(self, device) -> "PLISA":
        self.network_.to(device)
        return self
