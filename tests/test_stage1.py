"""stage1 end to end at experiment=tiny on labeled tiles: checkpoint, exact resume, DDP, embed, eval.

The labeled tiles are real lung tiles, or the synthetic slide's textures where ../shared is absent.
"""

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from gensis.data.embeddings_store import EmbeddingsWriter, partial_path, read_embeddings
from gensis.data.tile_source import open_tiles
from gensis.evaluation.eval_run import evaluate_features
from gensis.evaluation.split import train_test_split
from gensis.models.backbone import load_encoder
from tests.conftest import run_cli, run_saving_each_ranks_teacher


@pytest.fixture(scope="module")
def stage1_run(labeled_tiles, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "s1"
    result = run_cli("stage1", f"data.path={labeled_tiles}", f"out={out}", "experiment=tiny", "optim.epochs=1",
                     f"data.val={labeled_tiles}")
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def steps_in(ckpt):
    return torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]


def test_stage1_writes_the_run_dir(stage1_run):
    for name in ("config.yaml", "checkpoints/last.ckpt", "encoder.safetensors", "encoder.json", "metrics.csv",
                 "loss.png"):
        assert (stage1_run / name).is_file(), name
    info = json.loads((stage1_run / "encoder.json").read_text())
    assert info["name"] == "vit_tiny_patch16_224" and info["embed_dim"] == 64 and info["img_size"] == 32
    model, spec = load_encoder(stage1_run)                     # rebuilt without any checkpoint
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 64)
    rows = list(csv.DictReader(open(stage1_run / "metrics.csv")))
    assert any(r.get("val/knn_balanced_accuracy") for r in rows)
    assert steps_in(stage1_run / "checkpoints" / "last.ckpt") == 36 // 8


