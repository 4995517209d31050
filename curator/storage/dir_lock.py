"""One writer process per data directory: an exclusive, non-blocking lock on `<dir>/LOCK`.

The lock is an `flock` held for the life of the writer, so the kernel releases it when the
process dies (a `kill -9` never leaves a stale lock). The holder writes its pid into the file,
so a second opener can say who holds it. Read-only opens take no lock (LMDB readers are safe
beside a writer).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from curator.errors import FailedPrecondition

__all__ = ["DirLock"]


class DirLock:
    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "LOCK"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FailedPrecondition(
                f"expected the data directory {data_dir} to be free, got it in use by "
                f"process {holder} (one writer per data directory; stop it, or open read-only)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
