"""Cohort scale: shard=I/N (or slurm) tiles / featurises a deterministic share of the slides into
out/shards/I-of-N, and merge=true joins them into what one unsharded run writes."""

import csv

import h5py
import numpy as np
import pytest

from gensis.data.tile_source import open_tiles
from gensis.models.backbone import EncoderSpec, create_backbone, save_encoder
from tests.conftest import run_cli
from tests.test_outputs import TINY_VIT


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    assert run_cli("synth", "cohort=5", f"out={root}", "width=768", "height=768", "progress=false").returncode == 0
    whole = run_cli("tile", f"slides={root / 'slides.csv'}", f"out={root / 'whole'}", "experiment=tiny")
    assert whole.returncode == 0, whole.stderr
    return root


def tiles_by_key(path):
    tiles = open_tiles(path)
    return {key: tiles[i]["image"] for i, key in enumerate(tiles.keys)}


def test_three_shards_merged_equal_one_run(cohort, tmp_path):
    out = tmp_path / "sharded"
    args = [f"slides={cohort / 'slides.csv'}", f"out={out}", "experiment=tiny"]
    seen = []
    for index in range(3):
        result = run_cli("tile", *args, f"shard={index}/3")
        assert result.returncode == 0, result.stderr
        with open(out / "shards" / f"{index}-of-3" / "manifest.csv") as handle:
            seen.append(sorted(row["slide"] for row in csv.DictReader(handle)))
    assert seen == [["case000", "case003"], ["case001", "case004"], ["case002"]]   # every 3rd, by name
    missing = tmp_path / "missing"
    assert run_cli("tile", f"slides={cohort / 'slides.csv'}", f"out={missing}", "experiment=tiny",
                   "shard=0/3").returncode == 0
    refused = run_cli("tile", f"slides={cohort / 'slides.csv'}", f"out={missing}", "merge=true")
    assert refused.returncode == 2 and "shard(s) 1/3, 2/3 missing" in refused.stderr
    merged = run_cli("tile", *args, "merge=true")
    assert merged.returncode == 0, merged.stderr
    whole, joined = tiles_by_key(cohort / "whole"), tiles_by_key(out)
    assert sorted(joined) == sorted(whole)
    for key, image in whole.items():
        np.testing.assert_array_equal(joined[key], image, err_msg=key)
    with open(out / "manifest.csv") as handle:
        assert sorted(row["slide"] for row in csv.DictReader(handle)) == [f"case{i:03d}" for i in range(5)]
    assert sorted(p.name for p in (out / "coords").glob("*.h5")) == [f"case{i:03d}.h5" for i in range(5)]


def test_slurm_array_variables_pick_the_shard_and_bad_shards_are_one_line(cohort, tmp_path):
    env = {"SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_COUNT": "2"}
    result = run_cli("tile", f"slides={cohort / 'slides.csv'}", f"out={tmp_path / 'o'}", "experiment=tiny",
                     "shard=slurm", env=env)
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "o" / "shards" / "1-of-2" / "manifest.csv") as handle:
        assert sorted(row["slide"] for row in csv.DictReader(handle)) == ["case001", "case003"]
    for shard, words in (("3/3", "0 <= I < N"), ("slurm", "SLURM_ARRAY_TASK_ID")):
        bad = run_cli("tile", f"slides={cohort / 'slides.csv'}", f"out={tmp_path / 'b'}", f"shard={shard}")
        assert bad.returncode == 2 and words in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_feature_shards_merged_equal_one_run(cohort, tmp_path):
    save_encoder(tmp_path / "encoder", create_backbone("vit_tiny_patch16_224", 16, TINY_VIT),
                 EncoderSpec(name="vit_tiny_patch16_224", kwargs=TINY_VIT, img_size=16, embed_dim=32))
    args = [f"encoder={tmp_path / 'encoder'}", f"tiles={cohort / 'whole'}", "data.workers=0",
            "trainer.accelerator=cpu", "progress=false"]
    assert run_cli("features", *args, f"out={tmp_path / 'one'}").returncode == 0
    for index in range(2):
        assert run_cli("features", *args, f"out={tmp_path / 'split'}", f"shard={index}/2").returncode == 0
    assert run_cli("features", *args, f"out={tmp_path / 'split'}", "merge=true").returncode == 0
    for index in range(5):
        name = f"case{index:03d}.h5"
        with h5py.File(tmp_path / "one" / name) as a, h5py.File(tmp_path / "split" / name) as b:
            np.testing.assert_array_equal(a["coords"][:], b["coords"][:])
            np.testing.assert_allclose(a["features"][:], b["features"][:], rtol=1e-5, atol=1e-6)
