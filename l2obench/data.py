"""Generating (or loading from the cache) the splits of one problem setting and seed."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

from l2obench.cache import Cache
from l2obench.contracts import Instances, ProblemFamily
from l2obench.hashing import content_key, generator_for, tensors_hash
from l2obench.specs import ProblemSpec


@dataclass
class Splits:
    """A family instance with its named splits (CPU tensors) and their hashes."""

    family: ProblemFamily
    key: str
    splits: dict[str, Instances]
    hashes: dict[str, str]

    hidden: frozenset = frozenset()

    def train_stream(self, device) -> Callable[[int], Instances]:
        """``draw(n)``: fresh training instances from a deterministic stream."""
        generator = generator_for(self.key, "train-stream")
        shared = self.splits["train"].shared

        def draw(n: int) -> Instances:
            return self.family.draw(n, generator, shared, "train").hiding(self.hidden).to(device)

        return draw

    def hiding(self, keys) -> "Splits":
        """These splits (and training stream) with ``Instances.hiding(keys)``: what a solver that must not
        read ``keys`` is given."""
        keys = frozenset(keys)
        if keys == self.hidden:
            return self
        return replace(self, splits={name: split.hiding(keys) for name, split in self.splits.items()}, hidden=keys)


def data_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that identify a data stream: those not left at null."""
    return {k: v for k, v in settings.items() if v is not None}


def make_splits(spec: ProblemSpec, settings: Mapping[str, Any], seed: int, cache: Cache,
                progress: Callable[..., Any] | None = None) -> Splits:
    """Build the family and draw each split from its own seed stream.

    The shared tensors (e.g. a sensing matrix) come from the stream
    ``(stream, "shared")`` and split ``s`` from ``(stream, s)``, where
    ``stream`` hashes the family, its version, the resolved settings and the
    seed, less the family's ``stream_free_settings`` (sizes that change how
    many instances are drawn, not how: settings differing only in them draw
    from the same streams). The cache key ``key`` hashes every setting.
    Settings left at null enter neither, so a family that gains an optional
    setting keeps drawing the same data for the settings it had.
    """
    family = spec.build(**settings)
    identity = data_settings(settings)
    key = content_key("data", spec.name, family.version, identity, seed)
    free = set(getattr(family, "stream_free_settings", ()))
    stream = key if not free & set(identity) else content_key(
        "data", spec.name, family.version, {k: v for k, v in identity.items() if k not in free}, seed)
    cached = cache.load("data", key)
    if cached is not None:
        splits = {name: Instances.from_tensors(t) for name, t in cached.items()}
    else:
        sizes = family.split_sizes()
        bar = progress(total=len(sizes), desc=f"data {spec.name} seed {seed}") if progress else None
        shared = family.draw_shared(generator_for(stream, "shared"))
        splits = {}
        for name, n in sizes.items():
            splits[name] = family.draw(n, generator_for(stream, name), shared, name)
            if bar:
                bar.update(1)
        if bar:
            bar.close()
        cache.save("data", key, {name: inst.tensors() for name, inst in splits.items()})
    hashes = {name: tensors_hash(inst.tensors()) for name, inst in splits.items()}
    return Splits(family, key, splits, hashes)
