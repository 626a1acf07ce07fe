"""stage3 (Gen-DINO) at experiment=tiny on labeled tiles: each part on and off, resume, the views-store check.

The labeled tiles are real lung tiles, or the synthetic slide's textures where ../shared is absent.
"""

import csv
import json
import re
import shutil

import h5py
import numpy as np
import pytest
import torch

from gensis.config.augment import AugmentConfig, CropConfig
from gensis.data.gen_dino_tiles import GenDINOTiles
from gensis.data.tile_source import open_tiles
from gensis.data.views_store import ViewsPart, ViewsPlan, join_parts, keys_sha, part_path
from gensis.models.backbone import encoder_hash, load_encoder
from tests.conftest import run_cli, run_saving_each_ranks_teacher


def write_views(path, keys, views_per_tile=2, interpolations=6, size=16, fill=None, encoder="test", seed=0,
                noise_levels=()):
    """A views store in the generate format; images are noise (or ``fill``), drawn without a model
    (``noise_levels``: views_per_tile slots at each level)."""
    plan = ViewsPlan(n_tiles=len(keys), views_per_tile=views_per_tile * max(1, len(noise_levels)),
                     interpolations=interpolations, image_size=size, batch_size=8, seed=seed, sampler="none", steps=0,
                     guidance_scale=1.0, alpha_low=0.2, alpha_high=0.8, encoder=encoder, diffusion="test",
                     keys_sha=keys_sha(keys), noise_levels=tuple(noise_levels))
    rng = np.random.default_rng(0)
    part = ViewsPart(part_path(path, 0, 1), plan, range(plan.n_batches))
    for batch in part.todo():
        n = len(plan.batch_jobs(batch))
        images = (np.full((n, size, size, 3), fill, np.uint8) if fill is not None
                  else rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))
        part.write(batch, images)
    part.close()
    return join_parts(path, plan, 1, keys, {})


@pytest.fixture(scope="module")
def views(labeled_tiles, tmp_path_factory):
    return write_views(tmp_path_factory.mktemp("views") / "views.h5", open_tiles(labeled_tiles).keys)


def metrics(run):
    """The per-step rows of a run's metrics.csv (the per-epoch diagnostics have rows of their own)."""
    return [r for r in csv.DictReader(open(run / "metrics.csv")) if r.get("train/loss")]


def stage3(labeled_tiles, out, *args):
    return run_cli("stage3", f"data.path={labeled_tiles}", f"out={out}", "experiment=tiny", "optim.epochs=1", *args)


@pytest.fixture(scope="module")
def gen_dino_run(labeled_tiles, views, tmp_path_factory):
    out = tmp_path_factory.mktemp("s3") / "s3"
    result = stage3(labeled_tiles, out, f"views={views}")
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def test_stage3_trains_with_both_parts_and_exports_the_encoder(gen_dino_run):
    rows = metrics(gen_dino_run)
    assert len(rows) == 36 // 8
    pairs = 2 * (2 + 2 - 1)         # tiny: each of 2 global crops against the 3 other crops
    for row in rows:
        total = float(row["train/dino"]) + 1.0 * float(row["train/disentangle"]) / pairs   # weight 1: one pair
        assert float(row["train/loss"]) == pytest.approx(total, rel=1e-5)
    shares = [float(r["train/generated_share"]) for r in rows]
    assert 0 < np.mean(shares) < 1                                   # gen.p = 0.5 pairs about half the samples
    model, spec = load_encoder(gen_dino_run)
    assert spec.embed_dim == 64 and (gen_dino_run / "loss.png").is_file()
    diagnostics = [r for r in csv.DictReader(open(gen_dino_run / "metrics.csv")) if r.get("diag/teacher_entropy")]
    assert len(diagnostics) == 1                                    # one row per epoch, as in stage 1


@pytest.mark.parametrize("parts, columns, share", [
    (("gen.p=1", "disentangle.weight=0"), {"train/dino"}, 1.0),
    (("gen.p=0", "disentangle.weight=0.5"), {"train/dino", "train/disentangle"}, 0.0),
    (("gen.p=0", "disentangle.weight=0", "views=null"), {"train/dino"}, 0.0),   # plain DINO, no views store needed
])
def test_each_part_switches_off(labeled_tiles, views, tmp_path, parts, columns, share):
    result = stage3(labeled_tiles, tmp_path / "run", f"views={views}", *parts)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = metrics(tmp_path / "run")
    present = {key for key in ("train/dino", "train/disentangle") if rows[0].get(key)}
    assert present == columns
    assert all(float(r["train/generated_share"]) == share for r in rows)
    if "train/disentangle" in columns:
        expected = [float(r["train/dino"]) + 0.5 * float(r["train/disentangle"]) / 6 for r in rows]  # 6 pairs
        np.testing.assert_allclose([float(r["train/loss"]) for r in rows], expected, rtol=1e-5)


