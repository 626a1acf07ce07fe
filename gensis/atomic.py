"""Atomic file writes: write to a temporary name beside the target, then rename.

A killed run therefore never leaves a half-written output under its final name.
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
        os.replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise


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
