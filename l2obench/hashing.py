"""Content keys and seed streams.

Every split is drawn from its own generator, derived from the problem setting,
the seed and the split name, so the same seed gives the same bytes on any machine
with the same CPU kernels (MKL's code path differs by CPU vendor and instruction
set; see the README); caches are keyed by the content of what produced an entry.
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


def file_digest(path, length: int = 16) -> str:
    """SHA-256 of a file's bytes, read in chunks, as ``length`` hex digits (64: all of it): the source
    hash of a plugin file or of a module behind a factory, and a cache entry's checksum."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]


def source_digest(cls: type, length: int = 16) -> str:
    """Hash of the source files behind ``cls``, so that a cached fitted state is not served after
    its code changed: the modules defining ``cls`` and its base classes, and the modules of the
    same packages (or l2obench's) whose functions or classes those modules import."""
    import inspect
    import sys

    def package(name: str) -> str:
        return name.split(".")[0]

    own = {package(base.__module__) for base in inspect.getmro(cls)} | {"l2obench"}
    own -= {"builtins", "torch", "typing", "abc"}
    modules = {sys.modules[base.__module__] for base in inspect.getmro(cls)
               if package(base.__module__) in own and base.__module__ in sys.modules}
    for module in list(modules):
        for value in vars(module).values():
            name = value.__name__ if inspect.ismodule(value) else getattr(value, "__module__", None)
            if isinstance(name, str) and package(name) in own and name in sys.modules:
                modules.add(sys.modules[name])
    h = hashlib.sha256()
    for path in sorted(filter(None, (getattr(m, "__file__", None) for m in modules))):
        with open(path, "rb") as handle:
            h.update(handle.read())
    return h.hexdigest()[:length]
