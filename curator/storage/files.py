"""Private files: the data directory is 0700 and its files 0600 (vectors, documents and key
digests are no other local user's business)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DIR_MODE", "FILE_MODE", "private_dir", "private_tree"]

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: str | os.PathLike[str]) -> Path:
    """Create `path` (and missing parents, 0700 too) if needed and make it 0700; returns it."""
    path = Path(path)
    for folder in reversed([path, *path.parents]):
        if not folder.exists():
            folder.mkdir(mode=DIR_MODE, exist_ok=True)
            os.chmod(folder, DIR_MODE)  # mkdir's mode is masked by the umask
    os.chmod(path, DIR_MODE)
    return path


def private_tree(path: str | os.PathLike[str]) -> None:
    """Make `path` and every folder under it 0700, every file 0600 (tightens what an older
    version or a copy left readable)."""
    root = Path(path)
    if not root.is_dir():
        return
    os.chmod(root, DIR_MODE)
    for folder, dirs, names in os.walk(root):
        for name, mode in [(d, DIR_MODE) for d in dirs] + [(n, FILE_MODE) for n in names]:
            full = os.path.join(folder, name)
            if not os.path.islink(full):  # a link's target is not ours to change
                os.chmod(full, mode)
