"""Content keys and seed streams.

Every split is drawn from its own generator, derived from the problem setting,
the seed and the split name, so the same seed gives the same bytes anywhere;
caches are keyed by the content of what produced an entry.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no spaces: the form that gets hashed and stored."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def content_key(*parts: Any, length: int = 16) -> str:
    """Hex digest of the canonical JSON of ``parts``."""
    return hashlib.sha256(canonical_json(parts).encode()).hexdigest()[:length]


def seed_for(*parts: Any) -> int:
    """A 63-bit seed derived from ``parts`` (e.g. setting key, seed, split name)."""
    return int(hashlib.sha256(canonical_json(parts).encode()).hexdigest()[:16], 16) >> 1


def generator_for(*parts: Any):
    """A CPU ``torch.Generator`` seeded by ``seed_for(*parts)``."""
    import torch

    return torch.Generator(device="cpu").manual_seed(seed_for(*parts))


def tensors_hash(tensors: Mapping[str, Any], length: int = 16) -> str:
    """Hash of named tensors' names, dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:length]
