"""Atomic file writes: a temporary file beside the target, then a rename."""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable


def write_atomically(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it to ``path``.

    Readers see the old file or the whole new one, never a partial write; the
    temporary file is removed if ``write`` fails or is interrupted.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
