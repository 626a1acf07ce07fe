"""No lost data: outputs never replace what they must not, one run per output, a full disk stops
the run with one line, and renamed outputs are on disk first. Fixtures made here (no ../shared)."""

import csv
import errno
import json
import os
import re
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from PIL import Image

from gensis.atomic import durable_replace
from gensis.errors import GensisError, is_disk_full
from gensis.models.backbone import EncoderSpec, create_backbone, save_encoder
from gensis.output_guard import hold_output_lock
from tests.conftest import run_cli

TINY_VIT = {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}


@pytest.fixture(scope="module")
def encoder_and_tiles(tmp_path_factory):
    """An untrained tiny ViT encoder run dir and a folder of 6 random 16 px tiles."""
    root = tmp_path_factory.mktemp("outputs")
    model = create_backbone("vit_tiny_patch16_224", 16, TINY_VIT)
    save_encoder(root / "encoder", model, EncoderSpec(name="vit_tiny_patch16_224", kwargs=TINY_VIT, img_size=16,
                                                      embed_dim=32))
    rng = np.random.default_rng(0)
    for i in range(6):
        (root / "tiles").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / "tiles" / f"t{i}.png")
    return root / "encoder", root / "tiles"


def embed(encoder, tiles, out):
    return run_cli("embed", f"encoder={encoder}", f"data.path={tiles}", f"out={out}", "data.workers=0",
                   "trainer.accelerator=cpu", "progress=false")


def test_embed_refuses_to_replace_a_file_it_did_not_write(encoder_and_tiles, tmp_path):
    encoder, tiles = encoder_and_tiles
    notes = tmp_path / "notes.txt"
    notes.write_text("a week of notes")
    result = embed(encoder, tiles, notes)
    assert result.returncode == 2 and "not a embeddings file written by gensis" in result.stderr.replace("an emb", "a emb")
    assert len(result.stderr.strip().splitlines()) == 1 and notes.read_text() == "a week of notes"
    store = tmp_path / "tiles.h5"                                 # another command's output (a tile store)
    with h5py.File(store, "w") as f:
        f.create_dataset("images", data=np.zeros((2, 4, 4, 3), np.uint8))
    before = store.read_bytes()
    assert embed(encoder, tiles, store).returncode == 2 and store.read_bytes() == before
    folder = tmp_path / "folder"
    folder.mkdir()
    result = embed(encoder, tiles, folder)
    assert result.returncode == 2 and "is a folder" in result.stderr


def test_embed_may_replace_its_own_earlier_output(encoder_and_tiles, tmp_path):
    encoder, tiles = encoder_and_tiles
    out = tmp_path / "embeddings.h5"
    assert embed(encoder, tiles, out).returncode == 0
    extra = tmp_path / "more_tiles"
    extra.mkdir()
    for name in sorted(os.listdir(tiles))[:3]:
        (extra / name).write_bytes((tiles / name).read_bytes())
    assert embed(encoder, extra, out).returncode == 0              # other tiles: its own file is redone
    with h5py.File(out) as f:
        assert f["embeddings"].shape == (3, 32)


def test_generate_refuses_to_replace_a_file_it_did_not_write(encoder_and_tiles, tmp_path):
    encoder, tiles = encoder_and_tiles
    notes = tmp_path / "views.h5"
    notes.write_text("not a views store")
    result = run_cli("generate", f"diffusion={tmp_path}", f"encoder={encoder}", f"data.path={tiles}", f"out={notes}",
                     "progress=false")
    assert result.returncode == 2 and "not a views store written by gensis" in result.stderr, result.stderr[-500:]
    assert notes.read_text() == "not a views store"


def test_a_second_run_into_the_same_out_stops_with_one_line(synthetic_slide, tmp_path):
    out = tmp_path / "tiling"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from gensis.output_guard import hold_output_lock
        hold_output_lock({str(out)!r})
        print("held", flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(GensisError, match=f"another gensis run \\(pid {holder.pid}\\)"):
            hold_output_lock(out)
        stale = out / ".tiles.h5.tmp-1"                              # the first run's temporary
        stale.write_text("in progress")
        result = run_cli("tile", f"slides={synthetic_slide}", f"out={out}", "tile.mpp=1.0", "tile.size=64")
        assert result.returncode == 2 and "being written by another gensis run" in result.stderr
        assert stale.read_text() == "in progress"
    finally:
        holder.kill()
        holder.wait()
    hold_output_lock(out)                                         # a killed run's lock goes with it


def test_a_full_output_disk_stops_tiling_without_blaming_the_slide(synthetic_slide, tmp_path, monkeypatch):
    from gensis.config.tile import TileConfig, TileParams
    from gensis.slides import tiling

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tiling, "write_qc_image", full)
    cfg = TileConfig(slides=str(synthetic_slide), out=str(tmp_path / "out"), tile=TileParams(mpp=1.0, size=64),
                     workers=0, progress=False)
    with pytest.raises(GensisError, match="output disk is full"):
        tiling.run_tiling(cfg, log=lambda *a: None)
    manifest = tmp_path / "out" / "manifest.csv"
    assert not manifest.exists() or "failed" not in manifest.read_text()
    assert not (tmp_path / "out" / "tiles.h5").exists()


