"""Training items of Gen-DINO (METHOD.md stage 4): real tiles, their generated views, interpolations.

Item ``i`` is tile ``i`` of the tile source:

- ``image``: its DINO multi-crop. With probability ``p_gen`` the second global crop is cut
  from one of the tile's K generated views instead (a random one), so that the pair of
  global crops is (real tile, generated view), hand-made augmentations on both;
  ``generated`` says which items were paired so.
- with ``interpolations``: ``interp`` = three global-size views, of a random interpolated
  image and of its two source tiles, and ``alpha`` (the weight of the first source).

With ``on_device=True`` items hold uint8 (3, S, S) images instead of crops (``image``,
``generated_image``: the view or the tile again, only when ``p_gen > 0``; ``interp``) and the module cuts the crops on the
GPU with :class:`gensis.data.batch_augment.BatchMultiCrop`. The views store is opened
lazily in each DataLoader worker, never in the parent.
"""

from __future__ import annotations

import torch
from PIL import Image
from torch.utils.data import Dataset

from gensis.config.augment import AugmentConfig, CropConfig
from gensis.data.augment import MultiCropAugment, augmented_view, uint8_transform
from gensis.data.lazy_h5 import LazyH5
from gensis.data.tile_source import TileDataset


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
            # the views of the disentanglement task: global size, blur as on local crops, no solarisation
            self.interp_view = augmented_view(crops.global_size, crops.global_scale, augment, 0.5, 0.0, mean, std)
        self._store = LazyH5(views_path) if views_path else None   # none needed with both parts off

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index: int) -> dict:
        real = Image.fromarray(self.tiles.load(index))
        generated = bool(self.p_gen > 0 and torch.rand(()) < self.p_gen)
        view = None
        if generated:
            views = self._store()["generated"]
            view = Image.fromarray(views[index, int(torch.randint(0, views.shape[1], ()))])
        item = {"key": self.tiles.keys[index], "generated": generated}
        if self.on_device:
            item["image"] = self.to_uint8(real)
            if self.p_gen > 0:
                item["generated_image"] = self.to_uint8(view if generated else real)
        else:
            crops = self.multi_crop(real)
            if generated:
                crops[1] = self.multi_crop.global_views[1](view)
            item["image"] = crops
        if self.interpolations:
            store = self._store()
            j = int(torch.randint(0, store["interp/images"].shape[0], ()))
            first, second = (int(t) for t in store["interp/pairs"][j])
            images = [Image.fromarray(store["interp/images"][j]),
                      Image.fromarray(self.tiles.load(first)), Image.fromarray(self.tiles.load(second))]
            make = self.to_uint8 if self.on_device else self.interp_view
            item["interp"] = [make(image) for image in images]
            item["alpha"] = float(store["interp/alpha"][j])
        return item
