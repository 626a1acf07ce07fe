"""``gensis tile`` on real and synthetic slides: coverage, failures, resume, atomicity, formats."""

import csv
import shutil

import h5py
import numpy as np
import pytest

from gensis.config.tile import TileConfig, TileParams
from gensis.data.tile_source import open_tiles
from gensis.errors import GensisError
from gensis.slides import tiling
from gensis.slides.synthetic import SyntheticSlide, SyntheticSlideSpec
from gensis.slides.tiling import run_tiling
from gensis.slides.reader import open_slide
from tests.conftest import run_cli


def manifest(out):
    with open(out / "manifest.csv", newline="") as handle:
        return {row["slide"]: row for row in csv.DictReader(handle)}


def tile_cfg(slides, out, **tile):
    params = dict(mpp=0.5, size=224, format="h5")
    params.update(tile)
    return TileConfig(slides=str(slides), out=str(out), tile=TileParams(**params), workers=0, progress=False)


def test_cmu_tiles_cover_its_tissue(shared_data, tmp_path):
    slide_path = shared_data / "slides" / "cmu_small_region.svs"
    summary = run_tiling(tile_cfg(slide_path, tmp_path))
    assert summary.ok == ["cmu_small_region"] and not summary.failed
    with h5py.File(tmp_path / "coords" / "cmu_small_region.h5") as f:
        coords = f["coords"][:]
        attrs = dict(f["coords"].attrs)
    assert attrs["patch_size_level0"] == 224  # 0.499 um/px slide, 0.5 target: one level-0 tile is 224 px
    assert attrs["target_mpp"] == 0.5 and attrs["read_level"] == 0
    # coords are level-0 pixels inside the slide
    assert coords.min() >= 0
    assert (coords[:, 0] + 224).max() <= 2220 and (coords[:, 1] + 224).max() <= 2967
    # which tiles are kept is checked against a known tissue area on the synthetic slide (below)
    assert (tmp_path / "qc" / "cmu_small_region.png").stat().st_size > 1000
    rows = manifest(tmp_path)
    assert rows["cmu_small_region"]["status"] == "ok"
    assert int(rows["cmu_small_region"]["n_tiles"]) == len(coords)


def test_kept_tiles_are_those_the_synthetic_slides_known_tissue_covers_by_half(synthetic_slide, tmp_path):
    """The synthetic slide's tissue is known everywhere (``labels_at``): a tile is kept when at least half of it
    (tile.min_tissue 0.5) is tissue, measured here on an 8 x 8 grid of points in each tile. Only tiles between
    30% and 70% tissue may go either way (the mask is drawn at lower resolution and smoothed)."""
    run_tiling(tile_cfg(synthetic_slide, tmp_path, mpp=1.0, size=64, format="coords"))
    with h5py.File(tmp_path / "coords" / "synthetic.h5") as f:
        kept = {tuple(int(v) for v in c) for c in f["coords"][:]}
    truth = SyntheticSlide(SyntheticSlideSpec(width=1024, height=1024))
    offsets = np.arange(8) * 16 + 8.0                             # 64 px at 1 um/px = 128 level-0 px per tile
    tissue = {}
    for y in range(0, 1024 - 127, 128):
        for x in range(0, 1024 - 127, 128):
            grid_x, grid_y = np.meshgrid(x + offsets, y + offsets)
            tissue[(x, y)] = float((truth.labels_at(grid_x, grid_y) >= 0).mean())
    assert kept <= set(tissue)                                       # on the grid
    clear = {cell for cell, share in tissue.items() if not 0.3 <= share <= 0.7}
    assert {c for c in clear if tissue[c] >= 0.5} == kept & clear
    assert abs(len(kept) - sum(share >= 0.5 for share in tissue.values())) <= 2


