"""Settings shared by the problem families: levels (SNR levels, sample sizes) and split sizes.

Every split holds the levels in equal numbers (so train and test metrics compare
like with like), and ``evaluate`` reports each metric per level as well as overall.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from l2obench.contracts import Measurement


def as_levels(value, name: str, convert=float) -> list:
    """A setting that is one value or a list of levels, as a non-empty list."""
    levels = list(value) if isinstance(value, (list, tuple)) else [value]
    if not levels:
        raise ValueError(f"{name} needs at least one level")
    return [convert(v) for v in levels]


def snr_levels(snr) -> list[float]:
    """SNR levels in dB; ``None`` (or ``inf``) is noiseless, ``inf``."""
    return as_levels(snr, "snr", lambda v: math.inf if v is None else float(v))


def level_index(n: int, levels: int) -> torch.Tensor:
    """Level of each of ``n`` instances: equal numbers per level in every split."""
    return torch.arange(n) % levels


def per_level(group: torch.Tensor, label: Callable[[float], str],
              measure: Callable[[torch.Tensor, str], list[Measurement]]) -> list[Measurement]:
    """``measure(mask, subset)`` for each level of ``group`` (one label per instance), when it has several."""
    levels = sorted(set(group.tolist()))
    if len(levels) < 2:
        return []
    return [m for level in levels for m in measure(group == level, label(level))]


def checked_split_sizes(family) -> dict[str, int]:
    """``{"train": n_train, "val": n_val, "test": n_test}`` of a family, each checked to be a positive integer."""
    sizes = {}
    for split in ("train", "val", "test"):
        value = getattr(family, f"n_{split}")
        if int(value) != value or value < 1:
            raise ValueError(f"n_{split} must be a positive integer, got {value}")
        sizes[split] = int(value)
    return sizes
