"""Stage 2 at experiment=tiny on labeled tiles: the pipeline, training with EMA and resume, generate, assess.

The labeled tiles are real lung tiles, or the synthetic slide's textures where ../shared is absent.
"""

import csv
import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from diffusers import DDPMScheduler

from gensis.config.diffusion import SamplerConfig, UNetConfig
from gensis.config.stage2 import GenerateConfig, GenerateParams
from gensis.config.train import DataConfig, TrainerConfig
from gensis.diffusion import generate_run
from gensis.diffusion.pipeline import (
    EmbeddingDiffusionPipeline,
    load_pipeline,
    make_scheduler,
)
from gensis.evaluation.generation_quality import mean_pairwise_distance
from gensis.models.conditional_unet import build_unet
from gensis.models.embedding_conditioner import EmbeddingConditioner
from tests.conftest import run_cli


def tiny_pipeline(seed=0, time_conditioning=False):
    torch.manual_seed(seed)
    unet = build_unet(UNetConfig(channels=[16, 32], attention=[False, True], layers_per_block=1, head_dim=16,
                                 cross_attention_dim=32, norm_groups=8, time_conditioning=time_conditioning), 16, 3)
    pipe = EmbeddingDiffusionPipeline(unet, make_scheduler("ddim", DDPMScheduler().config), EmbeddingConditioner(8, 32))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_pipeline_save_load_round_trip_gives_identical_images(tmp_path):
    pipe = tiny_pipeline()
    e = torch.randn(3, 8)
    before = pipe(e, num_inference_steps=3, guidance_scale=2.0, seeds=[5, 6, 7], output_type="uint8").images
    pipe.save_pretrained(tmp_path / "pipe")
    loaded, _ = load_pipeline(tmp_path / "pipe")
    after = loaded(e, num_inference_steps=3, guidance_scale=2.0, seeds=[5, 6, 7], output_type="uint8").images
    assert before.shape == (3, 16, 16, 3) and before.dtype == np.uint8
    np.testing.assert_array_equal(before, after)
    alone = loaded(e[1:2], num_inference_steps=3, guidance_scale=2.0, seeds=[6], output_type="uint8").images
    np.testing.assert_array_equal(alone[0], after[1])          # an image does not depend on its batch
    other_seed = loaded(e[1:2], num_inference_steps=3, guidance_scale=2.0, seeds=[60], output_type="uint8").images
    assert not np.array_equal(other_seed[0], after[1])


@pytest.mark.parametrize("time_conditioning", [False, True])
def test_time_conditioning_carries_the_condition_where_cross_attention_does_not(time_conditioning, tmp_path):
    """With every cross-attention output zeroed, the condition reaches the prediction only through the
    timestep embedding: with time_conditioning two embeddings give two predictions, without it one; a saved
    and loaded pipeline keeps the route."""
    pipe = tiny_pipeline(time_conditioning=time_conditioning)
    with torch.no_grad():
        for name, module in pipe.unet.named_modules():
            if name.endswith("attn2.to_out.0"):
                module.weight.zero_()
                module.bias.zero_()
    pipe.save_pretrained(tmp_path / "pipe")
    loaded, _ = load_pipeline(tmp_path / "pipe")
    e = torch.randn(2, 8)
    draw = dict(num_inference_steps=3, guidance_scale=1.0, seeds=[5, 5], output_type="np")
    for p in (pipe, loaded):
        a, b = p(e, **draw).images
        assert np.abs(a - b).max() > 1e-4 if time_conditioning else np.allclose(a, b, atol=1e-6)