def test_resume_continues_from_the_checkpoint(stage1_run, tmp_path):
    out = tmp_path / "s1"
    shutil.copytree(stage1_run, out)
    config = out / "config.yaml"
    data_path = [line.split(": ", 1)[1] for line in config.read_text().splitlines() if line.startswith("  path:")][0]
    refused = run_cli("stage1", f"data.path={data_path}", f"out={out}", "experiment=tiny", "optim.epochs=2")
    assert refused.returncode == 2 and "resume=true" in refused.stderr
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    center_before = state["state_dict"]["loss.center"]
    assert center_before.abs().sum() > 0                     # the centre is part of the checkpoint
    other = run_cli("stage1", f"data.path={data_path}", f"out={out}", "experiment=tiny", "optim.epochs=2",
                    "optim.lr=0.1", "resume=true")              # a resume may not change the optimisation
    assert other.returncode == 2 and "optim.lr: 0.0005 -> 0.1" in other.stderr, other.stderr[-2000:]
    assert steps_in(out / "checkpoints" / "last.ckpt") == 36 // 8
    result = run_cli("stage1", f"data.path={data_path}", f"out={out}", "experiment=tiny", "optim.epochs=2",
                     "resume=true")
    assert result.returncode == 0, result.stderr[-2000:]
    assert steps_in(out / "checkpoints" / "last.ckpt") == 2 * (36 // 8)  # continued, not restarted
    steps = [int(r["step"]) for r in csv.DictReader(open(out / "metrics.csv")) if r.get("train/loss")]
    assert steps == list(range(8))                            # one history, no step logged twice


def test_ddp_two_processes_agree_on_the_teacher(labeled_tiles, tmp_path):
    out = tmp_path / "ddp"
    result, teachers = run_saving_each_ranks_teacher(
        tmp_path, "stage1", f"data.path={labeled_tiles}", f"out={out}", "experiment=tiny", "optim.epochs=1",
        "trainer.devices=2", "trainer.strategy=ddp")
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(teachers) == 2                                  # each rank's own teacher, saved by that rank
    for name, value in teachers[0].items():
        torch.testing.assert_close(teachers[1][name], value, msg=name)
    exported, _ = load_encoder(out)
    for name, value in exported.state_dict().items():        # and the export is that teacher's backbone
        torch.testing.assert_close(value, teachers[0][f"backbone.{name}"], msg=name)



def test_embed_writes_every_tile_and_resumes(stage1_run, labeled_tiles, tmp_path):
    out = tmp_path / "embeddings.h5"
    result = run_cli("embed", f"encoder={stage1_run}", f"data.path={labeled_tiles}", f"out={out}", "experiment=tiny")
    assert result.returncode == 0, result.stderr[-2000:]
    embeddings, keys, attrs = read_embeddings(out)
    tiles = open_tiles(labeled_tiles)
    assert embeddings.shape == (len(tiles), 64) and keys == tiles.keys
    assert attrs["encoder"] == json.loads((stage1_run / "encoder.json").read_text())["sha256"]
    rerun = run_cli("embed", f"encoder={stage1_run}", f"data.path={labeled_tiles}", f"out={out}", "experiment=tiny")
    assert rerun.returncode == 0 and "nothing to do" in rerun.stdout
    # a killed run: half written, with garbage after n_done; resuming fills in the rest exactly
    again = tmp_path / "again.h5"
    writer = EmbeddingsWriter(again, keys, 64, attrs["encoder"], "x")
    writer.write(0, embeddings[:20])
    writer.file["embeddings"][20:] = 7.0
    writer.close()
    assert partial_path(again).is_file() and not again.exists()
    result = run_cli("embed", f"encoder={stage1_run}", f"data.path={labeled_tiles}", f"out={again}", "experiment=tiny")
    assert result.returncode == 0 and "resuming: 20 of 36" in result.stdout
    np.testing.assert_allclose(read_embeddings(again)[0], embeddings, rtol=1e-5, atol=1e-5)


def test_eval_reports_metrics_for_trained_and_random_encoders(stage1_run, labeled_tiles, tmp_path):
    for encoder in (str(stage1_run), "random"):
        out = tmp_path / encoder.replace("/", "_")
        result = run_cli("eval", f"encoder={encoder}", f"data.path={labeled_tiles}", f"out={out}", "experiment=tiny")
        assert result.returncode == 0, result.stderr[-2000:]
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["split"].startswith("by group")
        for probe in ("knn", "linear"):              # the reported figures agree with their confusion matrix
            matrix = np.array(metrics[probe]["confusion_matrix"], float)
            assert matrix.sum() == metrics["n_test"]
            assert metrics[probe]["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
            recall = np.diag(matrix) / matrix.sum(axis=1)
            assert metrics[probe]["balanced_accuracy"] == pytest.approx(recall.mean())
        assert (out / "report.md").is_file() and (out / "confusion.png").is_file()


def test_eval_in_grayscale_cannot_tell_colours_of_equal_luminance_apart(tmp_path):
    """Two classes of tiles that differ only in hue, at the same luminance (red 255 and green 130: 0.299 x 255
    and 0.587 x 130 both round to 76), with one texture (stripes of the full colour and of 0.7 of it, which
    match in luminance too): every probe tells them apart in colour, and in grayscale every tile is the same
    image, so no probe does better than chance (0.5)."""
    from PIL import Image

    stripes = np.where(np.arange(32) % 8 < 4, 1.0, 0.7)[None, :, None] * np.ones((32, 1, 1))
    rows = []
    for label, colour in (("red", (255, 0, 0)), ("green", (0, 130, 0))):
        (tmp_path / "tiles" / label).mkdir(parents=True)
        for i in range(12):
            Image.fromarray((stripes * np.array(colour)).astype(np.uint8)).save(tmp_path / "tiles" / label / f"{i}.png")
            rows.append(f"{label}/{i}.png,{label},{label}{i // 3}")
    (tmp_path / "tiles" / "groups.csv").write_text("file,label,group\n" + "\n".join(rows) + "\n")
    scores = {}
    for grayscale in (False, True):
        out = tmp_path / f"gray{grayscale}"
        result = run_cli("eval", "encoder=random", f"data.path={tmp_path / 'tiles'}", f"out={out}", "experiment=tiny",
                         f"grayscale={str(grayscale).lower()}")
        assert result.returncode == 0, result.stderr[-2000:]
        scores[grayscale] = json.loads((out / "metrics.json").read_text())
        assert scores[grayscale]["grayscale"] is grayscale
    for probe in ("knn", "linear"):
        assert scores[False][probe]["balanced_accuracy"] == 1.0
        assert scores[True][probe]["balanced_accuracy"] == pytest.approx(0.5)
    assert "tiles in grayscale" in (tmp_path / "grayTrue" / "report.md").read_text()


def test_group_split_never_puts_a_group_on_both_sides():
    groups = np.repeat(np.arange(40), 5)
    labels = groups % 3
    train, test = train_test_split(labels, groups, 0.3, seed=1)
    assert not set(groups[train]) & set(groups[test])
    assert len(train) + len(test) == len(labels)
    assert set(labels[test]) == {0, 1, 2}
    assert 0.2 < len(test) / len(labels) < 0.4


def test_separable_features_score_near_one():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 5
    labels = np.repeat(np.arange(3), 60)
    features = centres[labels] + rng.normal(size=(180, 16))
    train, test = train_test_split(labels, None, 0.3, seed=0)
    results = evaluate_features(features[train], labels[train], features[test], labels[test], 3)
    for probe in ("knn", "linear"):
        assert results[probe]["balanced_accuracy"] > 0.97
        assert results[probe]["auc"] > 0.99


def test_batched_augmentation_path_trains(labeled_tiles, tmp_path):
    out = tmp_path / "batched"
    result = run_cli("stage1", f"data.path={labeled_tiles}", f"out={out}", "experiment=tiny", "optim.epochs=1",
                     "augment.on_gpu=true", "augment.source_size=64")
    assert result.returncode == 0, result.stderr[-2000:]
    assert steps_in(out / "checkpoints" / "last.ckpt") == 36 // 8
    losses = [float(r["train/loss"]) for r in csv.DictReader(open(out / "metrics.csv")) if r.get("train/loss")]
    assert len(losses) == 4 and all(np.isfinite(losses))


def test_embed_on_two_processes_equals_one(stage1_run, labeled_tiles, tmp_path):
    single, sharded = tmp_path / "one.h5", tmp_path / "two.h5"
    for out, extra in ((single, []), (sharded, ["trainer.devices=2", "trainer.strategy=ddp"])):
        result = run_cli("embed", f"encoder={stage1_run}", f"data.path={labeled_tiles}", f"out={out}",
                         "experiment=tiny", *extra)
        assert result.returncode == 0, result.stderr[-2000:]
    a, keys_a, _ = read_embeddings(single)
    b, keys_b, attrs = read_embeddings(sharded)
    assert keys_a == keys_b and attrs["n_done"] == len(keys_a)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert not list(tmp_path.glob("two.h5.shard*"))
