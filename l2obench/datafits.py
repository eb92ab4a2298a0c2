"""Data terms: the smooth loss of each problem family, batched over instances.

A problem family names its data term (``ProblemFamily.data_term``); a solver
learns that name at ``fit``, keeps it in its fitted state, and builds the data
term from each observation (``build(name, observation)``) instead of
inspecting the observation's keys. The penalties live in
``l2obench.penalties``; which entries they apply to is the data term's
``penalised`` mask.

- ``LeastSquares`` (``"least_squares"``): ``0.5 ||A x - b||^2`` per instance,
  ``A`` shared ``(m, n)`` or per instance ``(N, m, n)`` (zero-padded rows
  leave it unchanged); every coordinate penalised.
- ``LogDet`` (``"logdet"``): ``-logdet Theta + tr(S Theta)`` per instance,
  ``S`` ``(N, d, d)``; the off-diagonal entries penalised (the graphical lasso).
- ``QuadraticEnergy`` (``"quadratic"``): ``0.5 y^T Q y + b^T y`` per instance,
  ``Q`` ``(N, d, d)`` symmetric positive definite (thesis chapter 4); smooth
  only (no penalty, no line-search states).

Both provide ``from_observation``, ``value``, ``gradient``, ``start``,
``curvature_scale``, ``prox_l1``, ``penalised``, and the iterate states a
line search needs (``state``, ``trial``, ``accept``, ``subset``, ``finish``,
``line_search_dtype``). ``LeastSquares`` adds ``gram``, ``Atb`` and
``lipschitz``; ``LogDet`` adds ``S``, ``M`` and a ridge start. A solver states
what it needs (``require``), and a data term that lacks it fails with an
error that names it.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from l2obench.ops import gram, lipschitz, matvec, per_instance, rmatvec, soft_threshold
from l2obench.precision import (
    cholesky_inverse, cholesky_logdet, offdiag_mask, offdiag_soft_threshold, smooth_objective, symmetrize,
)

__all__ = ["LeastSquares", "LogDet", "QuadraticEnergy", "DATA_TERMS", "data_term", "build", "require", "SERIES_BELOW"]

# Below this tr(M^2), M = Theta^{-1/2} delta Theta^{-1/2}, the log-det excess of a
# trial step is taken from its series (see LogDet.trial).
SERIES_BELOW = 1e-6


def _check_keys(name: str, observation: Mapping[str, Any], keys: Sequence[str]) -> None:
    missing = [k for k in keys if k not in observation]
    if missing:
        raise ValueError(f"the {name} data term needs the observation's {', '.join(map(repr, missing))}; "
                         f"it has {', '.join(map(repr, sorted(observation))) or 'no keys'}")


def _from_pair(cls, observation: Mapping[str, Any], keys: tuple[str, str], dtype: torch.dtype | None):
    """``cls(operator, b)`` from the observation's ``keys`` (an operator and ``b``), computed in ``dtype``
    (default: ``b``'s) and finishing in ``b``'s dtype."""
    _check_keys(cls.name, observation, keys)
    operator, b = (observation[key] for key in keys)
    dtype = b.dtype if dtype is None else dtype
    return cls(operator.to(dtype), b.to(dtype), output_dtype=b.dtype)


class LeastSquares:
    """``L(x) = 0.5 ||A x - b||^2`` per instance, ``A`` shared ``(m, n)`` or per instance ``(N, m, n)``.

    Parameters
    ----------
    A : torch.Tensor
        Design, ``(m, n)`` shared by every instance or ``(N, m, n)``.
    b : torch.Tensor
        Responses, ``(N, m)``.
    output_dtype : torch.dtype, optional
        The dtype ``finish`` returns (default: ``b``'s).

    Notes
    -----
    The state of an iterate (``state``, ``trial``) is its residual
    ``r = A x - b``.
    """

    name = "least_squares"
    penalised = None  # every coordinate
    line_search_dtype = None  # the line search runs in the observation's dtype

    def __init__(self, A: torch.Tensor, b: torch.Tensor, output_dtype: torch.dtype | None = None):
        if A.dim() not in (2, 3) or b.dim() != 2 or A.shape[-2] != b.shape[-1] or \
                (A.dim() == 3 and A.shape[0] != b.shape[0]):
            raise ValueError(f"least squares needs A (m, n) or (N, m, n) and b (N, m); got A {tuple(A.shape)}, "
                             f"b {tuple(b.shape)}")
        self.A, self.b = A, b
        self.output_dtype = b.dtype if output_dtype is None else output_dtype

    @classmethod
    def from_observation(cls, observation: Mapping[str, Any], dtype: torch.dtype | None = None) -> "LeastSquares":
        """The data term of an observation with keys ``A`` and ``b``, computed in ``dtype`` (default: ``b``'s).

        Raises
        ------
        ValueError
            If ``A`` or ``b`` is missing (the message names it) or the shapes disagree.
        """
        return _from_pair(cls, observation, ("A", "b"), dtype)

    @property
    def shared(self) -> bool:
        """Whether one design serves every instance."""
        return self.A.dim() == 2

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """``A x - b``, ``(N, m)``."""
        return matvec(self.A, x) - self.b

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """``0.5 ||A x - b||^2`` per instance, ``(N,)``."""
        r = self.residual(x)
        return 0.5 * (r * r).sum(-1)

    def gradient(self, x: torch.Tensor, state: dict | None = None) -> torch.Tensor:
        """``A^T (A x - b)``, ``(N, n)``; from the residual in ``state`` when given."""
        return rmatvec(self.A, self.residual(x) if state is None else state["r"])

    def gram(self) -> torch.Tensor:
        """``A^T A``: ``(n, n)`` shared or ``(N, n, n)``."""
        return gram(self.A)

    def Atb(self) -> torch.Tensor:  # noqa: N802 (the mathematics' name)
        """``A^T b = -grad L(0)``, ``(N, n)``."""
        return rmatvec(self.A, self.b)

    def lipschitz(self) -> torch.Tensor:
        """``||A||_2^2``, the gradient's Lipschitz constant: a scalar tensor for a shared ``A``, else ``(N,)``."""
        return lipschitz(self.A)

    def curvature_scale(self) -> torch.Tensor:
        """Largest squared column norm per instance, ``(N,)``: the curvature along one coordinate."""
        scale = (self.A**2).sum(-2).amax(-1)
        return scale.expand(self.b.shape[0]).clone() if self.shared else scale

    def start(self) -> torch.Tensor:
        """``x_0 = 0``, ``(N, n)``: the solution for every ``lam >= ||A^T b||_inf``."""
        return self.b.new_zeros(self.b.shape[0], self.A.shape[-1])

    def prox_l1(self, z: torch.Tensor, threshold) -> torch.Tensor:
        """Proximal map of ``threshold ||.||_1``; ``threshold`` a scalar or one per instance ``(N,)``."""
        return soft_threshold(z, per_instance(threshold, z) if torch.is_tensor(threshold) else threshold)

    # The iterate states of a line search (APF).

    def state(self, x: torch.Tensor) -> dict:
        """The state of ``x``: its residual ``{"r": A x - b}``."""
        return {"r": self.residual(x)}

    def trial(self, x: torch.Tensor, delta: torch.Tensor, state: dict, rows: torch.Tensor | None = None):
        """The Bregman excess ``L(x + delta) - L(x) - <grad L(x), delta> = 0.5 ||A delta||^2``.

        Computed from ``A delta``, without cancellation. ``x``, ``delta`` and
        ``state`` hold the instances at positions ``rows`` of this data term
        (``None``: all).

        Returns
        -------
        excess : torch.Tensor
            ``(len(rows),)``.
        feasible : torch.Tensor
            All True.
        state : dict
            The state of ``x + delta``.
        """
        A = self.A if self.shared or rows is None else self.A.index_select(0, rows)
        Ad = matvec(A, delta)
        return 0.5 * (Ad * Ad).sum(-1), torch.ones_like(Ad[:, 0], dtype=torch.bool), {"r": state["r"] + Ad}

    def accept(self, state: dict) -> dict:
        """The state of accepted trial points (unchanged)."""
        return state

    def subset(self, rows: torch.Tensor) -> "LeastSquares":
        """The data term of the instances at ``rows``."""
        A = self.A if self.shared else self.A.index_select(0, rows)
        return LeastSquares(A, self.b.index_select(0, rows), self.output_dtype)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """An estimate in the observation's dtype."""
        return x.to(self.output_dtype)


class LogDet:
    """``L(Theta) = -logdet Theta + tr(S Theta)`` per instance; the penalty applies off the diagonal.

    The smooth part of the graphical lasso (``l2obench.precision``), defined on
    positive-definite ``Theta``.

    Parameters
    ----------
    S : torch.Tensor
        Sample covariances, ``(N, d, d)``; symmetrised.
    M : torch.Tensor, optional
        Sample counts, ``(N,)``.
    output_dtype : torch.dtype, optional
        The dtype ``finish`` returns (default: ``S``'s).

    Notes
    -----
    The state of an iterate is its Cholesky factor ``C``, ``logdet Theta`` and
    ``W = Theta^{-1}``; a trial point is feasible when its Cholesky
    factorisation succeeds (positive definite).
    """

    name = "logdet"
    # The line search's excess is O(||delta||^2) near convergence: float64 inside.
    line_search_dtype = torch.float64

    def __init__(self, S: torch.Tensor, M: torch.Tensor | None = None, output_dtype: torch.dtype | None = None):
        if S.dim() != 3 or S.shape[-1] != S.shape[-2]:
            raise ValueError(f"log-det needs S of shape (N, d, d); got {tuple(S.shape)}")
        self.S, self.M = symmetrize(S), M
        self.output_dtype = S.dtype if output_dtype is None else output_dtype
        self.penalised = offdiag_mask(S.shape[-1], S.device, S.dtype)

    @classmethod
    def from_observation(cls, observation: Mapping[str, Any], dtype: torch.dtype | None = None) -> "LogDet":
        """The data term of an observation with key ``S`` (and optionally ``M``), computed in ``dtype``.

        Raises
        ------
        ValueError
            If ``S`` is missing (the message names it) or not ``(N, d, d)``.
        """
        _check_keys(cls.name, observation, ("S",))
        S = observation["S"]
        return cls(S.to(S.dtype if dtype is None else dtype), observation.get("M"), output_dtype=S.dtype)

    def value(self, Theta: torch.Tensor) -> torch.Tensor:
        """``-logdet Theta + tr(S Theta)`` per instance, ``(N,)``; ``+inf`` where ``Theta`` is not positive definite."""
        return smooth_objective(Theta, self.S)[0]

    def gradient(self, Theta: torch.Tensor, state: dict | None = None) -> torch.Tensor:
        """``S - Theta^{-1}`` (``Theta`` positive definite); from ``W = Theta^{-1}`` in ``state`` when given."""
        W = cholesky_inverse(torch.linalg.cholesky(Theta)) if state is None else state["W"]
        return self.S - W

    def curvature_scale(self) -> torch.Tensor:
        """``max_i S_ii^2``, ``(N,)``: the curvature of ``-logdet`` at ``diag(1 / S_ii)`` along a diagonal entry."""
        return torch.diagonal(self.S, dim1=-2, dim2=-1).amax(-1) ** 2

    def start(self, ridge=None) -> torch.Tensor:
        """A positive-definite start, ``(N, d, d)``.

        Parameters
        ----------
        ridge : float or torch.Tensor, optional
            ``None``: ``diag(1 / S_ii)``, the solution for every
            ``lam >= max_{i != j} |S_ij|``. Otherwise ``(S + ridge I)^{-1}``
            (differentiable in ``ridge``).
        """
        if ridge is None:
            diag = torch.diagonal(self.S, dim1=-2, dim2=-1).clamp_min(torch.finfo(self.S.dtype).tiny)
            return torch.diag_embed(1.0 / diag)
        eye = torch.eye(self.S.shape[-1], dtype=self.S.dtype, device=self.S.device)
        return cholesky_inverse(torch.linalg.cholesky(self.S + ridge * eye))

    def prox_l1(self, z: torch.Tensor, threshold) -> torch.Tensor:
        """Proximal map of ``threshold sum_{i != j} |Theta_ij|``, symmetrised; ``threshold`` scalar or ``(N,)``."""
        return symmetrize(offdiag_soft_threshold(z, threshold))

    # The iterate states of a line search (APF).

    def state(self, Theta: torch.Tensor) -> dict:
        """The state of a positive-definite ``Theta``: Cholesky factor ``C``, ``logdet``, ``W = Theta^{-1}``."""
        C, logdet, _ = cholesky_logdet(Theta)
        return self.accept({"C": C, "logdet": logdet})

    def trial(self, x: torch.Tensor, delta: torch.Tensor, state: dict, rows: torch.Tensor | None = None):
        """The Bregman excess ``-logdet(x + delta) + logdet x + <x^{-1}, delta>``, and feasibility.

        With ``M = x^{-1/2} delta x^{-1/2}`` the excess is
        ``sum_k>=2 (-1)^k tr(M^k) / k = sum(mu - log(1 + mu)) >= 0`` (``mu`` the
        eigenvalues of ``M``). Computed as a difference of log-determinants it
        is lost to rounding near convergence, where it is ``O(||delta||^2)``
        (and a line search reading rounding would accept too long steps), so
        below ``tr(M^2) = SERIES_BELOW`` the series to third order is used
        instead (relative error below ``tr(M^2) / 2``), with
        ``tr(M^k) = tr((W delta)^k)``, ``W = x^{-1}``. ``rows`` is unused
        (every quantity comes from ``x`` and ``state``).

        Returns
        -------
        excess : torch.Tensor
            ``(len(x),)``, ``+inf`` where infeasible.
        feasible : torch.Tensor
            Where ``x + delta`` is positive definite (its Cholesky factorisation succeeds).
        state : dict
            The state of ``x + delta`` before ``accept`` (``W`` still ``x``'s).
        """
        C, logdet, pd = cholesky_logdet(x + delta)
        WD = state["W"] @ delta
        WD2 = WD @ WD
        t1 = torch.diagonal(WD, dim1=-2, dim2=-1).sum(-1)
        t2 = torch.diagonal(WD2, dim1=-2, dim2=-1).sum(-1)
        t3 = (WD2 * WD.transpose(-1, -2)).sum((-1, -2))
        excess = torch.where(t2 < SERIES_BELOW, t2 / 2 - t3 / 3, state["logdet"] - logdet + t1)
        feasible = pd & torch.isfinite(excess)
        excess = torch.where(feasible, excess, torch.full_like(excess, float("inf")))
        return excess, feasible, {"C": C, "logdet": logdet, "W": state["W"]}

    def accept(self, state: dict) -> dict:
        """The state of accepted iterates, with ``W = Theta^{-1}`` from their Cholesky factors."""
        return {**state, "W": cholesky_inverse(state["C"])}

    def subset(self, rows: torch.Tensor) -> "LogDet":
        """The data term of the instances at ``rows``."""
        M = None if self.M is None else self.M.index_select(0, rows)
        return LogDet(self.S.index_select(0, rows), M, self.output_dtype)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """An estimate in the observation's dtype."""
        return x.to(self.output_dtype)


class QuadraticEnergy:
    """``E(y) = 0.5 y^T Q y + b^T y`` per instance, ``Q`` ``(N, d, d)`` symmetric positive definite.

    The energy of the ``quadratic`` family (thesis section 4.3); its minimizer
    is ``-Q^{-1} b``.

    Parameters
    ----------
    Q : torch.Tensor
        ``(N, d, d)``, symmetric positive definite.
    b : torch.Tensor
        ``(N, d)``.
    output_dtype : torch.dtype, optional
        The dtype ``finish`` returns (default: ``b``'s).
    """

    name = "quadratic"
    penalised = None

    def __init__(self, Q: torch.Tensor, b: torch.Tensor, output_dtype: torch.dtype | None = None):
        if Q.dim() != 3 or Q.shape[-1] != Q.shape[-2] or b.dim() != 2 or Q.shape[:2] != b.shape:
            raise ValueError(f"a quadratic energy needs Q (N, d, d) and b (N, d); got Q {tuple(Q.shape)}, "
                             f"b {tuple(b.shape)}")
        self.Q, self.b = Q, b
        self.output_dtype = b.dtype if output_dtype is None else output_dtype

    @classmethod
    def from_observation(cls, observation: Mapping[str, Any], dtype: torch.dtype | None = None) -> "QuadraticEnergy":
        """The energy of an observation with keys ``Q`` and ``b``, in ``dtype``; errors as ``LeastSquares``'s."""
        return _from_pair(cls, observation, ("Q", "b"), dtype)

    def value(self, y: torch.Tensor) -> torch.Tensor:
        """``0.5 y^T Q y + b^T y`` per instance, ``(N,)``."""
        return (0.5 * matvec(self.Q, y) + self.b).mul(y).sum(-1)

    def gradient(self, y: torch.Tensor, state: dict | None = None) -> torch.Tensor:
        """``Q y + b``, ``(N, d)``."""
        return matvec(self.Q, y) + self.b

    def eigenvalue_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, L)``: the smallest and largest eigenvalue of each ``Q``, ``(N,)`` each (float64 inside)."""
        eigenvalues = torch.linalg.eigvalsh(self.Q.double())
        return eigenvalues[:, 0].to(self.Q.dtype), eigenvalues[:, -1].to(self.Q.dtype)

    def lipschitz(self) -> torch.Tensor:
        """The gradient's Lipschitz constant ``L = lambda_max(Q)``, ``(N,)``."""
        return self.eigenvalue_bounds()[1]

    def strong_convexity(self) -> torch.Tensor:
        """The strong-convexity constant ``mu = lambda_min(Q)``, ``(N,)``."""
        return self.eigenvalue_bounds()[0]

    def start(self) -> torch.Tensor:
        """``y_0 = 0``, ``(N, d)`` (thesis section 4.4.2: zero initialization)."""
        return torch.zeros_like(self.b)

    def minimizer(self) -> torch.Tensor:
        """``-Q^{-1} b`` by a batched Cholesky solve (float64 inside), in the observation's dtype."""
        factor = torch.linalg.cholesky(self.Q.double())
        return -torch.cholesky_solve(self.b.double().unsqueeze(-1), factor).squeeze(-1).to(self.b.dtype)

    def finish(self, y: torch.Tensor) -> torch.Tensor:
        """An estimate in the observation's dtype."""
        return y.to(self.output_dtype)


DATA_TERMS: dict[str, type] = {cls.name: cls for cls in (LeastSquares, LogDet, QuadraticEnergy)}


def data_term(name: str) -> type:
    """The data-term class called ``name`` (``"least_squares"``, ``"logdet"``).

    Raises
    ------
    ValueError
        For an unknown name (the message lists the known ones).
    """
    try:
        return DATA_TERMS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown data term {name!r}; known: {', '.join(DATA_TERMS)}") from None


def require(term, needs: Sequence[str], solver: str = "the solver") -> None:
    """Check that the data term (class or instance) ``term`` provides every method in ``needs``.

    Raises
    ------
    NotImplementedError
        Naming the solver, the data term and what it lacks.
    """
    missing = [need for need in needs if not callable(getattr(term, need, None))]
    if missing:
        cls = term if isinstance(term, type) else type(term)
        raise NotImplementedError(f"{solver} needs the data term's {', '.join(missing)}, which "
                                  f"{cls.__name__} ({getattr(cls, 'name', '?')!r}) does not provide")


def build(name: str, observation: Mapping[str, Any], needs: Sequence[str] = (), solver: str = "the solver",
          dtype: torch.dtype | None = None):
    """The data term ``name`` of ``observation``, checked to provide ``needs``.

    Parameters
    ----------
    name : str
        A key of ``DATA_TERMS``, e.g. a family's ``data_term``.
    observation : mapping of str to Tensor
        What ``solve`` received.
    needs : sequence of str
        Methods the caller will use (see ``require``).
    solver : str
        The caller's name, for error messages.
    dtype : torch.dtype, optional
        Compute dtype (default: the observation's).
    """
    cls = data_term(name)
    require(cls, needs, solver)
    return cls.from_observation(observation, dtype=dtype)
