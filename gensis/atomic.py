"""Atomic file writes: write to a temporary name beside the target, flush it to disk, then rename.

A killed run therefore never leaves a half-written output under its final name, and a power
loss never leaves a renamed but empty one (the data is fsynced before the rename, the folder
after it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator


def temporary_path(path: Path) -> Path:
    """The temporary sibling of ``path`` used while it is being written."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it to ``path``, on error remove it.

    Works for files and directories alike.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    remove(tmp)
    try:
        yield tmp
        if path.is_dir() and tmp.is_dir():
            remove(path)
        durable_replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise


def fsync_tree(path: Path) -> None:
    """Flush a file to disk; for a folder (thousands of tile files) one ``sync`` instead of an fsync per file."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        os.sync()
    elif path.is_file():
        _fsync(path)


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a folder
        if not directory:
            raise
    finally:
        os.close(fd)


def durable_replace(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """``os.replace(src, dst)`` with ``src`` flushed to disk first and the folder after."""
    fsync_tree(Path(src))
    os.replace(src, dst)
    _fsync(Path(dst).parent, directory=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def remove(path: Path) -> None:
    """Remove a file or directory tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def remove_stale_temporaries(directory: Path) -> None:
    """Remove temporaries a killed run left behind in ``directory`` (not recursive)."""
    if directory.is_dir():
        for entry in directory.glob(".*.tmp-*"):
            remove(entry)
