"""Sparsity penalties and their concave parts, element-wise and batched.

Each penalty ``p(x; lam)`` is written as ``lam |x| + q(x; lam)``: the convex
l1 part plus a concave part ``q`` (zero for the l1 penalty itself). Proximal
methods for non-convex penalties (APF, PLISA; thesis section 7.3) take a
gradient step on the smooth loss plus ``q``, then soft-threshold by ``lam``:

    x <- soft(x - step * (grad f(x) + q'(x; lam)), step * lam).

``lam`` may be a scalar or a tensor broadcastable to ``x`` (PLISA learns one
per coordinate). MCP (Zhang 2010) with ``gamma > 1`` (default 3) and SCAD
(Fan and Li 2001) with ``a > 2`` (default 3.7):

    MCP:  p = lam |x| - x^2 / (2 gamma)                    if |x| <= gamma lam
          p = gamma lam^2 / 2                              otherwise
    SCAD: p = lam |x|                                      if |x| <= lam
          p = (2 a lam |x| - x^2 - lam^2) / (2 (a - 1))    if lam < |x| <= a lam
          p = (a + 1) lam^2 / 2                            otherwise
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

MCP_GAMMA = 3.0
SCAD_A = 3.7


def l1(x: torch.Tensor, lam) -> torch.Tensor:
    """``lam |x|`` element-wise."""
    return lam * x.abs()


def mcp(x: torch.Tensor, lam, gamma: float = MCP_GAMMA) -> torch.Tensor:
    """Minimax concave penalty, element-wise."""
    return l1(x, lam) + mcp_concave(x, lam, gamma)


def mcp_concave(x: torch.Tensor, lam, gamma: float = MCP_GAMMA) -> torch.Tensor:
    """Concave part ``q = mcp - lam |x|``: ``-x^2 / (2 gamma)`` inside ``gamma lam``, ``gamma lam^2 / 2 - lam |x|`` beyond."""
    a = x.abs()
    return torch.where(a <= gamma * lam, -x**2 / (2 * gamma), gamma * lam**2 / 2 - lam * a)


def mcp_concave_grad(x: torch.Tensor, lam, gamma: float = MCP_GAMMA) -> torch.Tensor:
    """``dq/dx`` of MCP: ``-x / gamma`` inside ``gamma lam``, ``-lam sign(x)`` beyond (continuous)."""
    return torch.where(x.abs() <= gamma * lam, -x / gamma, -lam * torch.sign(x))


def scad(x: torch.Tensor, lam, a: float = SCAD_A) -> torch.Tensor:
    """Smoothly clipped absolute deviation penalty, element-wise."""
    return l1(x, lam) + scad_concave(x, lam, a)


def scad_concave(x: torch.Tensor, lam, a: float = SCAD_A) -> torch.Tensor:
    """Concave part ``q = scad - lam |x|``: 0, then ``-(|x| - lam)^2 / (2 (a - 1))``, then ``(a + 1) lam^2 / 2 - lam |x|``."""
    v = x.abs()
    middle = -((v - lam) ** 2) / (2 * (a - 1))
    outer = (a + 1) * lam**2 / 2 - lam * v
    return torch.where(v <= lam, torch.zeros_like(x), torch.where(v <= a * lam, middle, outer))


def scad_concave_grad(x: torch.Tensor, lam, a: float = SCAD_A) -> torch.Tensor:
    """``dq/dx`` of SCAD: 0, then ``-(|x| - lam) sign(x) / (a - 1)``, then ``-lam sign(x)`` (continuous)."""
    v, s = x.abs(), torch.sign(x)
    middle = -(v - lam) * s / (a - 1)
    return torch.where(v <= lam, torch.zeros_like(x), torch.where(v <= a * lam, middle, -lam * s))


def _zero(x: torch.Tensor, lam, *_) -> torch.Tensor:
    return 0.0 * x  # (not zeros_like: differentiable, with gradient zero)


@dataclass(frozen=True)
class Penalty:
    """A penalty's value, concave part and the concave part's derivative, all ``f(x, lam, param)``."""

    name: str
    value: Callable[..., torch.Tensor]
    concave: Callable[..., torch.Tensor]
    concave_grad: Callable[..., torch.Tensor]
    param: float | None = None  # MCP's gamma, SCAD's a

    def __call__(self, x: torch.Tensor, lam) -> torch.Tensor:
        return self.value(x, lam) if self.param is None else self.value(x, lam, self.param)

    def q(self, x: torch.Tensor, lam) -> torch.Tensor:
        return self.concave(x, lam) if self.param is None else self.concave(x, lam, self.param)

    def q_grad(self, x: torch.Tensor, lam) -> torch.Tensor:
        return self.concave_grad(x, lam) if self.param is None else self.concave_grad(x, lam, self.param)


def penalty(name: str, param: float | None = None) -> Penalty:
    """The penalty called ``name`` (``l1``, ``mcp``, ``scad``), with MCP's gamma or SCAD's a (defaults 3, 3.7)."""
    if name == "l1":
        return Penalty("l1", l1, _zero, _zero)
    if name == "mcp":
        gamma = MCP_GAMMA if param is None else float(param)
        if gamma <= 1:
            raise ValueError(f"MCP needs gamma > 1, got {gamma}")
        return Penalty("mcp", mcp, mcp_concave, mcp_concave_grad, gamma)
    if name == "scad":
        a = SCAD_A if param is None else float(param)
        if a <= 2:
            raise ValueError(f"SCAD needs a > 2, got {a}")
        return Penalty("scad", scad, scad_concave, scad_concave_grad, a)
    raise ValueError(f"unknown penalty {name!r}; use l1, mcp or scad")


PENALTY_NAMES = ("l1", "mcp", "scad")