def test_any_diffusers_scheduler_and_guidance(tmp_path):
    pipe = tiny_pipeline()
    e = torch.randn(2, 8)
    for name in ("ddim", "dpm++", "euler", "unipc", "ddpm"):
        pipe.scheduler = make_scheduler(name, pipe.scheduler.config)
        images = pipe(e, num_inference_steps=4, guidance_scale=1.0, seeds=[0, 1], output_type="np").images
        assert images.shape == (2, 16, 16, 3) and 0 <= images.min() and images.max() <= 1
    pipe.scheduler = make_scheduler("ddim", pipe.scheduler.config)
    plain = pipe(e, 3, guidance_scale=1.0, seeds=[0, 1], output_type="pt").images
    guided = pipe(e, 3, guidance_scale=3.0, seeds=[0, 1], output_type="pt").images
    assert not torch.equal(plain, guided)        # the null-embedding branch changes the draw
    with pytest.raises(ValueError, match="unknown sampler"):
        make_scheduler("plms", pipe.scheduler.config)


def test_every_call_of_a_sampler_draws_the_same_images():
    pipe = tiny_pipeline()
    e = torch.randn(2, 8)
    for name in ("euler", "dpm++", "ddim"):     # Euler's starting noise scale depends on its timesteps
        pipe.scheduler = make_scheduler(name, pipe.scheduler.config)
        first = pipe(e, 4, 2.0, seeds=[3, 4], output_type="uint8").images
        second = pipe(e, 4, 2.0, seeds=[3, 4], output_type="uint8").images
        np.testing.assert_array_equal(first, second, err_msg=name)


def test_generate_conditions_follow_the_slerp_convention():
    from gensis.data.views_store import ViewsPlan

    plan = ViewsPlan(n_tiles=3, views_per_tile=2, interpolations=2, image_size=16, batch_size=4, seed=0,
                     sampler="ddim", steps=2, guidance_scale=1.0, alpha_low=0.0, alpha_high=1.0, encoder="",
                     diffusion="", keys_sha="")
    e = torch.randn(3, 8)
    pairs, alphas = np.array([[0, 2], [1, 0]]), np.array([1.0, 0.0], dtype=np.float32)
    rows = generate_run.conditions(plan, e, range(8), pairs, alphas)
    torch.testing.assert_close(rows[:6], e.repeat_interleave(2, 0))           # K views of each tile, in order
    unit = torch.nn.functional.normalize(e, dim=-1)
    torch.testing.assert_close(rows[6], unit[0])                              # alpha = 1: the first tile
    torch.testing.assert_close(rows[7], unit[0])                              # alpha = 0: the second (tile 0)