def test_bad_slides_fail_with_reasons_and_good_ones_succeed(shared_data, tmp_path):
    slides = tmp_path / "slides"
    slides.mkdir()
    for name in ("cmu_small_region.svs", "small.svs", "bad/unreadable.svs", "bad/unopenable.tiff"):
        shutil.copy(shared_data / "slides" / name, slides / name.split("/")[-1])
    result = run_cli("tile", f"slides={slides}", f"out={tmp_path / 'out'}", "workers=2", "progress=false")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    rows = manifest(tmp_path / "out")
    assert rows["cmu_small_region"]["status"] == "ok"
    assert rows["small"]["status"] == "skipped" and rows["small"]["n_tiles"] == "0" and "smaller" in rows["small"]["error"]
    assert rows["unreadable"]["status"] == "failed" and "unreadable.svs" in rows["unreadable"]["error"]
    assert "reading pixels failed" in rows["unreadable"]["error"]
    assert rows["unopenable"]["status"] == "failed" and "unopenable.tiff" in rows["unopenable"]["error"]
    # skip_errors: same failures recorded, exit 0, and the good slide is not redone
    again = run_cli("tile", f"slides={slides}", f"out={tmp_path / 'out'}", "workers=2", "progress=false",
                    "skip_errors=true")
    assert again.returncode == 0, again.stderr
    assert "2 slide(s) failed" in again.stdout and "already done" in again.stdout
    assert manifest(tmp_path / "out")["unreadable"]["status"] == "failed"


def test_unknown_mpp_is_an_error_unless_given(shared_data, tmp_path):
    boxes = shared_data / "slides" / "boxes.tiff"
    summary = run_tiling(tile_cfg(boxes, tmp_path / "a", size=32))
    assert "mpp" in summary.failed["boxes"] and "mpp_override" in summary.failed["boxes"]
    table = tmp_path / "slides.csv"
    table.write_text(f"path,mpp\n{boxes},0.5\n")
    summary = run_tiling(tile_cfg(table, tmp_path / "b", size=32, min_tissue=0.0))
    assert summary.ok == ["boxes"]
    with h5py.File(tmp_path / "b" / "coords" / "boxes.h5") as f:
        assert f["coords"].attrs["slide_mpp"] == 0.5
        assert len(f["coords"]) == (300 // 32) * (250 // 32)


def test_resume_does_no_work_and_redoes_failures(synthetic_slide, tmp_path, monkeypatch):
    cfg = tile_cfg(synthetic_slide, tmp_path, mpp=1.0, size=64)
    first = run_tiling(cfg)
    assert first.n_tiles > 0
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file() and p.name != "manifest.csv"}
    calls = []
    monkeypatch.setattr(tiling, "plan_slide", lambda *a: calls.append(a))
    second = run_tiling(cfg)
    assert second.already_done == ["synthetic"] and second.n_tiles == 0 and not calls
    assert mtimes == {p: p.stat().st_mtime_ns for p in mtimes}


def test_changed_settings_in_same_out_are_refused(synthetic_slide, tmp_path):
    run_tiling(tile_cfg(synthetic_slide, tmp_path, mpp=1.0, size=64))
    with pytest.raises(GensisError, match=r"made with other settings \(size\)"):
        run_tiling(tile_cfg(synthetic_slide, tmp_path, mpp=1.0, size=32))


def test_killed_run_leaves_nothing_half_written_and_resumes(synthetic_slide, tmp_path, monkeypatch):
    cfg = tile_cfg(synthetic_slide, tmp_path, mpp=1.0, size=64)
    original = tiling.write_coords

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tiling, "write_coords", crash)
    with pytest.raises(KeyboardInterrupt):
        run_tiling(cfg)
    assert not (tmp_path / "tiles.h5").exists()
    assert not list((tmp_path / "coords").glob("*.h5"))
    monkeypatch.setattr(tiling, "write_coords", original)
    summary = run_tiling(cfg)
    assert summary.ok == ["synthetic"]
    leftovers = [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]
    assert not leftovers
    assert len(open_tiles(tmp_path)) == summary.n_tiles


