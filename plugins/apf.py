"""APF: the approximate path-following method (Wang, Liu and Zhang 2014; thesis section 7.3.1).

APF approximates local minimisers of a decreasing sequence of penalised
objectives (thesis eq. 7.2),

    beta_t ~ argmin_beta  L(beta) + P(lam_t, beta),    P(lam, .) = lam ||.||_1 + Q(lam, .),

with ``Q`` the concave part of MCP or SCAD (``l2obench.penalties``; zero for
the l1 penalty). As in Wang et al. (2014), Algorithms 1 and 2:

- ``lam_0 = ||grad L(beta_0)||_inf`` over the penalised entries, where
  ``beta_0`` (``0``; for precision matrices ``diag(1 / S_ii)``) is a
  stationary point of every stage with ``lam >= lam_0``;
  ``lam_t = max(eta^t lam_0, lam_tgt)``, ``eta`` in ``[0.9, 1)``; the last
  stage runs at the target ``lam_tgt`` (hyper-parameter ``lam``).
- Each stage starts from the previous stage's output and runs the modified
  proximal-gradient step (thesis eq. 7.3), with ``Lk`` the inverse step size,

      beta <- soft(beta - (grad L(beta) + Q'(lam_t, beta)) / Lk, lam_t / Lk),

  ``Lk`` chosen by the paper's line search: ``Lk <- max(L_min, Lk / 2)``
  before every step, then doubled until the step is majorised,
  ``phi(beta+) <= phi(beta) + <grad, beta+ - beta> + (Lk / 2) ||beta+ - beta||^2``
  for ``phi = L + Q`` (for precision matrices the trial point must also be
  positive definite, as in G-ISTA). ``Lk`` carries over between steps and stages.
- A stage ends when the stationarity measure
  ``omega(beta) = min_{xi in d||beta||_1} ||grad L + Q' + lam_t xi||_inf``
  is at most ``lam_t / 4`` (intermediate stages) or ``tol * lam_tgt`` (the
  target stage, the paper's ``eps_opt``; ``tol = 0`` runs ``max_iter`` steps).
  Every stage takes at least one step (the paper's repeat-until loop).

Choices not fixed by the paper: ``max_iter`` caps the total number of
proximal steps of an instance over all stages (an instance that reaches it
returns its current iterate, possibly of an intermediate stage); ``Lk``
starts at a curvature scale of the instance (largest squared column norm;
``max_i S_ii^2``) and ``L_min`` is ``1e-6`` times it; the paper's projection
onto an l2 ball (needed only for non-convex losses) is not used. The
majorisation test is computed without cancellation, since near convergence
its terms are ``O(||beta+ - beta||^2)``, far below the rounding of the
objective's value: the loss part as ``0.5 ||A (beta+ - beta)||^2`` for least
squares and as a series in ``Theta^{-1/2} (Theta+ - Theta) Theta^{-1/2}`` for
small log-det steps, the concave part in float64 with its positive rounding
dropped (its exact value is ``<= 0``). Read from rounded values, the test
accepted too long steps that oscillated (measured: float32 SLR instances
stalled at ``max_iter`` with MCP). Precision matrices are computed in
float64 inside (``LogDet.line_search_dtype``) and returned in the input dtype.

Problems: the family's data term (``l2obench.datafits``, named by
``ProblemFamily.data_term`` and learnt at ``fit``):

- ``least_squares`` (sparse linear regression, ``{"A": (N, m, d) or (m, d), "b": (N, m)}``):
  ``L(beta) = 0.5 ||A beta - b||^2`` (``l2obench.ops.lasso_objective``'s
  scaling: zero-padded rows leave it unchanged, and with unit-norm columns
  ``lam`` means the same for every sample count);
- ``logdet`` (sparse precision estimation, ``{"S": (N, d, d)}``):
  ``L(Theta) = -logdet Theta + tr(S Theta)``, gradient ``S - Theta^{-1}``,
  the penalty on off-diagonal entries only (scikit-learn's graphical lasso
  with ``alpha = lam`` when the penalty is l1).

Batched: every instance has its own stage, ``lam_t``, ``Lk`` and line-search
state; instances that finish leave the batch.
"""
from __future__ import annotations

import torch

from l2obench.contracts import Solution
from l2obench.ops import per_instance
from l2obench.penalties import Penalty, penalty as make_penalty
from l2obench.tuning import ClassicalSolver

__all__ = ["APF", "apf", "stationarity", "NEEDS"]

# Doublings of Lk allowed in one step's line search; an instance still not
# majorised after that (only by rounding) stops with its current iterate.
MAX_BACKTRACKS = 60
# L_min = L_MIN_FRACTION * curvature scale of the instance.
L_MIN_FRACTION = 1e-6
# What APF asks of its data term (l2obench.datafits; ``penalised`` and
# ``line_search_dtype`` are attributes): a start, the iterate states of the line search
# (``trial`` is the Bregman excess L(x + d) - L(x) - <grad L(x), d>), the l1 prox on the
# penalised entries and a curvature scale for the first Lk.
NEEDS = ("start", "state", "gradient", "trial", "accept", "prox_l1", "curvature_scale", "subset", "finish")


