"""``gensis generate``: K generated views of every tile and M interpolated images -> ``views.h5``.

METHOD.md step 3: each tile's stage-1 embedding e gives K views G(z, e) with fresh noise;
M random pairs of tiles give G(z, slerp(e1, e2, alpha)) with alpha drawn from a range. Every
image has its own noise seed and the work is cut into fixed batches, so the images do not
depend on how many processes drew them. Several processes (``trainer.devices=N``) take
every N-th batch into their own resumable part file; the first joins them into one file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from gensis.config.stage2 import GenerateConfig
from gensis.data.embeddings_store import read_embeddings
from gensis.data.views_store import (
    ViewsPart,
    ViewsPlan,
    join_parts,
    keys_sha,
    part_path,
    remove_parts,
    views_plan_of,
)
from gensis.data.tile_source import open_tiles
from gensis.diffusion.condition_noise import noise_views, tile_levels
from gensis.diffusion.neighbour_mix import mix_views, nearest_neighbours
from gensis.diffusion.pipeline import load_pipeline, pipeline_folder
from gensis.diffusion.slerp import slerp
from gensis.errors import GensisError
from gensis.evaluation.embed_run import (
    _fabric,
    embed_tiles,
    join_shards,
    pick_device,
    shard_path,
)
from gensis.models.backbone import encoder_hash, file_hash
from gensis.output_guard import hold_output_lock, refuse_foreign_output


def embeddings_path(out: Path) -> Path:
    """Where generate keeps the tiles' embeddings (beside views.h5; reused by later runs)."""
    return out.with_name(out.stem + ".embeddings.h5")


def diffusion_hash(pipeline_folder: Path) -> str:
    weights = sorted((pipeline_folder / "unet").glob("*.safetensors")) + sorted(
        (pipeline_folder / "conditioner").glob("*.safetensors"))
    return "-".join(file_hash(w)[:8] for w in weights)


def conditions(plan: ViewsPlan, embeddings: torch.Tensor, jobs: range, pairs: np.ndarray,
               alphas: np.ndarray, levels: np.ndarray | None = None, alphas_cumprod: torch.Tensor | None = None,
               seeds: list[int] | None = None, neighbours: np.ndarray | None = None) -> torch.Tensor:
    """The embedding each job's image is drawn from: a tile's own (mixed with one of its ``neighbours``
    when the plan mixes, then noised at its tile's ``levels``, both seeded from the image's seed), or the
    slerp of a pair's."""
    n_views = plan.n_tiles * plan.views_per_tile
    rows = []
    for index, job in enumerate(jobs):
        if job < n_views:
            tile, slot = divmod(job, plan.views_per_tile)
            row = embeddings[tile]
            if plan.neighbour_mix > 0:
                row = mix_views(embeddings, [tile], neighbours, plan.neighbour_mix, [seeds[index]])[0]
            level = plan.slot_level(slot) if plan.noise_levels else (levels[tile] if levels is not None else 0)
            if level > 0:
                row = noise_views(row[None], [int(level)], alphas_cumprod, [seeds[index]])[0]
            rows.append(row)
        else:
            first, second = pairs[job - n_views]
            rows.append(slerp(embeddings[first][None], embeddings[second][None], float(alphas[job - n_views]))[0])
    return torch.stack(rows)


def noise_levels(cfg: GenerateConfig, n_train_timesteps: int) -> np.ndarray | None:
    """Each tile's condition-noise timestep (None without noise); adaptive: scaled by its tissue share."""
    g = cfg.generate
    too_high = [level for level in (g.noise_level, *g.noise_levels) if level > n_train_timesteps]
    if too_high:
        raise GensisError(f"generate.noise_level(s) {too_high[0]}: the model was trained with {n_train_timesteps} "
                          f"timesteps; give 0 to {n_train_timesteps}")
    if g.noise_level == 0:
        return None
    tiles = open_tiles(cfg.data.path)
    return tile_levels(g.noise_level, g.adaptive_noise, len(tiles), tiles.load)


