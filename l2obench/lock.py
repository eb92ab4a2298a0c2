"""One writer per results directory: an exclusive ``flock`` held while a run writes to it."""
from __future__ import annotations

import datetime as dt
import errno
import os
import socket
from pathlib import Path

from l2obench.errors import UsageError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: runs are not locked
    fcntl = None

__all__ = ["LOCK_NAME", "RunLock"]

LOCK_NAME = ".l2obench.lock"


class RunLock:
    """An exclusive lock on a results directory (``fcntl.flock`` on ``LOCK_NAME`` in it).

    The lock file holds who took it (process id, host, time) for the message a
    second writer gets; it is removed when the lock is released, and the
    operating system releases the lock of a process that dies. A lock is per
    open file, so two runners in one process exclude each other too. On file
    systems without ``flock`` (some network file systems) and off POSIX, runs
    are not locked.

    Parameters
    ----------
    directory : path
        Created if missing.

    Raises
    ------
    UsageError
        If another run holds the lock, or the directory cannot be written.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._fd: int | None = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if fcntl is not None:
                self._fd = self._acquire()
        except OSError as exc:
            raise UsageError(f"cannot write to results directory {self.directory}: "
                             f"{exc.strerror or exc}") from None

    def _acquire(self) -> int | None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise UsageError(f"{self.directory} is in use by another l2obench run "
                                     f"({holder or 'holder unknown'}); wait for it to end or choose another "
                                     "--results") from None
                if exc.errno in (errno.ENOLCK, errno.ENOTSUP, errno.EOPNOTSUPP):
                    return None
                raise
            try:  # the holder before us may have removed the file after we opened it: lock the new one
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(fd).st_ino:
                os.ftruncate(fd, 0)
                now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
                os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {now}\n".encode())
                return fd
            os.close(fd)

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def release(self) -> None:
        """Remove the lock file and release the lock (a second call does nothing)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