def test_mean_pairwise_distance_of_known_vectors():
    same = np.tile(np.array([1.0, 0.0]), (1, 3, 1))                     # 1 tile, 3 identical views
    orthogonal = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    assert mean_pairwise_distance(same) == pytest.approx(0.0)
    assert mean_pairwise_distance(orthogonal) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def encoder_run(labeled_tiles, tmp_path_factory):
    out = tmp_path_factory.mktemp("s1") / "s1"
    result = run_cli("stage1", f"data.path={labeled_tiles}", f"out={out}", "experiment=tiny", "optim.epochs=1")
    assert result.returncode == 0, result.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def stage2_run(labeled_tiles, encoder_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("s2") / "s2"
    result = run_cli("stage2", f"data.path={labeled_tiles}", f"encoder={encoder_run}", f"out={out}", "experiment=tiny",
                     "train.epochs=3")
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def losses(run):
    return [float(r["train/loss"]) for r in csv.DictReader(open(run / "metrics.csv")) if r.get("train/loss")]


def test_stage2_writes_a_loadable_pipeline_and_lowers_its_loss(stage2_run, encoder_run):
    for name in ("config.yaml", "checkpoints/last.ckpt", "embeddings.h5", "metrics.csv", "loss.png",
                 "samples/epoch_0003.png", "report/generation.json", "report/generation.md", "report/views.png",
                 "report/interpolation.png", "pipeline/model_index.json", "pipeline/gensis.json"):
        assert (stage2_run / name).is_file(), name
    values = losses(stage2_run)
    assert len(values) == 12 and np.mean(values[-4:]) < np.mean(values[:4])
    pipe, info = load_pipeline(stage2_run, "ddim")
    assert info["encoder_sha256"] == json.loads((encoder_run / "encoder.json").read_text())["sha256"]
    assert pipe.image_size == 16 and pipe.conditioner.config.embed_dim == 64
    report = json.loads((stage2_run / "report" / "generation.json").read_text())
    # names scripts rely on; the values are tested on constructed generators (below and in test_view_fidelity.py)
    for key in ("fidelity", "fidelity_augmented", "fidelity_floor", "fidelity_resized", "diversity",
                "diversity_augmented", "interpolation_spearman_source1", "interpolation_spearman_source2",
                "interpolation_monotone_fraction"):
        assert np.isfinite(report[key]), key
    assert set(report["label_fidelity"]) == {"views", "ceiling", "floor"}   # lung tiles have class folders
    assert np.isfinite(report["interpolation_reach"]) and "source_top10" in report
    assert report["diversity_pixels_augmented"] > 0                   # hand-made views of a tile differ in pixels


@pytest.mark.parametrize("generator", ["returns_its_source", "returns_another_tile", "returns_its_mixed_source"])
def test_the_report_tells_a_generator_that_returns_its_source_from_one_that_does_not(
        stage2_run, encoder_run, labeled_tiles, tmp_path, monkeypatch, generator):
    """``draw`` replaced by a constructed generator: the tile whose embedding is nearest the condition (scored like
    the tile brought to the generator's size, no diversity, its source first) or the next tile's (far lower).
    With ``report.neighbour_mix=1`` the conditions move towards near tiles, so the same generator's two views of
    a tile are sometimes another tile: diversity appears and fidelity falls."""
    from gensis.config.stage2 import ReportConfig
    from gensis.evaluation import generation_quality

    first = {}
    embed = generation_quality.embed_images

    def remembering(model, images, *args, **kwargs):
        features = embed(model, images, *args, **kwargs)
        first.setdefault("tiles", (list(images), features))
        return features

    def constructed(pipe, conditions, seeds, sampler, batch_size):
        tiles, features = first["tiles"]
        source = np.argmax(np.asarray(conditions) @ features.T, axis=1)     # the tile each condition came from
        if generator == "returns_another_tile":
            source = (source + 1) % len(tiles)
        size = (pipe.image_size, pipe.image_size)
        return np.stack([np.asarray(Image.fromarray(tiles[i]).resize(size, Image.Resampling.BICUBIC)) for i in source])

    monkeypatch.setattr(generation_quality, "embed_images", remembering)
    monkeypatch.setattr(generation_quality, "draw", constructed)
    mix = 1.0 if generator == "returns_its_mixed_source" else 0.0
    report = generation_quality.assess_generator(stage2_run, encoder_run, str(labeled_tiles), tmp_path,
                                                 SamplerConfig("ddim", 2, 1.0),
                                                 ReportConfig(tiles=8, views=2, pairs=2, alphas=3, neighbour_mix=mix),
                                                 progress=False)
    assert report["neighbour_mix"] == mix
    if mix:
        assert report["diversity"] > 0.01 and report["diversity_pixels"] > 0
        assert report["fidelity"] < report["fidelity_resized"] - 0.01
        return
    assert report["diversity"] == pytest.approx(0.0, abs=1e-6) and report["diversity_pixels"] == 0.0
    if generator == "returns_its_source":
        assert report["fidelity"] == pytest.approx(report["fidelity_resized"], abs=1e-6)
    else:
        assert report["fidelity"] < report["fidelity_resized"] - 0.01


def test_stage2_resume_continues_its_ema(stage2_run, tmp_path):
    out = tmp_path / "s2"
    shutil.copytree(stage2_run, out)
    before = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert before["ema"]["optimization_step"] == before["global_step"] == 12
    config = out / "config.yaml"
    data_path = [line.split(": ", 1)[1] for line in config.read_text().splitlines() if line.startswith("  path:")][0]
    encoder = [line.split(": ", 1)[1] for line in config.read_text().splitlines() if line.startswith("encoder:")][0]
    refused = run_cli("stage2", f"data.path={data_path}", f"encoder={encoder}", f"out={out}", "experiment=tiny")
    assert refused.returncode == 2 and "resume=true" in refused.stderr
    result = run_cli("stage2", f"data.path={data_path}", f"encoder={encoder}", f"out={out}", "experiment=tiny",
                     "train.epochs=4", "resume=true", "report.tiles=0")
    assert result.returncode == 0, result.stderr[-2000:]
    after = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert after["global_step"] == 16 and after["ema"]["optimization_step"] == 16   # not restarted at 0
    steps = [int(r["step"]) for r in csv.DictReader(open(out / "metrics.csv")) if r.get("train/loss")]
    assert steps == list(range(16))
    pipe, _ = load_pipeline(out)                                 # the export holds the EMA weights
    exported = [*pipe.unet.parameters(), *pipe.conditioner.parameters()]
    for saved, param in zip(after["ema"]["shadow_params"], exported):
        torch.testing.assert_close(saved, param.detach())


def generate_cfg(stage2_run, encoder_run, tiles, out, **generate):
    params = {"views_per_tile": 2, "interpolations": 5, "batch_size": 4, **generate}
    return GenerateConfig(diffusion=str(stage2_run), encoder=str(encoder_run),
                          data=DataConfig(path=str(tiles), batch_size=16, workers=0), out=str(out),
                          generate=GenerateParams(**params), sampler=SamplerConfig("ddim", 2, 2.0),
                          trainer=TrainerConfig(accelerator="cpu", devices="1"), progress=False)


def read_views(path):
    with h5py.File(path, "r") as f:
        return {"generated": f["generated"][:], "interp": f["interp/images"][:], "pairs": f["interp/pairs"][:],
                "alpha": f["interp/alpha"][:], "keys": [k.decode() for k in f["keys"][:]], "attrs": dict(f.attrs)}


def test_generate_writes_the_views_store_and_resumes_after_a_kill(stage2_run, encoder_run, labeled_tiles, tmp_path,
                                                                  monkeypatch):
    from gensis.data.tile_source import open_tiles

    whole = tmp_path / "whole" / "views.h5"
    assert generate_run.run(generate_cfg(stage2_run, encoder_run, labeled_tiles, whole)) == 0
    views = read_views(whole)
    keys = open_tiles(labeled_tiles).keys
    assert views["generated"].shape == (36, 2, 16, 16, 3) and views["interp"].shape == (5, 16, 16, 3)
    assert views["keys"] == keys
    assert (views["pairs"][:, 0] != views["pairs"][:, 1]).all() and views["pairs"].max() < 36
    assert ((0.2 <= views["alpha"]) & (views["alpha"] <= 0.8)).all()
    for key in ("encoder", "diffusion", "sampler", "steps", "guidance_scale", "seed"):
        assert key in views["attrs"], key
    assert views["generated"].std() > 0 and not np.array_equal(views["generated"][0, 0], views["generated"][0, 1])

    killed = tmp_path / "killed" / "views.h5"
    calls = {"n": 0}
    original = EmbeddingDiffusionPipeline.__call__

    def dies_on_the_fourth_batch(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(EmbeddingDiffusionPipeline, "__call__", dies_on_the_fourth_batch)
    with pytest.raises(KeyboardInterrupt):
        generate_run.run(generate_cfg(stage2_run, encoder_run, labeled_tiles, killed))
    assert not killed.exists()                                  # no half-made views.h5
    calls["n"] = -1000
    assert generate_run.run(generate_cfg(stage2_run, encoder_run, labeled_tiles, killed)) == 0
    assert calls["n"] == -1000 + 20 - 3                          # 20 batches, 3 kept from the killed run
    resumed = read_views(killed)
    np.testing.assert_array_equal(resumed["generated"], views["generated"])
    np.testing.assert_array_equal(resumed["interp"], views["interp"])
    assert not list(killed.parent.glob("*.part*"))
    calls["n"] = -1000
    assert generate_run.run(generate_cfg(stage2_run, encoder_run, labeled_tiles, killed)) == 0
    assert calls["n"] == -1000                                   # finished: nothing drawn again


def test_generate_on_two_processes_equals_one(stage2_run, encoder_run, labeled_tiles, tmp_path):
    outputs = []
    for name, extra in (("one", []), ("two", ["trainer.devices=2", "trainer.strategy=ddp"])):
        out = tmp_path / name / "views.h5"
        result = run_cli("generate", f"diffusion={stage2_run}", f"encoder={encoder_run}", f"data.path={labeled_tiles}",
                         f"out={out}", "experiment=tiny", "trainer.accelerator=cpu", *extra)
        assert result.returncode == 0, result.stderr[-2000:]
        outputs.append(read_views(out))
    one, two = outputs
    for key in ("pairs", "alpha"):
        np.testing.assert_array_equal(one[key], two[key])     # the same plan
    assert one["keys"] == two["keys"]
    for key in ("generated", "interp"):                       # the same images, up to float rounding under
        diff = np.abs(one[key].astype(int) - two[key].astype(int))  # another thread count per process
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, key


def test_generate_refuses_an_encoder_the_model_was_not_trained_on(stage2_run, encoder_run, labeled_tiles, tmp_path):
    from gensis.models.backbone import load_encoder, save_encoder

    other = tmp_path / "other"
    model, spec = load_encoder(encoder_run)
    with torch.no_grad():
        next(model.parameters()).add_(0.01)                   # another encoder of the same architecture
    save_encoder(other, model, spec)
    result = run_cli("generate", f"diffusion={stage2_run}", f"encoder={other}", f"data.path={labeled_tiles}",
                     f"out={tmp_path / 'views.h5'}", "experiment=tiny")
    assert result.returncode == 2 and "another encoder" in result.stderr and "Traceback" not in result.stderr


def test_latent_space_with_an_autoencoder_gensis_trained(labeled_tiles, encoder_run, tmp_path):
    from diffusers import AutoencoderKL

    ae = tmp_path / "ae"
    result = run_cli("autoencoder", f"data.path={labeled_tiles}", f"out={ae}", "experiment=tiny")
    assert result.returncode == 0, result.stderr[-2000:]
    quality = json.loads((ae / "reconstruction.json").read_text())
    assert all(np.isfinite(quality[k]) for k in ("psnr", "ssim", "scaling_factor"))   # values: the test below
    assert (ae / "samples" / "epoch_0002.png").is_file()
    vae = AutoencoderKL.from_pretrained(ae / "vae")
    assert vae.config.scaling_factor == pytest.approx(quality["scaling_factor"])

    s2 = tmp_path / "s2"
    result = run_cli("stage2", f"data.path={labeled_tiles}", f"encoder={encoder_run}", f"out={s2}", "experiment=tiny",
                     "generator.image_size=32", f"generator.vae={ae / 'vae'}", "generator.dihedral=true",
                     "report.tiles=0")
    assert result.returncode == 0, result.stderr[-2000:]
    with h5py.File(s2 / "latents.h5", "r") as f:                 # encoded once, not every epoch
        assert f["mean"].shape == (36, 4, 16, 16) and f.attrs["image_size"] == 32
    pipe, info = load_pipeline(s2, "ddim")
    assert info["space"] == "latent" and pipe.vae is not None and pipe.unet.config.sample_size == 16
    images = pipe(torch.randn(2, 64), 2, 2.0, seeds=[0, 1], output_type="uint8").images
    assert images.shape == (2, 32, 32, 3)


def test_reconstruction_metrics_of_known_pairs():
    from stages.autoencoder import reconstruction_metrics

    image = np.random.default_rng(0).integers(20, 200, (2, 16, 16, 3)).astype(np.uint8)
    shifted = image + 5                                     # every pixel off by 5: MSE 25
    result = reconstruction_metrics(image, shifted)
    assert result["psnr"] == pytest.approx(20 * np.log10(255 / 5))   # 34.15 dB
    assert reconstruction_metrics(image, image)["ssim"] == pytest.approx(1.0)
    assert reconstruction_metrics(image, 255 - image)["ssim"] < 0     # an inverted image anti-correlates


def test_latent_space_without_an_autoencoder_is_one_clear_error(labeled_tiles, encoder_run, tmp_path):
    result = run_cli("stage2", f"data.path={labeled_tiles}", f"encoder={encoder_run}", f"out={tmp_path / 's2'}",
                     "experiment=tiny", "generator.image_size=128")
    assert result.returncode == 2 and "generator.vae" in result.stderr and "Traceback" not in result.stderr


def test_stage2_on_two_ddp_processes(labeled_tiles, encoder_run, tmp_path):
    out = tmp_path / "s2"
    result = run_cli("stage2", f"data.path={labeled_tiles}", f"encoder={encoder_run}", f"out={out}", "experiment=tiny",
                     "trainer.devices=2", "trainer.strategy=ddp", "generator.p_uncond=0", "report.tiles=0",
                     "samples.rows=0")
    assert result.returncode == 0, result.stderr[-2000:]
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 4 and state["ema"]["optimization_step"] == 4   # 36 tiles / (8 x 2) per epoch
    assert (out / "pipeline" / "model_index.json").is_file() and not (out / "samples").exists()


def test_stage2_trains_with_its_own_batch_size(labeled_tiles, encoder_run, tmp_path):
    """train.batch_size sets stage 2's training batch apart from data.batch_size (the tiny preset's 8)."""
    args = [f"data.path={labeled_tiles}", f"encoder={encoder_run}", "experiment=tiny", "train.epochs=2",
            "report.tiles=0", "samples.rows=0"]
    result = run_cli("stage2", *args, f"out={tmp_path / 's2'}", "train.batch_size=12")
    assert result.returncode == 0, result.stderr[-2000:]
    state = torch.load(tmp_path / "s2" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 6                    # 36 tiles / 12 per step = 3 steps an epoch, 2 epochs
    too_big = run_cli("stage2", *args, f"out={tmp_path / 'big'}", "train.batch_size=40")
    assert too_big.returncode == 2 and "lower train.batch_size" in too_big.stderr and "Traceback" not in too_big.stderr


SLOW_GENERATE = """
import time
from gensis.data import views_store
write = views_store.ViewsPart.write
def slow(self, batch, images):
    write(self, batch, images)
    print("batch", batch, flush=True)
    time.sleep(0.3)
views_store.ViewsPart.write = slow
"""


def test_generate_killed_for_real_finishes_with_the_same_views(stage2_run, encoder_run, labeled_tiles, tmp_path):
    from tests.test_sigkill import kill_when

    args = ["generate", f"diffusion={stage2_run}", f"encoder={encoder_run}", f"data.path={labeled_tiles}",
            "generate.views_per_tile=2", "generate.interpolations=5", "generate.batch_size=4", "sampler.name=ddim",
            "sampler.steps=2", "sampler.guidance=2.0", "trainer.accelerator=cpu", "data.workers=0", "progress=false"]
    whole = tmp_path / "whole.h5"
    assert run_cli(*args, f"out={whole}").returncode == 0
    killed = tmp_path / "killed.h5"
    kill_when(SLOW_GENERATE, [*args, f"out={killed}"], lambda line: line.strip() == "batch 5")
    assert not killed.exists()
    again = run_cli(*args, f"out={killed}")
    assert again.returncode == 0 and "resuming: 6 of 20 batches" in again.stdout, again.stdout + again.stderr[-1000:]
    one, two = read_views(whole), read_views(killed)
    for key in ("generated", "interp"):
        np.testing.assert_array_equal(two[key], one[key], err_msg=key)
    assert not list(tmp_path.glob("killed.h5.part*"))


def test_generate_draws_views_at_several_noise_levels(stage2_run, encoder_run, labeled_tiles, tmp_path):
    out = tmp_path / "views.h5"
    result = run_cli("generate", f"diffusion={stage2_run}", f"encoder={encoder_run}", f"data.path={labeled_tiles}",
                     f"out={out}", "experiment=tiny", "generate.views_per_tile=1", "generate.interpolations=0",
                     "generate.noise_levels=[0,300]", "sampler.steps=2")
    assert result.returncode == 0, result.stderr[-2000:]
    views = read_views(out)
    assert views["generated"].shape == (36, 2, 16, 16, 3)
    assert json.loads(views["attrs"]["plan"])["noise_levels"] == [0, 300]
    assert not np.array_equal(views["generated"][:, 0], views["generated"][:, 1])   # other conditions
    both = run_cli("generate", f"diffusion={stage2_run}", f"encoder={encoder_run}", f"data.path={labeled_tiles}",
                   f"out={tmp_path / 'x.h5'}", "experiment=tiny", "generate.noise_levels=[0,300]",
                   "generate.noise_level=100")
    assert both.returncode == 2 and "replaces noise_level" in both.stderr


def test_an_interpolations_only_store_serves_the_disentanglement_task_alone(stage2_run, encoder_run, labeled_tiles,
                                                                             tmp_path):
    out = tmp_path / "views.h5"
    result = run_cli("generate", f"diffusion={stage2_run}", f"encoder={encoder_run}", f"data.path={labeled_tiles}",
                     f"out={out}", "experiment=tiny", "generate.views_per_tile=0", "generate.interpolations=5",
                     "sampler.steps=2")
    assert result.returncode == 0, result.stderr[-2000:]
    views = read_views(out)
    assert views["generated"].shape[1] == 0 and views["interp"].shape[0] == 5
    stage3 = ["stage3", f"data.path={labeled_tiles}", f"views={out}", f"encoder={encoder_run}", "experiment=tiny",
              "optim.epochs=1"]
    alone = run_cli(*stage3, f"out={tmp_path / 'alone'}", "gen.p=0", "ssl.method=simclr")  # the CPU recommendation
    assert alone.returncode == 0, alone.stderr[-2000:]
    steps = [r for r in csv.DictReader(open(tmp_path / "alone" / "metrics.csv")) if r.get("train/loss")]
    assert steps and all(np.isfinite(float(r["train/disentangle"])) for r in steps)   # the task ran every step
    assert all(float(r["train/generated_share"]) == 0 for r in steps)
    with_views = run_cli(*stage3, f"out={tmp_path / 'with_views'}", "gen.p=0.5")
    assert with_views.returncode == 2 and "has no generated views per tile" in with_views.stderr
    assert "gen.p=0" in with_views.stderr and not (tmp_path / "with_views").exists()


def test_generate_draws_views_between_near_tiles(stage2_run, encoder_run, labeled_tiles, tmp_path):
    stores = {}
    for name, extra in (("plain", []), ("mixed", ["generate.neighbour_mix=0.5", "generate.neighbours=3"])):
        stores[name] = tmp_path / f"{name}.h5"
        result = run_cli("generate", f"diffusion={stage2_run}", f"encoder={encoder_run}", f"data.path={labeled_tiles}",
                         f"out={stores[name]}", "experiment=tiny", "generate.views_per_tile=1",
                         "generate.interpolations=2", "sampler.steps=2", *extra)
        assert result.returncode == 0, result.stderr[-2000:]
    plain, mixed = read_views(stores["plain"]), read_views(stores["mixed"])
    plan = json.loads(mixed["attrs"]["plan"])
    assert (plan["neighbour_mix"], plan["neighbours"]) == (0.5, 3) and "neighbour_mix" not in plain["attrs"]["plan"]
    assert not np.array_equal(plain["generated"], mixed["generated"])          # other conditions, same noise
    np.testing.assert_array_equal(plain["interp"], mixed["interp"])            # interpolations untouched
