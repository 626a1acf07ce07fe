"""An HDF5 file opened read-only on first use in each process (DESIGN.md: never in the parent).

Datasets hold a :class:`LazyH5` instead of an open handle: pickling it to a DataLoader
worker drops the handle, and a handle inherited through fork is never reused.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py


class LazyH5:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def __call__(self) -> h5py.File:
        """The open file of this process."""
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def __getstate__(self):
        return {"path": self.path, "_file": None, "_pid": None}