def _rows(state: dict, rows: torch.Tensor) -> dict:
    return {k: v.index_select(0, rows) for k, v in state.items()}


def _put(state: dict, rows: torch.Tensor, values: dict) -> None:
    for k, v in values.items():
        state[k].index_copy_(0, rows, v)


def stationarity(x: torch.Tensor, grad: torch.Tensor, lam: torch.Tensor, penalised=None) -> torch.Tensor:
    """``omega = min_{xi in d||x||_1} ||grad + lam xi||_inf`` per instance (Wang et al. 2014, eq. 3.16).

    ``grad`` is the gradient of ``L + Q``; entries where ``penalised`` is 0
    (the diagonal of a precision matrix) contribute ``|grad|``.
    """
    lam = per_instance(lam, x)
    term = torch.where(x != 0, (grad + lam * torch.sign(x)).abs(), (grad.abs() - lam).clamp_min(0))
    if penalised is not None:
        term = torch.where(penalised.bool(), term, grad.abs())
    return term.flatten(1).amax(-1)


class _Concave:
    """The concave part ``Q`` of the penalty on the penalised entries, evaluated in float64.

    Near convergence the majorisation test's concave bracket
    ``Q(x+) - Q(x) - <Q'(x), x+ - x>`` (``-||x+ - x||^2 / (2 gamma)`` for MCP
    entries inside ``gamma lam``) is far below float32's rounding of ``Q(x)``;
    read in float32 it lets the line search accept too long steps, which then
    oscillate (measured: float32 SLR instances stalled at ``max_iter``).
    """

    def __init__(self, pen: Penalty, mask: torch.Tensor):
        self.pen, self.mask = pen, mask.double()
        self.zero = pen.name == "l1"

    def value(self, v: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        v = v.double()
        return self.pen.q(v, per_instance(lam.double(), v)) * self.mask

    def grad(self, v: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        v = v.double()
        return self.pen.q_grad(v, per_instance(lam.double(), v)) * self.mask

    def excess(self, x: torch.Tensor, x_new: torch.Tensor, lam: torch.Tensor, q_x: torch.Tensor,
               q_grad_x: torch.Tensor) -> torch.Tensor:
        """``Q(x_new) - Q(x) - <Q'(x), x_new - x>`` per instance (float64; ``<= 0``, positive rounding dropped)."""
        if self.zero:
            return x_new.new_zeros(x_new.shape[0], dtype=torch.float64)
        bracket = self.value(x_new, lam) - q_x - q_grad_x * (x_new.double() - x.double())
        return bracket.clamp_max(0).flatten(1).sum(-1)


def _line_search(term, concave: _Concave, x: torch.Tensor, state: dict, grad: torch.Tensor, Lk: torch.Tensor,
                 lam: torch.Tensor, q_grad_x: torch.Tensor):
    """One modified proximal-gradient step per instance, ``Lk`` doubled until it is majorised.

    Wang et al. (2014), Algorithm 2, lines 4-7: the trial point
    ``soft(x - grad / Lk, lam / Lk)`` is accepted when
    ``L(x+) + Q(x+) <= L(x) + Q(x) + <grad, x+ - x> + (Lk / 2) ||x+ - x||^2``
    (and ``x+`` is feasible); instances that fail retry with ``2 Lk``.
    ``grad = grad L(x) + Q'(x)``; ``q_grad_x`` is ``Q'(x)`` in float64.

    Returns
    -------
    x_new, state_new, Lk, stalled
        ``stalled`` marks instances never majorised in ``MAX_BACKTRACKS``
        doublings (they keep ``x``).
    """
    n = x.shape[0]
    x_new, new_state = x.clone(), {k: v.clone() for k, v in state.items()}
    q_x = None if concave.zero else concave.value(x, lam)
    pending = torch.arange(n, device=x.device)
    for _ in range(MAX_BACKTRACKS):
        full = pending.numel() == n  # first try: no gathering
        take = (lambda v: v) if full else (lambda v: v if v is None else v.index_select(0, pending))  # noqa: E731
        xs, gs, Ls, lams = take(x), take(grad), take(Lk), take(lam)
        cand = term.prox_l1(xs - gs / per_instance(Ls, xs), lams / Ls)
        delta = cand - xs
        excess, feasible, trial_state = term.trial(xs, delta, state if full else _rows(state, pending),
                                                      None if full else pending)
        q_excess = concave.excess(xs, cand, lams, take(q_x), take(q_grad_x))
        ok = feasible & (excess + q_excess <= 0.5 * Ls * (delta * delta).flatten(1).sum(-1))
        good, bad = torch.nonzero(ok).flatten(), torch.nonzero(~ok).flatten()
        if good.numel():
            rows = pending.index_select(0, good)
            x_new.index_copy_(0, rows, cand.index_select(0, good))
            _put(new_state, rows, _rows(trial_state, good))
        pending = pending.index_select(0, bad)
        if pending.numel() == 0:
            break
        Lk = Lk.index_copy(0, pending, 2 * Lk.index_select(0, pending))
    stalled = torch.zeros(n, dtype=torch.bool, device=x.device)
    stalled[pending] = True
    return x_new, term.accept(new_state), Lk, stalled


def apf(term, lam: float, pen: Penalty, eta: float = 0.9, tol: float = 1e-4, max_iter: int = 2000,
        trajectory: bool = False) -> Solution:
    """Run APF on every instance of the data term ``term``.

    Parameters
    ----------
    term : l2obench.datafits.LeastSquares or LogDet
        The smooth loss ``L`` of every instance, with what APF ``NEEDS`` (its
        start, line-search states and proximal map), in the dtype to compute in.
    lam : float
        Target regularisation ``lam_tgt``.
    pen : Penalty
        ``l2obench.penalties.penalty("l1" | "mcp" | "scad")``.
    eta : float
        Ratio of consecutive stage parameters, ``lam_t = eta lam_{t-1}``.
    tol : float
        Target stage ends when ``omega <= tol * lam``.
    max_iter : int
        Maximum proximal steps per instance over all stages.
    trajectory : bool
        Return the iterate after every proximal step (finished instances
        repeat their final value).

    Returns
    -------
    Solution
        ``estimate`` (the last iterate), ``trajectory``, ``iterations``
        (proximal steps taken per instance), ``converged`` (the target
        stage met ``tol``; not when stalled or out of steps).
    """
    if not 0 < eta < 1:
        raise ValueError(f"eta must lie in (0, 1), got {eta}")
    if lam <= 0:
        raise ValueError(f"the target lambda must be positive, got {lam}")
    x = term.start()
    state = term.state(x)
    N, dtype, device = x.shape[0], x.dtype, x.device
    mask = term.penalised
    if mask is None:
        mask = x.new_ones(())
    grad_loss = term.gradient(x, state)
    lam0 = (grad_loss * mask).abs().flatten(1).amax(-1)
    target = torch.tensor(lam, dtype=dtype, device=device)
    stage_lam = torch.maximum(eta * lam0, target)  # lam_1 = eta lam_0, never below the target
    Lmin = L_MIN_FRACTION * term.curvature_scale().to(dtype)
    Lk = term.curvature_scale().to(dtype)
    index = torch.arange(N, device=device)
    steps = torch.zeros(N, dtype=torch.long, device=device)
    met = torch.zeros(N, dtype=torch.bool, device=device)  # the target stage's tolerance was met
    x_out = x.clone()
    path = [] if trajectory else None

    concave = _Concave(pen, mask)
    for _ in range(max_iter):
        if index.numel() == 0:
            break
        q_grad_x = concave.grad(x, stage_lam)
        grad = grad_loss + q_grad_x.to(dtype)
        Lk = torch.maximum(Lmin, Lk / 2)
        x, state, Lk, stalled = _line_search(term, concave, x, state, grad, Lk, stage_lam, q_grad_x)
        grad_loss = term.gradient(x, state)
        steps[index] += (~stalled).long()
        omega = stationarity(x, grad_loss + concave.grad(x, stage_lam).to(dtype), stage_lam, term.penalised)
        final = stage_lam <= target
        converged = omega <= torch.where(final, tol * target, stage_lam / 4)
        done = (converged & final) | stalled | (steps.index_select(0, index) >= max_iter)
        # Intermediate stages that converged move to the next lambda (thesis eq. 7.2).
        stage_lam = torch.where(converged & ~final, torch.maximum(eta * stage_lam, target), stage_lam)
        if done.any():
            finished = torch.nonzero(done).flatten()
            met[index.index_select(0, finished)] = (converged & final).index_select(0, finished)
            x_out.index_copy_(0, index.index_select(0, finished), x.index_select(0, finished))
            rows = torch.nonzero(~done).flatten()
            index = index.index_select(0, rows)
            x, grad_loss, stage_lam, Lk, Lmin = (v.index_select(0, rows) for v in (x, grad_loss, stage_lam, Lk, Lmin))
            state = _rows(state, rows)
            term = term.subset(rows)
        if path is not None:
            path.append(term.finish(x_out.clone().index_copy_(0, index, x)))
    if index.numel():
        x_out.index_copy_(0, index, x)
    return Solution(term.finish(x_out), path, steps, converged=met if tol > 0 else None)


class APF(ClassicalSolver):
    """Approximate path following with MCP, SCAD or l1 (see the module docstring).

    Hyper-parameters (see ``l2obench list``): ``lam`` (target lambda),
    ``penalty``, ``eta``, ``max_iter``, ``tol``. The problem is the family's
    data term, named at ``fit`` (``ProblemFamily.data_term``: least squares
    for ``slr``, log-det for ``spe``) and kept in the fitted state; to solve
    without fitting, name it: ``APF(...).with_data_term("logdet")``.
    """

    needs = NEEDS

    def solve(self, observation, trajectory=False) -> Solution:
        term_class = self.data_term_class()
        term = term_class.from_observation(observation, dtype=term_class.line_search_dtype)
        with torch.no_grad():
            return apf(term, self.lam, make_penalty(self.penalty), self.eta, self.tol, self.max_iter, trajectory)
