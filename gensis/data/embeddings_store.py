"""``embeddings.h5``: one embedding per tile (DESIGN.md).

``embeddings`` float32 N x D, ``keys`` (string) identifying each tile; attrs ``encoder``
(hash of encoder.safetensors), ``encoder_name``, ``n_done``. Written to ``<out>.partial``
and renamed when complete; ``n_done`` lets a killed run continue where it stopped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from gensis.errors import GensisError

STRING = h5py.string_dtype("utf-8")


def partial_path(out: Path) -> Path:
    return Path(out).with_name(Path(out).name + ".partial")


class EmbeddingsWriter:
    """Fill an embeddings file in order; resumes a matching ``.partial`` file."""

    def __init__(self, out: Path, keys: Sequence[str], dim: int, encoder_hash: str, encoder_name: str):
        self.out = Path(out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.path = partial_path(self.out)
        n = len(keys)
        if self.path.is_file():
            try:
                f = h5py.File(self.path, "a")
                stored = [k.decode() if isinstance(k, bytes) else k for k in f["keys"][:]]
                same = (f.attrs.get("encoder") == encoder_hash and f["embeddings"].shape == (n, dim)
                        and stored == list(keys))
            except OSError:
                same, f = False, None
            if same:
                self.file = f
                return
            if f is not None:
                f.close()
            self.path.unlink()
        self.file = h5py.File(self.path, "w")
        self.file.create_dataset("embeddings", shape=(n, dim), dtype=np.float32, chunks=(min(max(n, 1), 1024), dim))
        self.file.create_dataset("keys", data=list(keys), dtype=STRING)
        self.file.attrs["encoder"] = encoder_hash
        self.file.attrs["encoder_name"] = encoder_name
        self.file.attrs["n_done"] = 0

    @property
    def n_done(self) -> int:
        return int(self.file.attrs["n_done"])

    def write(self, start: int, embeddings: np.ndarray) -> None:
        """Store rows ``start:start+len`` and advance ``n_done`` (rows must arrive in order)."""
        end = start + len(embeddings)
        self.file["embeddings"][start:end] = embeddings
        if start <= self.n_done:
            self.file.attrs["n_done"] = max(self.n_done, end)
        self.file.flush()

    def finish(self) -> Path:
        if self.n_done != len(self.file["keys"]):
            raise GensisError(f"{self.path}: only {self.n_done} of {len(self.file['keys'])} embeddings written")
        self.file.close()
        os.replace(self.path, self.out)
        return self.out

    def close(self) -> None:
        self.file.close()


def read_embeddings(path: str | Path) -> tuple[np.ndarray, list[str], dict]:
    """(embeddings, keys, attrs) of a finished embeddings file."""
    path = Path(path)
    if not path.is_file():
        raise GensisError(f"{path}: no such embeddings file")
    with h5py.File(path, "r") as f:
        keys = [k.decode() if isinstance(k, bytes) else k for k in f["keys"][:]]
        return f["embeddings"][:], keys, dict(f.attrs)