@pytest.mark.parametrize("fmt", ["jpg", "png", "coords"])
def test_every_format_round_trips_through_the_tile_source(synthetic_slide, tmp_path, fmt):
    reference = tmp_path / "h5"
    run_tiling(tile_cfg(synthetic_slide, reference, mpp=1.0, size=64))
    store = open_tiles(reference, labels=True)
    run_tiling(tile_cfg(synthetic_slide, tmp_path / fmt, mpp=1.0, size=64, format=fmt))
    tiles = open_tiles(tmp_path / fmt, labels=True)
    assert tiles.keys == store.keys
    np.testing.assert_array_equal(tiles.labels, store.labels)
    for index in (0, len(store) // 2, len(store) - 1):
        a, b = store[index]["image"].astype(int), tiles[index]["image"].astype(int)
        assert a.shape == b.shape == (64, 64, 3)
        if fmt == "jpg":
            assert np.abs(a - b).mean() < 4
        else:
            np.testing.assert_array_equal(a, b)


def test_synthetic_labels_come_back_with_tiles(synthetic_slide, tmp_path):
    summary = run_tiling(tile_cfg(synthetic_slide, tmp_path, mpp=1.0, size=64))
    tiles = open_tiles(tmp_path / "tiles.h5", labels=True)
    assert len(tiles) == summary.n_tiles > 20
    assert tiles.classes == ["nuclei", "stroma", "fat", "mucus"]
    assert set(tiles.labels) == {0, 1, 2, 3}
    truth = SyntheticSlide(SyntheticSlideSpec(width=1024, height=1024))
    with h5py.File(tmp_path / "tiles.h5") as f:
        centres = f["coords"][:] + 64  # 64 px at 1.0 um/px is 128 level-0 px on a 0.5 um/px slide
    expected = truth.labels_at(centres[:, 0].astype(float), centres[:, 1].astype(float))
    assert (expected == tiles.labels).mean() > 0.9  # centre label vs majority label: only border tiles differ


def test_read_level_and_resize_for_any_target(synthetic_slide, tmp_path):
    # 0.5 um/px slide with levels 1x and 4x: 2.0 um/px reads level 1 as is, 1.3 um/px reads level 0 and resizes
    run_tiling(tile_cfg(synthetic_slide, tmp_path / "a", mpp=2.0, size=32))
    run_tiling(tile_cfg(synthetic_slide, tmp_path / "b", mpp=1.3, size=32))
    with h5py.File(tmp_path / "a" / "coords" / "synthetic.h5") as f:
        assert f["coords"].attrs["read_level"] == 1 and f["coords"].attrs["patch_size_level0"] == 128
    with h5py.File(tmp_path / "b" / "coords" / "synthetic.h5") as f:
        assert f["coords"].attrs["read_level"] == 0 and f["coords"].attrs["patch_size_level0"] == 83
    assert open_tiles(tmp_path / "b")[0]["image"].shape == (32, 32, 3)


def test_parallel_workers_give_the_same_store_as_one_process(synthetic_slide, tmp_path):
    serial = tile_cfg(synthetic_slide, tmp_path / "serial", mpp=1.0, size=64)
    run_tiling(serial)
    parallel = TileConfig(slides=serial.slides, out=str(tmp_path / "parallel"), tile=serial.tile, workers=2,
                          progress=False)
    run_tiling(parallel)
    with h5py.File(tmp_path / "serial" / "tiles.h5") as a, h5py.File(tmp_path / "parallel" / "tiles.h5") as b:
        np.testing.assert_array_equal(a["coords"][:], b["coords"][:])
        np.testing.assert_array_equal(a["images"][:], b["images"][:])


def test_twelve_bit_copy_tiles_like_the_eight_bit_slide_and_fluorescence_is_skipped(synthetic_slide, tmp_path):
    import tifffile

    pixels = open_slide(synthetic_slide).read_region(0, 0, 0, 1024, 1024)
    slides = tmp_path / "slides"
    slides.mkdir()
    eight = dict(photometric="rgb", tile=(256, 256), resolution=(20000, 20000), resolutionunit="CENTIMETER")
    tifffile.imwrite(slides / "eight.tif", pixels, **eight)
    twelve = np.round(pixels.astype(np.float64) * 4095 / 255).astype(np.uint16)  # 12-bit data in 16-bit samples
    tifffile.imwrite(slides / "twelve.tif", twelve, **eight)
    channels = np.random.default_rng(0).integers(0, 255, (5, 1024, 1024), np.uint8)
    tifffile.imwrite(slides / "vectra.qptiff", channels, photometric="minisblack", tile=(256, 256))
    summary = run_tiling(tile_cfg(slides, tmp_path / "out", mpp=1.0, size=64, format="png"))
    assert sorted(summary.ok) == ["eight", "twelve"] and not summary.failed
    assert list(summary.skipped) == ["vectra"] and "5 gray channels" in summary.skipped["vectra"]
    rows = manifest(tmp_path / "out")
    assert rows["vectra"]["status"] == "skipped" and "brightfield" in rows["vectra"]["error"]
    assert int(rows["twelve"]["n_tiles"]) == int(rows["eight"]["n_tiles"]) > 20
    tiles = open_tiles(tmp_path / "out")
    by_key = {key: tiles[i]["image"].astype(int) for i, key in enumerate(tiles.keys)}
    pairs = [(k, k.replace("eight", "twelve", 1)) for k in by_key if k.startswith("eight")]
    assert pairs and all(np.abs(by_key[a] - by_key[b]).max() <= 1 for a, b in pairs)
