"""open_tiles: image folders (labels, groups), stores opened lazily per worker."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from gensis.data.tile_source import H5Tiles, ImageFolderTiles, open_tiles
from gensis.data.tile_store import TileStoreWriter
from gensis.errors import GensisError


def test_real_folder_with_class_subfolders_and_groups(shared_data):
    tiles = open_tiles(shared_data / "tiles" / "lc25000_lung_dev", labels=True)
    assert isinstance(tiles, ImageFolderTiles)
    assert tiles.classes == ["lung_aca", "lung_n", "lung_scc"]
    assert np.bincount(tiles.labels).tolist() == [2177, 2465, 2724]
    assert tiles.groups is not None and len(tiles.groups) == len(tiles)
    item = tiles[0]
    assert item["image"].shape == (224, 224, 3) and item["key"].startswith("lung_aca/") and item["label"] == 0
    # a group never spans two classes
    for group in np.unique(tiles.groups)[:50]:
        assert len(set(tiles.labels[tiles.groups == group])) == 1


def test_unlabelled_images_refused_when_labels_wanted(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "loose.png")
    with pytest.raises(GensisError, match="class subfolder"):
        open_tiles(tmp_path, labels=True)
    assert len(open_tiles(tmp_path)) == 1
    with pytest.raises(GensisError, match="no such file"):
        open_tiles(tmp_path / "missing")


def make_store(path, n=6):
    with TileStoreWriter(path, 16, 0.5, classes=["a", "b"]) as writer:
        images = np.stack([np.full((16, 16, 3), i * 10, np.uint8) for i in range(n)])
        writer.append(images, ["s"] * n, np.stack([np.arange(n) * 16, np.zeros(n)], 1).astype(np.int64),
                      np.arange(n) % 2)
    return path


def test_store_opens_lazily_and_works_in_dataloader_workers(tmp_path):
    tiles = open_tiles(make_store(tmp_path / "tiles.h5"), labels=True)
    assert isinstance(tiles, H5Tiles) and tiles._h5._file is None       # nothing open in the parent
    copy = pickle.loads(pickle.dumps(tiles))
    assert copy._h5._file is None
    loader = torch.utils.data.DataLoader(tiles, batch_size=3, num_workers=2)
    batches = list(loader)
    assert tiles._h5._file is None
    images = torch.cat([b["image"] for b in batches])
    assert images.shape == (6, 16, 16, 3)
    assert images[:, 0, 0, 0].tolist() == [0, 10, 20, 30, 40, 50]
    assert torch.cat([b["label"] for b in batches]).tolist() == [0, 1, 0, 1, 0, 1]
    assert batches[0]["key"][1] == "s/16_0"


def test_a_folder_holding_only_a_tile_store_opens_the_store(tmp_path):
    (tmp_path / "copy").mkdir()
    make_store(tmp_path / "copy" / "tiles.h5")
    tiles = open_tiles(tmp_path / "copy", labels=True)
    assert isinstance(tiles, H5Tiles) and len(tiles) == 6 and tiles[3]["label"] == 1


def test_transform_is_applied(tmp_path):
    tiles = open_tiles(make_store(tmp_path / "tiles.h5"), transform=lambda im: im.size)
    assert tiles[0]["image"] == (16, 16) and tiles[0]["label"] == -1