@torch.no_grad()
def run(cfg: GenerateConfig) -> int:
    from tqdm import tqdm

    if not cfg.data.path:
        raise GensisError("give data.path=<tiles> (a folder of images, a tiles.h5 or a tiling output dir)")
    out = Path(cfg.out)
    refuse_foreign_output(out, "views store", lambda path: views_plan_of(path) is not None,
                          inputs=(cfg.data.path, cfg.encoder, cfg.diffusion))
    hold_output_lock(out)  # before other processes start: a second run stops here, all its ranks with it
    pipe, info = load_pipeline(cfg.diffusion, cfg.sampler.name)
    levels = noise_levels(cfg, len(pipe.scheduler.alphas_cumprod))   # checked before any work
    weights_hash = encoder_hash(cfg.encoder)
    if info.get("encoder_sha256") and info["encoder_sha256"] != weights_hash:
        raise GensisError(f"diffusion={cfg.diffusion} was trained on the embeddings of another encoder "
                          f"(sha256 {info['encoder_sha256']}) than encoder={cfg.encoder} ({weights_hash})")
    fabric = _fabric(cfg)
    rank, world = (fabric.global_rank, fabric.world_size) if fabric else (0, 1)
    device = fabric.device if fabric else pick_device(cfg.trainer)
    bf16 = device.type == "cuda" and cfg.trainer.resolved_precision().startswith("bf16")

    cache = embeddings_path(out)
    embed_tiles(cfg.encoder, cfg.data.path, cache, batch_size=cfg.data.batch_size, workers=cfg.data.workers,
                device=device, bf16=bf16, progress=cfg.progress, rank=rank, world=world)
    if fabric:
        fabric.barrier()
        if rank == 0 and shard_path(cache, 0, world).is_file():
            join_shards(cache, world)
        fabric.barrier()
    embeddings, keys, _ = read_embeddings(cache)
    g = cfg.generate
    folder = pipeline_folder(cfg.diffusion)
    plan = ViewsPlan(n_tiles=len(keys), views_per_tile=g.views_per_tile * max(1, len(g.noise_levels)),
                     interpolations=len(keys) if g.interpolations == -1 else g.interpolations,
                     image_size=pipe.image_size, batch_size=g.batch_size, seed=cfg.seed, sampler=cfg.sampler.name,
                     steps=cfg.sampler.steps, guidance_scale=cfg.sampler.guidance, alpha_low=g.alpha[0],
                     alpha_high=g.alpha[1], encoder=weights_hash, diffusion=diffusion_hash(folder),
                     keys_sha=keys_sha(keys), noise_level=g.noise_level, adaptive_noise=g.adaptive_noise,
                     noise_levels=tuple(g.noise_levels), neighbour_mix=g.neighbour_mix,
                     neighbours=g.neighbours if g.neighbour_mix else 0)
    if plan.interpolations and plan.n_tiles < 2:
        raise GensisError(f"data.path={cfg.data.path}: interpolations need at least 2 tiles")
    if plan.neighbour_mix and plan.views_per_tile and plan.n_tiles < 2:
        raise GensisError(f"data.path={cfg.data.path}: generate.neighbour_mix needs at least 2 tiles")
    if views_plan_of(out) == plan.fingerprint():
        if rank == 0:
            remove_parts(out)   # left by a run killed between the join and the clean-up
            print(f"{out} already holds these {plan.n_images} images; nothing to do")
        return 0

    pipe.to(device)
    part = ViewsPart(part_path(out, rank, world), plan, range(rank, plan.n_batches, world))
    todo = part.todo()
    if rank == 0 and len(todo) < len(part.batches):
        print(f"resuming: {len(part.batches) - len(todo)} of {len(part.batches)} batches of this share already drawn")
    e = torch.from_numpy(embeddings)
    pairs, alphas = plan.pairs_and_alphas()
    neighbours = (nearest_neighbours(e.to(device), plan.neighbours) if plan.neighbour_mix and plan.views_per_tile
                  else None)
    try:
        bar = tqdm(total=sum(len(plan.batch_jobs(b)) for b in todo), desc="generate", unit="img",
                   disable=not cfg.progress or rank != 0)
        for batch in todo:
            jobs = plan.batch_jobs(batch)
            seeds = [cfg.seed * 1_000_003 + job for job in jobs]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                condition = conditions(plan, e, jobs, pairs, alphas, levels, pipe.scheduler.alphas_cumprod, seeds,
                                       neighbours)
                images = pipe(condition, plan.steps, plan.guidance_scale, seeds=seeds, output_type="uint8").images
            part.write(batch, images)
            bar.update(len(jobs))
        bar.close()
    finally:
        part.close()
    if fabric:
        fabric.barrier()
    if rank == 0:
        join_parts(out, plan, world, keys, {"tiles": str(cfg.data.path), "diffusion_path": str(cfg.diffusion),
                                            "encoder_path": str(cfg.encoder), "info": json.dumps(info)})
        print(f"drew {plan.n_tiles} x {plan.views_per_tile} views and {plan.interpolations} interpolations "
              f"({plan.image_size} px, {plan.sampler} {plan.steps} steps, guidance {plan.guidance_scale:g}) "
              f"on {world} process(es) -> {out}")
    if fabric:
        fabric.barrier()
    return 0
