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

Two problems (chosen by the family's data term):

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
import torch
from torch import nn

from l2obench.contracts import FitContext
from l2obench.learned import LearnedSolver
from l2obench.ops import gram, lipschitz, per_instance, rmatvec, soft_threshold
from l2obench.penalties import PENALTY_NAMES, penalty
from l2obench.precision import cholesky_inverse, offdiag_abs_max, offdiag_mask, symmetrize

__all__ = ["PLISA", "PLISANetwork", "PLISAPrecisionNetwork", "concave_gradient", "block_weights"]

PENALTIES = tuple(penalty(name) for name in PENALTY_NAMES)  # l1, MCP, SCAD (eq. 7.6)
PD_MARGIN = 0.1
# SLR: a step d is accepted when alpha d^T A^T A d <= STABLE_CURVATURE ||d||^2.
STABLE_CURVATURE = 2.0
MAX_BACKTRACK = 10



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

    @staticmethod
    def _keep(outputs: list, x, index: int, last: int, n_layers: int, keep: str) -> bool:
        """Keep layer ``index``'s output ``x`` (0-based) as ``keep`` asks, and always the output of
        layer ``last - 1``, the last one run; returns whether that layer is this one."""
        final = index == last - 1
        if keep == "layers" or (keep == "blocks" and (index + 1) % n_layers == 0) or final:
            outputs.append(x)
        return final

    def layers_to_run(self, depth: int | None) -> int:
        """``depth`` (layers, at least 1), by default all ``T K``."""
        total = self.n_blocks * self.n_layers
        return total if depth is None else max(1, min(int(depth), total))


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

    def forward(self, observation: dict, keep: str = "blocks", depth: int | None = None) -> list[torch.Tensor]:
        last = self.layers_to_run(depth)
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
                if self._keep(outputs, beta, t * self.n_layers + k, last, self.n_layers, keep):
                    return outputs
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

    def forward(self, observation: dict, keep: str = "blocks", depth: int | None = None) -> list[torch.Tensor]:
        last = self.layers_to_run(depth)
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
                if self._keep(outputs, Theta, t * self.n_layers + k, last, self.n_layers, keep):
                    return outputs
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


class PLISA(LearnedSolver):
    """PLISA (thesis Algorithms 5-6) for the ``slr`` and ``spe`` families.

    Hyper-parameters (see ``l2obench list``): ``n_blocks`` (T), ``n_layers``
    (K per block), ``gamma`` (eq. 7.7), ``lr``, ``lam_init``, ``decay_init``,
    ``step_init``, ``max_step``, ``lam0``, ``rho_init``, ``fresh_samples``
    (``lam_init``, ``n_blocks``, ``n_layers`` have per-family defaults in the spec). The
    problem follows from the family's data term: least squares (regression)
    or log-det (precision). Training (``LearnedSolver``): eq. 7.7, the
    block-weighted family ``loss``, early-stopped on the mean validation
    ``loss`` of the last layer. Fitted state: ``network_``.
    """

    KINDS = {"least_squares": "slr", "logdet": "spe"}

    @property
    def depth(self) -> int:
        return self.network_.n_blocks * self.network_.n_layers

    def network_config(self, context: FitContext) -> dict:
        data_term = getattr(context.problem, "data_term", None)
        if data_term not in self.KINDS:
            raise ValueError(f"PLISA needs a least-squares or log-det data term; the family has {data_term!r}")
        kind = self.KINDS[data_term]
        observation = context.train.observation()
        d = observation["S" if kind == "spe" else "A"].shape[-1]
        return {"kind": kind, "d": int(d)}

    def make_network(self, config) -> _PLISABase:
        sizes = {"lam_init": self.lam_init, "n_blocks": self.n_blocks, "n_layers": self.n_layers}
        unset = [name for name, value in sizes.items() if value is None]
        if unset:
            raise ValueError(f"PLISA's {', '.join(unset)} default by family: build it with its family "
                             f"(spec.build(family, ...)) or set them")
        common = dict(**sizes, decay_init=self.decay_init, step_init=self.step_init, lam0=self.lam0,
                      max_step=self.max_step)
        if config["kind"] == "spe":
            return PLISAPrecisionNetwork.initial(config["d"], rho_init=self.rho_init, **common)
        return PLISANetwork.initial(config["d"], **common)

    def forward(self, observation, keep_all: bool = True, depth: int | None = None):
        return self.network_(observation, keep="layers" if keep_all else "last", depth=depth)

    def training_loss(self, outputs, batch, problem):
        """Eq. 7.7: the discounted family loss of the ``T`` block outputs (every ``K``-th layer)."""
        K = self.network_.n_layers
        return super().training_loss(outputs[K - 1::K], batch, problem)

    def describe_training(self) -> str:
        return f"train PLISA (T={self.network_.n_blocks}, K={self.network_.n_layers})"
