"""``embeddings.h5``: one embedding per tile (DESIGN.md).

``embeddings`` float32 N x D, ``keys`` (string) identifying each tile; attrs ``encoder``
(hash of encoder.safetensors), ``encoder_name``, ``n_done``. Written to ``<out>.partial``
and renamed when complete; ``n_done`` lets a killed run continue where it stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from gensis.atomic import durable_replace
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
        n = self._n = len(keys)
        self.finished = False
        if self.out.is_file() and matches(self.out, keys, dim, encoder_hash, complete=True):
            self.finished, self.file = True, None  # done in an earlier run
            return
        if self.path.is_file():
            f = None
            try:
                f = h5py.File(self.path, "a")
                same = matches(f, keys, dim, encoder_hash)
            except (OSError, KeyError):  # unreadable or incomplete part file: start it again
                same = False
            if same:
                self.file = f
                return
            if f is not None:
                f.close()
            self.path.unlink()
        self.file = h5py.File(self.path, "w")
        self.file.create_dataset("embeddings", shape=(n, dim), dtype=np.float32,
                                 chunks=(min(n, 1024), dim) if n else None)
        self.file.create_dataset("keys", data=list(keys), dtype=STRING)
        self.file.attrs["encoder"] = encoder_hash
        self.file.attrs["encoder_name"] = encoder_name
        self.file.attrs["n_done"] = 0

    @property
    def n_done(self) -> int:
        if self.finished:
            return self._n
        return int(self.file.attrs["n_done"])

    def write(self, start: int, embeddings: np.ndarray) -> None:
        """Store rows ``start:start+len`` and advance ``n_done`` (rows must arrive in order)."""
        end = start + len(embeddings)
        self.file["embeddings"][start:end] = embeddings
        if start <= self.n_done:
            self.file.attrs["n_done"] = max(self.n_done, end)
        self.file.flush()

    def finish(self) -> Path:
        if self.finished:
            return self.out
        if self.n_done != len(self.file["keys"]):
            raise GensisError(f"{self.path}: only {self.n_done} of {len(self.file['keys'])} embeddings written")
        self.file.close()
        durable_replace(self.path, self.out)
        return self.out

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def matches(file, keys, dim: int, encoder_hash: str, complete: bool = False) -> bool:
    """Whether an embeddings file (path or open file) holds these keys for this encoder."""
    if not isinstance(file, h5py.File):
        try:
            with h5py.File(file, "r") as f:
                return matches(f, keys, dim, encoder_hash, complete)
        except (OSError, KeyError):
            return False
    stored = [k.decode() if isinstance(k, bytes) else k for k in file["keys"][:]]
    if file.attrs.get("encoder") != encoder_hash or file["embeddings"].shape != (len(keys), dim):
        return False
    if complete and int(file.attrs.get("n_done", -1)) != len(keys):
        return False
    return stored == list(keys)


def is_embeddings_file(path: Path) -> bool:
    """Whether ``path`` is an embeddings file gensis wrote (finished or not): one ``embed`` may replace."""
    try:
        with h5py.File(path, "r") as f:
            return {"embeddings", "keys"} <= set(f) and "encoder" in f.attrs
    except (OSError, KeyError):
        return False


def read_embeddings(path: str | Path) -> tuple[np.ndarray, list[str], dict]:
    """(embeddings, keys, attrs) of a finished embeddings file."""
    path = Path(path)
    if not path.is_file():
        raise GensisError(f"{path}: no such embeddings file")
    try:
        with h5py.File(path, "r") as f:
            keys = [k.decode() if isinstance(k, bytes) else k for k in f["keys"][:]]
            return f["embeddings"][:], keys, dict(f.attrs)
    except (OSError, KeyError) as err:
        raise GensisError(f"{path}: not a readable embeddings file ({' '.join(str(err).split())[:160]}); make it "
                          f"again with gensis embed") from None
