"""Training items of Gen-DINO (METHOD.md stage 4): real tiles, their generated views, interpolations.

Item ``i`` is tile ``i`` of the tile source:

- ``image``: its DINO multi-crop. With probability ``p_gen`` the second global crop is cut
  from one of the tile's K generated views instead (a random one; the second global crop's
  augmentations without solarisation), so that the pair of global crops is (real tile,
  generated view), hand-made augmentations on both; ``generated`` says which items were
  paired so.
- with ``interpolations``: ``interp`` = three global-size views, of a random interpolated
  image and of its two source tiles, and ``alpha`` (the weight of the first source).

With ``on_device=True`` items hold uint8 (3, S, S) images instead of crops (``image``,
``generated_image``: the view or the tile again, only when ``p_gen > 0``; ``interp``) and the module cuts the crops on the
GPU with :class:`gensis.data.batch_augment.BatchMultiCrop`. The views store is opened
lazily in each DataLoader worker, never in the parent.

Same resolution: when the views are smaller than the tiles, every real tile (the sources of
interpolations too) is first resized to the views' size, so that real and generated crops
reach the network equally sharp and a pair cannot be told apart by its resolution.
"""

from __future__ import annotations

import h5py
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from gensis.config.augment import AugmentConfig, CropConfig, blur_sigma_range
from gensis.data.augment import MultiCropAugment, augmented_view, uint8_transform
from gensis.data.lazy_h5 import LazyH5
from gensis.data.tile_source import TileDataset
from gensis.errors import GensisError


class GenDINOTiles(Dataset):
    def __init__(self, tiles: TileDataset, views_path, p_gen: float, interpolations: bool, crops: CropConfig,
                 augment: AugmentConfig, mean, std, on_device: bool = False):
        if tiles.transform is not None:
            raise ValueError("GenDINOTiles needs a tile source without a transform")
        self.tiles = tiles
        self.p_gen, self.interpolations, self.on_device = p_gen, interpolations, on_device
        if on_device:
            self.to_uint8 = uint8_transform(augment.source_size)
        else:
            self.multi_crop = MultiCropAugment(crops, augment, mean, std)
            sigma = blur_sigma_range(crops.global_size)
            # a generated view's global slot: the second global crop's steps without solarisation
            self.generated_view = augmented_view(crops.global_size, crops.global_scale, augment, 0.1, 0.0, mean, std,
                                                 sigma)
            # the views of the disentanglement task: global size, blur as on local crops, no solarisation
            self.interp_view = augmented_view(crops.global_size, crops.global_scale, augment, 0.5, 0.0, mean, std,
                                              sigma)
        self.views_path = views_path
        self._store = LazyH5(views_path) if views_path else None   # none needed with both parts off
        self.real_size = None  # the views' size when smaller than the tiles: real tiles are brought to it
        if views_path and (p_gen > 0 or interpolations):
            with h5py.File(views_path, "r") as f:  # closed again: workers open their own
                size = int(f.attrs["image_size"])
            if size < max(self.tiles.load(0).shape[:2]):
                self.real_size = size

    def load_real(self, index: int) -> Image.Image:
        """Tile ``index`` as a PIL image, at the views' resolution when those are smaller."""
        image = Image.fromarray(self.tiles.load(index))
        if self.real_size is not None and max(image.size) > self.real_size:
            image = image.resize((self.real_size, self.real_size), Image.Resampling.BICUBIC)
        return image

    def __len__(self) -> int:
        return len(self.tiles)

    def _read(self, dataset, index, what: str) -> np.ndarray:
        try:
            return dataset[index]
        except OSError as err:   # a damaged chunk (checksummed stores fail here instead of giving wrong pixels)
            raise GensisError(f"{self.views_path}: {what} cannot be read ({err}); the views store is damaged: "
                              f"generate it again") from None

    def __getitem__(self, index: int) -> dict:
        real = self.load_real(index)
        generated = bool(self.p_gen > 0 and torch.rand(()) < self.p_gen)
        view = None
        if generated:
            views = self._store()["generated"]
            k = int(torch.randint(0, views.shape[1], ()))
            view = Image.fromarray(self._read(views, (index, k), f"view {k} of tile {index}"))
        item = {"key": self.tiles.keys[index], "generated": generated}
        if self.on_device:
            item["image"] = self.to_uint8(real)
            if self.p_gen > 0:
                item["generated_image"] = self.to_uint8(view if generated else real)
        else:
            crops = self.multi_crop(real)
            if generated:
                crops[1] = self.generated_view(view)
            item["image"] = crops
        if self.interpolations:
            store = self._store()
            j = int(torch.randint(0, store["interp/images"].shape[0], ()))
            first, second = (int(t) for t in store["interp/pairs"][j])
            images = [Image.fromarray(self._read(store["interp/images"], j, f"interpolated image {j}")),
                      self.load_real(first), self.load_real(second)]
            make = self.to_uint8 if self.on_device else self.interp_view
            item["interp"] = [make(image) for image in images]
            item["alpha"] = float(store["interp/alpha"][j])
        return item
