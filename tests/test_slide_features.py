"""gensis features: per-slide <slide>.h5 (features, coords) from every kind of tiling output, resumable per
slide, split over processes."""

import shutil

import h5py
import numpy as np
import pytest

from gensis.data.embeddings_store import read_embeddings
from gensis.models.backbone import EncoderSpec, create_backbone, save_encoder
from tests.conftest import run_cli
from tests.test_outputs import TINY_VIT


@pytest.fixture(scope="module")
def cohort(synthetic_slide, tmp_path_factory):
    """Two slides (the synthetic slide under two names) tiled into tiles.h5 and as coords only, and an
    untrained tiny encoder."""
    root = tmp_path_factory.mktemp("cohort")
    (root / "slides").mkdir()
    for name in ("a", "b"):
        shutil.copy(synthetic_slide, root / "slides" / f"{name}.svs")
    for fmt in ("h5", "coords"):
        result = run_cli("tile", f"slides={root / 'slides'}", f"out={root / fmt}", "experiment=tiny",
                         f"tile.format={fmt}")
        assert result.returncode == 0, result.stderr
    save_encoder(root / "encoder", create_backbone("vit_tiny_patch16_224", 16, TINY_VIT),
                 EncoderSpec(name="vit_tiny_patch16_224", kwargs=TINY_VIT, img_size=16, embed_dim=32))
    return root


def features(cohort, tiles, out, *extra):
    result = run_cli("features", f"encoder={cohort / 'encoder'}", f"tiles={tiles}", f"out={out}", "data.workers=0",
                     "trainer.accelerator=cpu", "progress=false", *extra)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def read(path):
    with h5py.File(path, "r") as f:
        return f["features"][:], f["coords"][:], dict(f.attrs)


def test_one_file_per_slide_with_the_tilers_coords_and_the_embed_features(cohort, tmp_path):
    features(cohort, cohort / "h5", tmp_path / "f")
    embedded = tmp_path / "e.h5"
    assert run_cli("embed", f"encoder={cohort / 'encoder'}", f"data.path={cohort / 'h5'}", f"out={embedded}",
                   "data.workers=0", "trainer.accelerator=cpu", "progress=false").returncode == 0
    all_features, keys, _ = read_embeddings(embedded)
    for slide in ("a", "b"):
        values, coords, attrs = read(tmp_path / "f" / f"{slide}.h5")
        with h5py.File(cohort / "h5" / "coords" / f"{slide}.h5") as f:
            np.testing.assert_array_equal(coords, f["coords"][:])          # the tiler's own coords, in order
        rows = [keys.index(f"{slide}/{x}_{y}") for x, y in coords]
        np.testing.assert_allclose(values, all_features[rows], rtol=1e-5, atol=1e-6)
        assert values.shape == (len(coords), 32) and attrs["mpp"] == 2.0 and attrs["tile_px"] == 32
        assert attrs["patch_size_level0"] == 128 and attrs["slide_path"].endswith(f"{slide}.svs")


def test_features_read_from_the_slides_equal_those_of_the_stored_tiles(cohort, tmp_path):
    features(cohort, cohort / "h5", tmp_path / "stored")
    features(cohort, cohort / "coords", tmp_path / "read")
    for slide in ("a", "b"):
        stored, read_back = read(tmp_path / "stored" / f"{slide}.h5"), read(tmp_path / "read" / f"{slide}.h5")
        np.testing.assert_array_equal(stored[1], read_back[1])
        np.testing.assert_allclose(stored[0], read_back[0], rtol=1e-5, atol=1e-6)


def test_resume_redoes_only_the_missing_slide_and_two_processes_agree(cohort, tmp_path):
    out = tmp_path / "f"
    features(cohort, cohort / "h5", out)
    before = read(out / "b.h5")
    stamp = (out / "a.h5").stat().st_mtime_ns
    (out / "b.h5").unlink()
    again = features(cohort, cohort / "h5", out)
    assert "1 slide(s) already have these features" in again.stdout
    assert (out / "a.h5").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(read(out / "b.h5")[0], before[0])
    features(cohort, cohort / "h5", tmp_path / "two", "trainer.devices=2")
    for slide in ("a", "b"):
        np.testing.assert_allclose(read(tmp_path / "two" / f"{slide}.h5")[0], read(out / f"{slide}.h5")[0],
                                   rtol=1e-5, atol=1e-6)
