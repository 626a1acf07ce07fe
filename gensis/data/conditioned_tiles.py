"""Tiles paired with their stage-1 embeddings: the training data of the E-LDM (METHOD.md stage 2)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from gensis.data.augment import eval_transform
from gensis.data.tile_source import TileDataset, open_tiles
from gensis.errors import GensisError

HALF = (0.5, 0.5, 0.5)


def diffusion_transform(size: int):
    """A tile as the diffusion model sees it: (3, size, size) float in [-1, 1]."""
    return eval_transform(size, HALF, HALF)


class ConditionedTiles(Dataset):
    """Items ``{"image": (3, S, S) in [-1, 1], "embedding": (D,)}``; ``dihedral`` adds random flips and
    90-degree turns of the image (the embedding stays that of the tile)."""

    def __init__(self, tiles: TileDataset, embeddings: np.ndarray, keys: list[str], dihedral: bool = False):
        if list(keys) != list(tiles.keys):
            raise GensisError(f"the embeddings ({len(keys)} keys) do not belong to these {len(tiles)} tiles; "
                              f"embed them again (gensis embed) or leave embeddings= unset")
        self.tiles, self.embeddings, self.dihedral = tiles, np.asarray(embeddings, dtype=np.float32), dihedral

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index: int) -> dict:
        image = self.tiles[index]["image"]
        if self.dihedral:
            if torch.rand(()) < 0.5:
                image = image.flip(-1)
            image = torch.rot90(image, int(torch.randint(4, ())), dims=(-2, -1))
        return {"image": image, "embedding": torch.from_numpy(self.embeddings[index])}


def open_conditioned_tiles(path: str, size: int, embeddings: np.ndarray, keys: list[str],
                           dihedral: bool = False) -> ConditionedTiles:
    return ConditionedTiles(open_tiles(path, transform=diffusion_transform(size)), embeddings, keys, dihedral)