def test_disk_full_is_recognised_in_h5py_style_messages():
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError("Can't write data (file write failed: errno = 28, error message = 'No space left "
                                "on device')"))
    assert not is_disk_full(OSError(errno.ENOENT, "No such file or directory"))


def test_durable_replace_flushes_the_file_and_its_folder_before_and_after(tmp_path, monkeypatch):
    flushed = []
    real = os.fsync

    def spy(fd):
        flushed.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    src, dst = tmp_path / ".out.tmp-1", tmp_path / "out"
    src.write_text("data")
    durable_replace(src, dst)
    assert dst.read_text() == "data" and flushed[0] == str(src) and flushed[-1] == str(tmp_path)


def test_resume_refuses_tiles_other_than_the_runs_own(tmp_path):
    """The run dir records its tiles' count and key hash (data.json); resume with replaced tiles is refused."""
    rng = np.random.default_rng(0)
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    for i in range(16):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tiles / f"a{i}.png")
    out = tmp_path / "run"
    args = ("stage1", f"data.path={tiles}", f"out={out}", "experiment=tiny", "optim.epochs=1", "data.workers=0",
            "progress=false")
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    assert json.loads((out / "data.json").read_text())["n_tiles"] == 16
    rows = list(csv.DictReader(open(out / "metrics.csv")))       # the learning diagnostics, once per epoch
    epoch_rows = [r for r in rows if r.get("diag/teacher_entropy")]
    assert len(epoch_rows) == 1 and epoch_rows[0]["diag/teacher_student_kl"] and epoch_rows[0]["diag/view_agreement"]
    for i in range(16):                                           # every tile replaced by another
        (tiles / f"a{i}.png").rename(tiles / f"b{i}.png")
    result = run_cli(*args[:-3], "optim.epochs=2", "data.workers=0", "progress=false", "resume=true")
    assert result.returncode == 2 and "was trained on 16 tiles" in result.stderr, result.stderr[-1000:]
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_unexpected_error_is_one_line_and_a_worker_error_keeps_its_own_message(monkeypatch, capsys):
    from gensis import cli

    def broken(cfg):
        raise ValueError("norm_groups must divide channels")

    monkeypatch.setattr(cli.Command, "run", lambda self, cfg: broken(cfg))
    assert cli.main(["synth", f"out={os.devnull}"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ValueError: norm_groups must divide channels" in err and "GENSIS_DEBUG" in err
    monkeypatch.setenv("GENSIS_DEBUG", "1")
    with pytest.raises(ValueError):
        cli.main(["synth", f"out={os.devnull}"])
    wrapped = GensisError("Caught GensisError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                          "last):\n  File \"x.py\", line 1, in f\ngensis.errors.GensisError: tiles.h5: tile 7 is "
                          "damaged; tile again")
    assert cli._one_line(wrapped) == "tiles.h5: tile 7 is damaged; tile again"


def test_tile_images_keep_their_brightness_and_colours(tmp_path):
    """16-bit grayscale is scaled by its bit depth, not clipped to white; transparency lies on white glass."""
    from gensis.data.tile_source import open_tiles

    folder = tmp_path / "tiles"
    folder.mkdir()
    Image.fromarray(np.full((4, 4), 32896, np.uint16)).save(folder / "gray16.png")   # about half of 65535
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[:, :2, 3], rgba[:, 2:, 3] = 200, 255, 0                       # red left, transparent right
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    tiles = open_tiles(folder)
    gray = tiles[tiles.keys.index("gray16.png")]["image"]
    assert gray.dtype == np.uint8 and np.all(gray == 128)
    composite = tiles[tiles.keys.index("rgba.png")]["image"]
    assert composite[0, 0].tolist() == [200, 0, 0] and composite[0, 3].tolist() == [255, 255, 255]


def test_label_maps_of_slides_with_dots_in_their_names(tmp_path):
    from gensis.slides.labels import label_map_paths

    assert label_map_paths(tmp_path / "case.1.svs") == (tmp_path / "case.1.labels.png", tmp_path / "case.1.labels.json")
    assert label_map_paths(tmp_path / "b.ome.tiff")[0] == tmp_path / "b.labels.png"


def test_bad_trainer_devices_and_norm_groups_are_one_line(tmp_path):
    for arg in ("trainer.devices=abc", "unet.norm_groups=0"):
        result = run_cli("stage2", f"data.path={tmp_path}", f"encoder={tmp_path}", f"out={tmp_path / 'x'}", arg)
        key = arg.split("=")[0]
        assert result.returncode == 2 and key in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_all_devices_and_label_maps_under_their_earlier_name(tmp_path):
    from gensis.config.train import TrainerConfig
    from gensis.slides.labels import load_label_map

    assert TrainerConfig(devices="-1").devices == "-1" and TrainerConfig(devices="[0,1]").devices == "[0,1]"
    with pytest.raises(ValueError, match="trainer.devices"):
        TrainerConfig(devices="[]")
    Image.fromarray(np.ones((4, 4), np.uint8)).save(tmp_path / "TCGA-01.labels.png")   # named before the first dot
    (tmp_path / "TCGA-01.labels.json").write_text(json.dumps({"classes": ["tumour"]}))
    assert load_label_map(tmp_path / "TCGA-01.5e2a.svs").classes == ("tumour",)


@pytest.fixture
def tiled(synthetic_slide, tmp_path):
    """A tiling output (tiles.h5) of the synthetic slide at experiment=tiny."""
    result = run_cli("tile", f"slides={synthetic_slide}", f"out={tmp_path / 'tiles'}", "experiment=tiny",
                     "progress=false")
    assert result.returncode == 0, result.stderr
    return tmp_path / "tiles"


def test_a_damaged_chunk_of_a_tile_store_is_one_line_naming_the_tile(tiled, tmp_path):
    store = tiled / "tiles.h5"
    with h5py.File(store, "r") as f:
        images = f["images"]
        rows_per_chunk = images.chunks[0]
        info = images.id.get_chunk_info(1)       # the second chunk: tiles rows_per_chunk .. 2 * rows_per_chunk - 1
        keys = [f"{s.decode()}/{x}_{y}" for s, (x, y) in zip(f["slide"][:], f["coords"][:])]
    with open(store, "r+b") as handle:
        handle.seek(info.byte_offset)
        handle.write(bytes(range(256)) * (info.size // 256) + b"\x00" * (info.size % 256))
    result = run_cli("stage1", f"data.path={store}", f"out={tmp_path / 'run'}", "experiment=tiny", "data.workers=0")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    found = re.search(rf"{re.escape(str(store))}: tile (\d+) \((.+?)\) cannot be read", message)
    assert found and "tile the slides again" in message, message
    index = int(found.group(1))
    assert rows_per_chunk <= index < 2 * rows_per_chunk                 # a tile of the damaged chunk, named
    assert found.group(2) == keys[index]


def test_a_damaged_tile_store_in_a_tiling_folder_is_kept_aside_and_tiled_again(synthetic_slide, tiled):
    with h5py.File(tiled / "tiles.h5", "r") as f:
        images, keys = f["images"][:], f["coords"][:]
    size = (tiled / "tiles.h5").stat().st_size
    with open(tiled / "tiles.h5", "r+b") as handle:
        handle.truncate(size // 3)
    result = run_cli("tile", f"slides={synthetic_slide}", f"out={tiled}", "experiment=tiny", "progress=false")
    assert result.returncode == 0, result.stderr
    assert "tiles.h5 is damaged" in result.stdout
    aside = list(tiled.glob("tiles.h5.damaged-*"))
    assert len(aside) == 1 and aside[0].stat().st_size == size // 3      # kept as it was, not deleted
    with h5py.File(tiled / "tiles.h5", "r") as f:
        np.testing.assert_array_equal(f["coords"][:], keys)
        np.testing.assert_array_equal(f["images"][:], images)


@pytest.mark.parametrize("rows, words", [
    ("path,mpp\nslide.svs,0.5\n,0.5\n", "line 3: the path is empty"),
    ("path,mpp\nslide.svs,0.5,extra\n", "line 2: more fields than the 2 columns (path, mpp)"),
])
def test_a_bad_slides_csv_row_is_one_line_naming_the_line(synthetic_slide, tmp_path, rows, words):
    os.symlink(synthetic_slide, tmp_path / "slide.svs")
    (tmp_path / "slides.csv").write_text(rows)
    result = run_cli("tile", f"slides={tmp_path / 'slides.csv'}", f"out={tmp_path / 'out'}", "experiment=tiny")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"gensis tile: error: {tmp_path / 'slides.csv'}, {words}")
    assert not (tmp_path / "out").exists()


def test_a_damaged_embeddings_file_is_one_line_naming_it(encoder_and_tiles, tmp_path):
    encoder, tiles = encoder_and_tiles
    good = tmp_path / "e.h5"
    assert embed(encoder, tiles, good).returncode == 0
    damaged = tmp_path / "damaged.h5"
    damaged.write_bytes(good.read_bytes()[:2000])
    result = run_cli("stage2", f"data.path={tiles}", f"encoder={encoder}", f"embeddings={damaged}",
                     f"out={tmp_path / 's2'}", "experiment=tiny", "unet.cross_attention_dim=32")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"gensis stage2: error: {damaged}: not a readable embeddings file")
