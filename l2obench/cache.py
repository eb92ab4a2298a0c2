"""On-disk cache of generated data and fitted solvers, keyed by content.

The root is ``$L2OBENCH_CACHE`` or ``~/.cache/l2obench``. Entries are written
atomically with ``torch.save`` and read with ``torch.load(weights_only=True)``.
Each ``<key>.pt`` has a ``<key>.pt.sha256`` beside it, the SHA-256 of its bytes,
written after it: an entry whose bytes no longer match (changed or replaced by
anything but this cache, even with something that still loads), that has no
checksum (written by an l2obench before checksums, or interrupted between the two
writes) or that cannot be read is discarded with a warning and recomputed.
A cache that cannot be written (read-only, full, or its path under a file) is
not an error: the first failed write prints one warning and the process runs on
without writing to it (entries already there are still read).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from l2obench.atomic import write_atomically
from l2obench.hashing import file_digest

ENV_VAR = "L2OBENCH_CACHE"


def default_cache_dir() -> Path:
    return Path(os.environ.get(ENV_VAR) or Path.home() / ".cache" / "l2obench")


class Cache:
    """A directory of ``<kind>/<key>.pt`` files; ``enabled=False`` stores nothing.

    Attributes
    ----------
    writable : bool
        False once a write has failed: later ``save`` calls do nothing.
    """

    def __init__(self, root: str | Path | None = None, enabled: bool = True):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.enabled = enabled
        self.writable = True

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.pt"

    @staticmethod
    def checksum_path(path: Path) -> Path:
        """Where the SHA-256 of entry ``path``'s bytes is kept."""
        return path.with_name(path.name + ".sha256")

    def load(self, kind: str, key: str) -> Any | None:
        """The entry ``kind/key``, or None when there is none or it is discarded (module docstring)."""
        import torch

        path = self.path(kind, key)
        if not self.enabled or not path.exists():
            return None
        try:
            expected = self.checksum_path(path).read_text().strip()
        except OSError:
            return self._discard(path, "it has no checksum (written before checksums, or interrupted)")
        try:
            if file_digest(path, length=64) != expected:
                return self._discard(path, "its bytes do not match the checksum written with it (changed since)")
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a broken entry is recomputed
            return self._discard(path, f"it cannot be read: {exc}")

    @staticmethod
    def _discard(path: Path, why: str) -> None:
        print(f"l2obench: warning: discarding cache entry {path}, recomputing it: {why}", file=sys.stderr)
        for stale in (path, Cache.checksum_path(path)):
            try:
                stale.unlink(missing_ok=True)
            except OSError:  # a read-only cache: the entry stays, and is recomputed each time
                pass
        return None

    def save(self, kind: str, key: str, obj: Any) -> None:
        """Write ``obj`` as the entry ``kind/key``, then its checksum."""
        import torch

        if not self.enabled or not self.writable:
            return
        digest = {}

        def write(tmp: Path) -> None:
            # Through a Python file: a full disk is then an OSError (ENOSPC); torch.save given a path
            # raises a RuntimeError from its zip writer instead.
            with open(tmp, "wb") as file:
                torch.save(obj, file)
            digest["sha256"] = file_digest(tmp, length=64)

        try:
            path = write_atomically(self.path(kind, key), write)
            write_atomically(self.checksum_path(path), lambda tmp: tmp.write_text(digest["sha256"] + "\n"))
        except OSError as exc:
            self.writable = False
            print(f"l2obench: warning: cannot write the cache at {self.root} ({exc.strerror or exc}); running "
                  "without writing to it (--cache-dir chooses another, --no-cache turns it off)", file=sys.stderr)
