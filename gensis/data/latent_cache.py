"""``latents.h5``: every tile's autoencoder posterior, computed once for latent-space stage 2.

``mean`` and ``std`` float16 N x C x h x w (the diagonal Gaussian the encoder gives each tile),
``keys`` (the tile source's), attrs ``vae`` (hash of the autoencoder weights) and
``image_size``. Training draws z = mean + std * noise from it, so the autoencoder's encoder
never runs during training. Written to a temporary name and renamed when complete.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from gensis.atomic import atomic_path
from gensis.data.conditioned_tiles import diffusion_transform
from gensis.data.lazy_h5 import LazyH5
from gensis.data.tile_source import open_tiles

STRING = h5py.string_dtype("utf-8")


def latent_cache_matches(path: Path, keys: list[str], vae_hash: str, image_size: int) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return (f.attrs.get("vae") == vae_hash and int(f.attrs.get("image_size", -1)) == image_size
                    and [k.decode() if isinstance(k, bytes) else k for k in f["keys"][:]] == list(keys))
    except (OSError, KeyError):
        return False


@torch.no_grad()
def cache_latents(vae, data_path: str, image_size: int, out: Path, vae_hash: str, device: torch.device,
                  batch_size: int = 32, workers: int = 0, progress: bool = True) -> Path:
    """Encode every tile at ``data_path`` into ``out`` (skipped when ``out`` already matches)."""
    from tqdm import tqdm

    tiles = open_tiles(data_path, transform=diffusion_transform(image_size))
    if latent_cache_matches(out, tiles.keys, vae_hash, image_size):
        return out
    vae = vae.to(device)
    loader = DataLoader(tiles, batch_size=batch_size, num_workers=workers)
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as f:
            mean = std = None
            row = 0
            for batch in tqdm(loader, desc="encode latents", unit="batch", disable=not progress):
                posterior = vae.encode(batch["image"].to(device, vae.dtype)).latent_dist
                if mean is None:
                    shape = (len(tiles), *posterior.mean.shape[1:])
                    chunks = (1, *posterior.mean.shape[1:])
                    mean = f.create_dataset("mean", shape=shape, dtype=np.float16, chunks=chunks)
                    std = f.create_dataset("std", shape=shape, dtype=np.float16, chunks=chunks)
                n = posterior.mean.shape[0]
                mean[row:row + n] = posterior.mean.float().cpu().numpy()
                std[row:row + n] = posterior.std.float().cpu().numpy()
                row += n
            f.create_dataset("keys", data=list(tiles.keys), dtype=STRING)
            f.attrs["vae"], f.attrs["image_size"] = vae_hash, image_size
    return out


class CachedLatents(Dataset):
    """Items ``{"latent": z ~ N(mean, std^2) (unscaled), "embedding"}``; ``dihedral`` flips / turns the
    latent (the autoencoder is convolutional, so this stands for turning the tile)."""

    def __init__(self, path: Path, embeddings: np.ndarray, dihedral: bool = False):
        self.path, self.embeddings, self.dihedral = Path(path), np.asarray(embeddings, np.float32), dihedral
        self.file = LazyH5(self.path)
        with h5py.File(self.path, "r") as f:
            self.length = len(f["keys"])

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        f = self.file()
        mean = torch.from_numpy(f["mean"][index].astype(np.float32))
        std = torch.from_numpy(f["std"][index].astype(np.float32))
        latent = mean + std * torch.randn_like(mean)
        if self.dihedral:
            if torch.rand(()) < 0.5:
                latent = latent.flip(-1)
            latent = torch.rot90(latent, int(torch.randint(4, ())), dims=(-2, -1))
        return {"latent": latent, "embedding": torch.from_numpy(self.embeddings[index])}
