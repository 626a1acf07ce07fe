"""Training items of Gen-DINO (METHOD.md stage 4): real tiles, their generated views, interpolations.

Item ``i`` is tile ``i`` of the tile source:

- ``image``: its DINO multi-crop. With probability ``p_gen`` the second global crop is cut
  from one of the tile's K generated views instead (a random one; the second global crop's
  augmentations without solarisation), so that the pair of global crops is (real tile,
  generated view), hand-made augmentations on both; ``generated`` says which items were
  paired so.
- with ``interpolations``: ``interp`` = three global-size views, of a random interpolated
  image and of its two source tiles, and ``alpha`` (the weight of the first source). With
  ``interp_target="self"`` (a control) the two "sources" are two more views of the
  interpolated image itself: the same images and network compute (no source tiles are
  read), the pair left out of the target; alpha still weighs the two views. With
  ``interp_per_item`` n > 1, n interpolated images, each with its own pair: each of the three
  is an (n, 3, S, S) stack and ``alpha`` has n values (the module flattens them into one batch:
  gensis/training/generated_views.py).

With ``on_device=True`` items hold uint8 (3, S, S) images instead of crops (``image``,
``generated_image``: the view or the tile again, only when ``p_gen > 0``; ``interp``) and the module cuts the crops on the
GPU with :class:`gensis.data.batch_augment.BatchMultiCrop`. The views store is opened
lazily in each DataLoader worker, never in the parent.

Same resolution: when the views are smaller than the tiles, every real tile (the sources of
interpolations too) is first resized to the views' size, so that real and generated crops
reach the network equally sharp and a pair cannot be told apart by its resolution.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from gensis.config.augment import AugmentConfig, CropConfig, blur_sigma_range
from gensis.config.stage3 import DISENTANGLE_TARGETS
from gensis.data.augment import MultiCropAugment, augmented_view, uint8_transform
from gensis.data.lazy_h5 import LazyH5
from gensis.data.tile_source import TileDataset
from gensis.errors import GensisError


class GenDINOTiles(Dataset):
    def __init__(self, tiles: TileDataset, views_path, p_gen: float, interpolations: bool, crops: CropConfig,
                 augment: AugmentConfig, mean, std, on_device: bool = False, curriculum: str = "none",
                 interp_target: str = "sources", interp_per_item: int = 1):
        if tiles.transform is not None:
            raise ValueError("GenDINOTiles needs a tile source without a transform")
        self.tiles = tiles
        self.p_gen, self.interpolations, self.on_device = p_gen, interpolations, on_device
        if interp_target not in DISENTANGLE_TARGETS:
            raise ValueError(f"interp_target must be one of {'|'.join(DISENTANGLE_TARGETS)}, got {interp_target!r}")
        self.interp_target = interp_target
        if interp_per_item < 1:
            raise ValueError(f"interp_per_item must be >= 1, got {interp_per_item}")
        self.interp_per_item = interp_per_item
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
        self.curriculum = curriculum
        self.view_levels: list[int] = []   # a store drawn at several noise levels: the level of each group
        # where the curriculum stands (0 .. 1), shared with the loader's worker processes
        self.progress = torch.zeros(1, dtype=torch.float64).share_memory_()
        if views_path and (p_gen > 0 or interpolations):
            with h5py.File(views_path, "r") as f:  # closed again: workers open their own
                size = int(f.attrs["image_size"])
                plan = json.loads(f.attrs.get("plan", "{}") or "{}")
                self.view_levels = [int(v) for v in plan.get("noise_levels", [])]
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

    def set_progress(self, progress: float) -> None:
        """Where the curriculum stands, 0 (first epoch) to 1 (last): every worker reads it."""
        self.progress[0] = float(progress)

    def draw_view(self, n_slots: int) -> tuple[bool, int, int]:
        """(generated?, view slot, its noise level; -1 for a real crop) under the curriculum: a store drawn at
        several levels gives the level of round(progress * (L - 1)), easy to hard; one level: p_gen rises with
        progress. Without a curriculum, any view with probability p_gen."""
        t = float(self.progress[0]) if self.curriculum != "none" else 1.0
        several = len(self.view_levels) > 1
        p = self.p_gen if several or self.curriculum == "none" else self.p_gen * t
        if not (p > 0 and torch.rand(()) < p):
            return False, -1, -1
        if not several:
            slot = int(torch.randint(0, n_slots, ()))
            return True, slot, self.view_levels[0] if self.view_levels else 0
        per_level = n_slots // len(self.view_levels)
        group = (int(round(t * (len(self.view_levels) - 1))) if self.curriculum != "none"
                 else int(torch.randint(0, len(self.view_levels), ())))
        return True, group * per_level + int(torch.randint(0, per_level, ())), self.view_levels[group]

    def draw_interpolation(self) -> tuple[list, float]:
        """A random interpolated image and its two sources (``interp_target``), each with its own
        augmentation, and alpha."""
        store = self._store()
        j = int(torch.randint(0, store["interp/images"].shape[0], ()))
        interpolated = Image.fromarray(self._read(store["interp/images"], j, f"interpolated image {j}"))
        if self.interp_target == "self":
            images = [interpolated] * 3
        else:
            first, second = (int(t) for t in store["interp/pairs"][j])
            images = [interpolated, self.load_real(first), self.load_real(second)]
        make = self.to_uint8 if self.on_device else self.interp_view
        return [make(image) for image in images], float(store["interp/alpha"][j])

    def __getitem__(self, index: int) -> dict:
        real = self.load_real(index)
        view, level = None, -1
        generated = False
        if self.p_gen > 0:
            views = self._store()["generated"]
            generated, k, level = self.draw_view(views.shape[1])
            if generated:
                view = Image.fromarray(self._read(views, (index, k), f"view {k} of tile {index}"))
        item = {"key": self.tiles.keys[index], "generated": generated, "view_level": level}
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
            drawn = [self.draw_interpolation() for _ in range(self.interp_per_item)]
            if self.interp_per_item == 1:
                item["interp"], item["alpha"] = drawn[0]
            else:   # each of the three a stack of n, alpha n values
                item["interp"] = [torch.stack(images) for images in zip(*(views for views, _ in drawn))]
                item["alpha"] = torch.tensor([alpha for _, alpha in drawn], dtype=torch.float32)
        return item
