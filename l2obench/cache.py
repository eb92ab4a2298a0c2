"""On-disk cache of generated data and fitted solvers, keyed by content.

The root is ``$L2OBENCH_CACHE`` or ``~/.cache/l2obench``. Entries are written
atomically with ``torch.save`` and read with ``torch.load(weights_only=True)``;
an unreadable entry is discarded and recomputed. A cache that cannot be
written (read-only, full, or its path under a file) is not an error: the first
failed write prints one warning and the process runs on without writing to it
(entries already there are still read).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from l2obench.atomic import write_atomically

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

    def load(self, kind: str, key: str) -> Any | None:
        import torch

        path = self.path(kind, key)
        if not self.enabled or not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a broken entry is recomputed
            print(f"l2obench: warning: discarding unreadable cache entry {path}: {exc}", file=sys.stderr)
            try:
                path.unlink(missing_ok=True)
            except OSError:  # a read-only cache: the entry stays, and is recomputed each time
                pass
            return None

    def save(self, kind: str, key: str, obj: Any) -> None:
        import torch

        if not self.enabled or not self.writable:
            return
        def write(tmp: Path) -> None:
            # Through a Python file: a full disk is then an OSError (ENOSPC); torch.save given a path
            # raises a RuntimeError from its zip writer instead.
            with open(tmp, "wb") as file:
                torch.save(obj, file)

        try:
            write_atomically(self.path(kind, key), write)
        except OSError as exc:
            self.writable = False
            print(f"l2obench: warning: cannot write the cache at {self.root} ({exc.strerror or exc}); running "
                  "without writing to it (--cache-dir chooses another, --no-cache turns it off)", file=sys.stderr)