def test_stage3_resumes_from_its_checkpoint(gen_dino_run, labeled_tiles, views, tmp_path):
    out = tmp_path / "s3"
    shutil.copytree(gen_dino_run, out)
    refused = stage3(labeled_tiles, out, f"views={views}", "optim.epochs=2")
    assert refused.returncode == 2 and "resume=true" in refused.stderr
    center = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert center["loss.center"].abs().sum() > 0
    result = stage3(labeled_tiles, out, f"views={views}", "optim.epochs=2", "resume=true")
    assert result.returncode == 0, result.stderr[-2000:]
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == 2 * (36 // 8)
    assert [int(r["step"]) for r in metrics(out)] == list(range(8))


def test_stage3_on_two_ddp_processes_in_bf16(labeled_tiles, views, tmp_path):
    """Both parts on, 2 processes, bf16 autocast: the processes end with one teacher."""
    out = tmp_path / "ddp"
    result, teachers = run_saving_each_ranks_teacher(
        tmp_path, "stage3", f"data.path={labeled_tiles}", f"out={out}", "experiment=tiny", "optim.epochs=1",
        f"views={views}", "trainer.devices=2", "trainer.strategy=ddp", "trainer.precision=bf16-mixed")
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(teachers) == 2
    for name, value in teachers[0].items():                    # each rank saved its own: they are one teacher
        torch.testing.assert_close(teachers[1][name], value, msg=name)
    assert all(np.isfinite(float(r["train/disentangle"])) for r in metrics(out))


def test_stage3_with_augmentations_batched_on_the_device(labeled_tiles, views, tmp_path):
    result = stage3(labeled_tiles, tmp_path / "run", f"views={views}", "augment.on_gpu=true",
                    "augment.source_size=32", "gen.p=1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert {float(r["train/generated_share"]) for r in metrics(tmp_path / "run")} == {1.0}


def test_stage3_refuses_a_views_store_of_other_tiles(labeled_tiles, views, tmp_path):
    keys = open_tiles(labeled_tiles).keys
    fewer = write_views(tmp_path / "fewer.h5", keys[:-1])
    result = stage3(labeled_tiles, tmp_path / "a", f"views={fewer}")
    assert result.returncode == 2
    assert f"holds views of {len(keys) - 1} tiles but data.path={labeled_tiles} has {len(keys)}" in result.stderr
    renamed = write_views(tmp_path / "renamed.h5", [*keys[:3], "other/tile.png", *keys[4:]])
    result = stage3(labeled_tiles, tmp_path / "b", f"views={renamed}")
    assert result.returncode == 2 and "tile 3 is" in result.stderr and "other/tile.png" in result.stderr
    missing = stage3(labeled_tiles, tmp_path / "c")
    assert missing.returncode == 2 and "give views=" in missing.stderr
    assert not (tmp_path / "a").exists()                       # nothing written before the check


def test_stage3_refuses_views_of_another_encoder(gen_dino_run, labeled_tiles, views, tmp_path):
    keys = open_tiles(labeled_tiles).keys
    own = write_views(tmp_path / "own.h5", keys, encoder=encoder_hash(gen_dino_run))
    accepted = stage3(labeled_tiles, tmp_path / "a", f"views={own}", f"encoder={gen_dino_run}", "trainer.max_steps=1")
    assert accepted.returncode == 0, accepted.stderr[-2000:]
    refused = stage3(labeled_tiles, tmp_path / "b", f"views={views}", f"encoder={gen_dino_run}")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"drawn from the embeddings of encoder sha256 test, not of encoder={gen_dino_run}" in refused.stderr
    assert not (tmp_path / "b").exists()


def test_stage3_resume_refuses_a_replaced_views_store(labeled_tiles, views, tmp_path):
    out, path = tmp_path / "s3", tmp_path / "views.h5"
    shutil.copy(views, path)
    first = stage3(labeled_tiles, out, f"views={path}")
    assert first.returncode == 0, first.stderr[-2000:]
    write_views(tmp_path / "other.h5", open_tiles(labeled_tiles).keys, seed=1)
    shutil.copy(tmp_path / "other.h5", path)                   # same path, other views
    refused = stage3(labeled_tiles, out, f"views={path}", "optim.epochs=2", "resume=true")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"views={path} is not the views store out={out} was trained on" in refused.stderr
    assert '"seed": 0' in refused.stderr


def test_stage3_starts_from_given_weights(gen_dino_run, labeled_tiles, tmp_path):
    result = stage3(labeled_tiles, tmp_path / "run", "views=null", "gen.p=0", "disentangle.weight=0",
                    f"init={gen_dino_run}", "trainer.max_steps=1", "optim.lr=0")
    assert result.returncode == 0, result.stderr[-2000:]
    start, _ = load_encoder(gen_dino_run)
    after, _ = load_encoder(tmp_path / "run")       # lr 0 and momentum ~1: the teacher stays at the init
    for a, b in zip(start.state_dict().values(), after.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    bad = stage3(labeled_tiles, tmp_path / "bad", "views=null", "gen.p=0", "disentangle.weight=0",
                 f"init={tmp_path / 'nowhere'}")
    assert bad.returncode == 2 and "init=" in bad.stderr


@pytest.mark.parametrize("per_item", [1, 2])
def test_each_loss_gets_the_right_rows(labeled_tiles, views, tmp_path, per_item):
    """Student rows of the interpolated view go to L_dis only; teacher rows of v1, v2 in order; one centre.
    With per_item images per item (flattened: m = per_item * B rows) every one of them, and only them."""
    from gensis.cli import _all_blocks
    from gensis.config.compose import compose_config
    from gensis.config.stage3 import Stage3Config
    from stages.stage3 import GenDINOModule

    cfg = compose_config("stage3", Stage3Config, [f"data.path={labeled_tiles}", f"views={views}",
                                                  f"out={tmp_path / 'x'}", "experiment=tiny"],
                         other_blocks=_all_blocks())
    module = GenDINOModule(cfg, steps_per_epoch=1)
    b, k = 3, cfg.dino.out_dim

    class FakeNet(torch.nn.Module):    # one row per image, filled with the crop's fill value
        def forward(self, crops):
            return torch.cat([c[:, 0, 0, 0, None].expand(len(c), k) for c in crops]).clone()

    module.student, module.teacher = FakeNet(), FakeNet()
    seen = {}
    dino_forward = module.loss.forward

    def dino(student_out, teacher_out, n_crops, teacher_temp, update_center=True, sample_weights=None):
        seen["dino"] = (student_out[:, 0].clone(), teacher_out[:, 0].clone(), module.loss.center.clone())
        return dino_forward(student_out, teacher_out, n_crops, teacher_temp, update_center, sample_weights)

    def dis(student, first, second, alpha, center, teacher_temp):
        seen["dis"] = (student[:, 0].clone(), first[:, 0].clone(), second[:, 0].clone(), center.clone())
        return torch.tensor(0.0)

    module.loss.forward, module.disentangle_loss.forward = dino, dis
    size = cfg.crops.global_size
    crops = [torch.full((b, 3, size, size), float(i)) for i in range(2)]
    crops += [torch.full((b, 3, cfg.crops.local_size, cfg.crops.local_size), float(i)) for i in (2, 3)]
    m = per_item * b
    interp = [torch.full((m, 3, size, size), v) for v in (10.0, 11.0, 12.0)]   # v_int, v1, v2
    module.losses({"image": crops, "interp": interp, "generated": torch.zeros(b, dtype=torch.bool),
                   "alpha": torch.full((m,), 0.3)}, teacher_temp=0.04)
    student_dino, teacher_dino, dino_center = seen["dino"]
    assert student_dino.tolist() == [0.0] * b + [1.0] * b + [2.0] * b + [3.0] * b   # no interpolated rows
    assert teacher_dino.tolist() == [0.0] * b + [1.0] * b                            # global crops only
    student_int, first, second, dis_center = seen["dis"]
    assert student_int.tolist() == [10.0] * m and first.tolist() == [11.0] * m and second.tolist() == [12.0] * m
    assert torch.equal(dino_center, dis_center)                  # both terms use this step's centre
    assert not torch.equal(module.loss.center, dis_center)       # which moves after them


@pytest.mark.parametrize("target,per_item", [("sources", 1), ("self", 1), ("sources", 3)])
def test_interpolated_items_carry_their_sources_in_order(labeled_tiles, views, target, per_item):
    """On the device path images are only resized: each item's sources equal the stored pair, first first,
    brought to the views' resolution (16 px) before the resize to the source size; with disentangle.target=self
    all three are the stored interpolated image. With per_item n each role is a stack of n, image k of each
    role and alpha k belonging to one stored interpolation."""
    from gensis.data.augment import uint8_transform
    from PIL import Image

    tiles = open_tiles(labeled_tiles)
    dataset = GenDINOTiles(tiles, views, 0.0, True, CropConfig(global_size=16, local_size=8, n_local=2),
                           AugmentConfig(source_size=32), (0.5,) * 3, (0.5,) * 3, on_device=True,
                           interp_target=target, interp_per_item=per_item)
    with h5py.File(views, "r") as f:
        images, pairs, alphas = f["interp/images"][:], f["interp/pairs"][:], f["interp/alpha"][:]
    assert len(np.unique(alphas)) == len(alphas)               # alpha names its interpolation
    resize = uint8_transform(32)
    for index in range(4):
        item = dataset[index]
        drawn = [(item["alpha"], item["interp"])] if per_item == 1 else [
            (float(item["alpha"][k]), [role[k] for role in item["interp"]]) for k in range(per_item)]
        if per_item > 1:
            assert [tuple(role.shape) for role in item["interp"]] == [(per_item, 3, 32, 32)] * 3
        for alpha, interp in drawn:
            j = int(np.argmin(np.abs(alphas - alpha)))
            first, second = (Image.fromarray(tiles.load(int(t))).resize((16, 16), Image.Resampling.BICUBIC)
                             for t in pairs[j])
            if target == "self":
                first = second = Image.fromarray(images[j])
            assert torch.equal(interp[0], resize(Image.fromarray(images[j])))
            assert torch.equal(interp[1], resize(first)) and torch.equal(interp[2], resize(second))
        assert "generated_image" not in item                       # gen.p = 0: no second copy of the tile


def test_several_interpolations_per_item_flatten_into_one_batch():
    """(B, n, ...) per role and alpha (B, n) become B * n rows, item b's k-th image at row b * n + k in every role."""
    from gensis.training.generated_views import flat_interpolations

    b, n = 2, 3
    fill = torch.arange(b * n, dtype=torch.float32).reshape(b, n)            # b * n + k
    roles = [(fill + 100 * r)[:, :, None, None, None].expand(b, n, 3, 4, 4).clone() for r in range(3)]
    batch = flat_interpolations({"interp": roles, "alpha": fill / 10})
    for r, role in enumerate(batch["interp"]):
        assert role.shape == (b * n, 3, 4, 4)
        assert role[:, 0, 0, 0].tolist() == [100 * r + i for i in range(b * n)]
    assert batch["alpha"].tolist() == pytest.approx([i / 10 for i in range(b * n)])
    one = {"interp": [torch.zeros(b, 3, 4, 4)] * 3, "alpha": torch.zeros(b)}
    assert flat_interpolations(dict(one))["interp"][0].shape == (b, 3, 4, 4)   # one per item: as it is


@pytest.mark.parametrize("on_device,per_item", [(False, 1), (True, 1), (False, 2), (True, 2)])
def test_the_self_control_reaches_the_loss_on_both_augmentation_paths(labeled_tiles, tmp_path, on_device, per_item):
    """A store whose interpolated images are all black: with disentangle.target=self every query and every mixed
    key of the task is the same vector, so its InfoNCE is exactly ln(n B) (B = 8, drop_last; n = per_item images
    per item, all in the task's batch); with the source tiles as targets the keys differ and it is not."""
    black = write_views(tmp_path / "black.h5", open_tiles(labeled_tiles).keys, fill=0)
    device = ("augment.on_gpu=true", "augment.source_size=32") if on_device else ()
    losses = {}
    for target in ("self", "sources"):
        result = stage3(labeled_tiles, tmp_path / target, f"views={black}", "ssl.method=simclr", "gen.p=0",
                        f"disentangle.target={target}", f"disentangle.per_item={per_item}", *device)
        assert result.returncode == 0, result.stderr[-2000:]
        losses[target] = np.array([float(r["train/disentangle"]) for r in metrics(tmp_path / target)])
    np.testing.assert_allclose(losses["self"], np.log(8 * per_item), atol=1e-5)
    assert np.abs(losses["sources"] - np.log(8 * per_item)).max() > 1e-4


@pytest.mark.parametrize("key,value", [("disentangle.target", "pair"), ("disentangle.per_item", "0")])
def test_a_wrong_disentangle_option_is_one_line(labeled_tiles, views, tmp_path, key, value):
    wrong = stage3(labeled_tiles, tmp_path / "wrong", f"views={views}", f"{key}={value}")
    assert wrong.returncode == 2 and key in wrong.stderr and "Traceback" not in wrong.stderr
    assert not (tmp_path / "wrong").exists()


def test_generated_crops_come_from_the_views_store(labeled_tiles, tmp_path):
    """With p = 1 the second global crop is cut from a generated view; interpolated items carry their sources."""
    tiles = open_tiles(labeled_tiles)
    path = write_views(tmp_path / "black.h5", tiles.keys, fill=0)   # every generated image black
    plain = AugmentConfig(color_jitter=0, grayscale=0, hed_jitter=0, blur=False, solarize=0)
    crops = CropConfig(global_size=16, local_size=8, n_local=2)
    dataset = GenDINOTiles(tiles, path, 1.0, True, crops, plain, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    item = dataset[0]
    first, second = item["image"][:2]
    assert item["generated"] and torch.all(second == -1.0)          # black, normalised with mean = std = 0.5
    assert first.std() > 0.05                                       # the real tile
    interp, source1, source2 = item["interp"]
    assert torch.all(interp == -1.0) and source1.std() > 0.05 and source2.std() > 0.05
    assert 0.2 <= item["alpha"] <= 0.8
    never = GenDINOTiles(tiles, path, 0.0, False, crops, plain, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))[0]
    assert not never["generated"] and never["image"][1].std() > 0.05 and "interp" not in never


def test_real_and_generated_crops_reach_the_network_at_one_resolution(tmp_path):
    """Tiles of a 1 px checkerboard (64 px) against 32 px views, crops of a quarter of the tile: the real crop
    is cut from the tile brought to 32 px, where the checkerboard is a flat grey, so it is no sharper than a
    generated one; without views the same crop is a 32 px piece of the 64 px tile and keeps the pattern."""
    from gensis.data.tile_source import ImageFolderTiles
    from PIL import Image

    board = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    for i in range(2):
        Image.fromarray(np.stack([board] * 3, -1)).save(tmp_path / f"t{i}.png")
    tiles = ImageFolderTiles(tmp_path)
    path = write_views(tmp_path / "views.h5", tiles.keys, size=32, fill=128)
    plain = AugmentConfig(flip=False, rotate90=False, color_jitter=0, grayscale=0, hed_jitter=0, blur=False,
                          solarize=0)
    crops = CropConfig(n_global=2, n_local=0, global_size=32, global_scale=(0.25, 0.25))
    torch.manual_seed(0)
    item = GenDINOTiles(tiles, path, 1.0, False, crops, plain, (0.5,) * 3, (0.5,) * 3)[0]
    real, generated = item["image"]
    expected = np.asarray(Image.fromarray(np.stack([board] * 3, -1)).resize((32, 32), Image.Resampling.BICUBIC))
    assert np.abs(expected.astype(float) - 127.5).max() < 20          # the reference: the checkerboard averages out
    assert real.std() < 0.15 and generated.std() < 1e-6
    no_views = GenDINOTiles(tiles, None, 0.0, False, crops, plain, (0.5,) * 3, (0.5,) * 3)[0]
    assert no_views["image"][0].std() > 0.3                        # without views the tile keeps its 64 px detail


def test_a_damaged_views_store_is_one_line_naming_the_view(labeled_tiles, tmp_path):
    path = write_views(tmp_path / "views.h5", open_tiles(labeled_tiles).keys)
    with h5py.File(path, "r") as f:
        chunks = [f["generated"].id.get_chunk_info(i) for i in range(f["generated"].id.get_num_chunks())]
    with open(path, "r+b") as handle:
        for info in chunks:                      # every view damaged: whichever is drawn first fails
            handle.seek(info.byte_offset)
            handle.write(b"\x5a" * info.size)
    result = stage3(labeled_tiles, tmp_path / "run", f"views={path}", "gen.p=1", "disentangle.weight=0",
                    "data.workers=0")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert re.search(rf"{re.escape(str(path))}: view \d of tile \d+ cannot be read .*generate it again", message)


@pytest.mark.parametrize("method", ["dino", "mocov3"])
def test_genview_weighting_trains_and_needs_the_encoder(gen_dino_run, labeled_tiles, tmp_path, method):
    own = write_views(tmp_path / "own.h5", open_tiles(labeled_tiles).keys, encoder=encoder_hash(gen_dino_run))
    result = stage3(labeled_tiles, tmp_path / "run", f"views={own}", f"encoder={gen_dino_run}",
                    "gen.weighting=genview", "gen.gamma=5", f"ssl.method={method}")
    assert result.returncode == 0, result.stderr[-2000:]
    peaks = [float(r["train/pair_weight_max"]) for r in metrics(tmp_path / "run")]
    assert peaks and all(1.0 <= p <= 8 for p in peaks) and max(peaks) > 1.0    # N softmax: mean 1, at most N = 8
    refused = stage3(labeled_tiles, tmp_path / "bad", f"views={own}", "gen.weighting=genview")
    assert refused.returncode == 2 and "give encoder=" in refused.stderr and not (tmp_path / "bad").exists()
