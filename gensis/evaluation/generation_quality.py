"""What a stage-2 model draws, measured in the stage-1 encoder's embedding space (``gensis assess``).

- **Fidelity**: mean cosine between a tile's embedding e and the embedding of a view G(z, e)
  drawn from it, beside an upper reference (a hand-augmented view of the same tile, the
  stage-1 global-crop augmentations) and a floor (a random other tile).
- **Diversity**: mean pairwise cosine distance among the K views of a tile, beside the same
  for K hand-augmented views.
- **Diversity in pixels**: the same among the views themselves (root mean square pixel
  difference, 0-1 scale, at the encoder's input size), so that it does not rest on the
  encoder that made the condition.
- **Label fidelity, source retrieval and interpolation reach**
  (:mod:`gensis.evaluation.view_fidelity`): on labeled tiles the views are drawn for held-out
  tiles and a kNN probe fitted on the other tiles labels them.
- **Interpolation**: images drawn from slerp(e1, e2, alpha) for alpha in [0, 1] with fixed
  noise; the cosine to source 1 should rise with alpha and the cosine to source 2 fall
  (Spearman correlations, share of monotone pairs, reach, a strip and a plot).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gensis.atomic import atomic_path, write_text
from gensis.config.augment import AugmentConfig, blur_sigma_range
from gensis.config.diffusion import SamplerConfig
from gensis.config.stage2 import AssessConfig, ReportConfig
from gensis.data.augment import augmented_view, eval_transform
from gensis.data.tile_source import open_tiles
from gensis.diffusion.condition_noise import noise_views, tile_levels
from gensis.diffusion.neighbour_mix import mix_views, nearest_neighbours
from gensis.diffusion.pipeline import EmbeddingDiffusionPipeline, load_pipeline
from gensis.diffusion.slerp import slerp
from gensis.errors import GensisError
from gensis.evaluation.image_grid import save_png, tile_grid
from gensis.evaluation.split import train_test_split
from gensis.evaluation.view_fidelity import interpolation_reach, label_fidelity, source_in_top_k
from gensis.models.backbone import encoder_hash, load_encoder


@torch.no_grad()
def embed_images(model, images, transform, device, batch_size: int = 64) -> np.ndarray:
    """L2-normalised embeddings of uint8 (H, W, 3) images through ``transform``."""
    out = []
    for start in range(0, len(images), batch_size):
        chunk = [transform(Image.fromarray(np.asarray(a))) for a in images[start:start + batch_size]]
        out.append(torch.nn.functional.normalize(model(torch.stack(chunk).to(device)).float(), dim=-1).cpu())
    return torch.cat(out).numpy()


def draw(pipe: EmbeddingDiffusionPipeline, embeddings: np.ndarray, seeds, sampler: SamplerConfig,
         batch_size: int) -> np.ndarray:
    """uint8 images drawn from ``embeddings`` (one seed each), in batches."""
    device = pipe.unet.device
    images = []
    for start in range(0, len(embeddings), batch_size):
        e = torch.as_tensor(embeddings[start:start + batch_size])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            images.append(pipe(e, sampler.steps, sampler.guidance, seeds=list(seeds[start:start + batch_size]),
                               output_type="uint8").images)
    return np.concatenate(images)


def unnormalise(x: torch.Tensor, spec) -> np.ndarray:
    """A normalised (3, H, W) tensor back to uint8 (H, W, 3) pixels."""
    mean, std = torch.tensor(spec.mean)[:, None, None], torch.tensor(spec.std)[:, None, None]
    return (x * std + mean).clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()


PROBE_TILES = 2000  # most real training tiles the label-fidelity probe is fitted on


def labeled_split(data_path: str, seed: int):
    """(tiles, train indices, held-out indices) of labeled tiles with two or more classes, else None."""
    try:
        tiles = open_tiles(data_path, labels=True)
    except GensisError:
        return None
    if len(tiles.classes) < 2 or (tiles.labels < 0).any():
        return None
    try:
        train, test = train_test_split(tiles.labels, tiles.groups, 0.3, seed)
    except GensisError:
        return None
    return tiles, train, test


def pixel_diversity(images: np.ndarray) -> float:
    """Mean root-mean-square difference (0-1 scale) over the pairs of each row's K images (T x K x H x W x 3)."""
    x = images.astype(np.float32) / 255.0
    k = x.shape[1]
    pairs = [np.sqrt(((x[:, i] - x[:, j]) ** 2).mean(axis=(1, 2, 3))) for i in range(k) for j in range(i + 1, k)]
    return float(np.mean(pairs))


def mean_pairwise_distance(views: np.ndarray) -> float:
    """Mean 1 - cosine over the pairs of each row's K unit vectors (views: T x K x D), averaged over rows."""
    k = views.shape[1]
    sims = np.einsum("tkd,tld->tkl", views, views)
    upper = np.triu_indices(k, 1)
    return float((1 - sims[:, upper[0], upper[1]]).mean())


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    value = spearmanr(x, y).statistic
    return float(value) if np.isfinite(value) else 0.0


def assess_generator(diffusion: str | Path, encoder: str | Path, data_path: str, out: str | Path,
                     sampler: SamplerConfig, report: ReportConfig, seed: int = 0, device=None,
                     batch_size: int = 32, progress: bool = True) -> dict:
    """Measure fidelity, diversity and interpolation; write ``generation.json``, ``generation.md``,
    ``views.png`` and ``interpolation.png`` into ``out``. Returns the metrics."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(out)
    pipe, info = load_pipeline(diffusion, sampler.name)
    pipe.to(device)
    model, spec = load_encoder(encoder)
    model = model.to(device)
    if info.get("encoder_sha256") and info["encoder_sha256"] != encoder_hash(encoder):
        raise GensisError(f"diffusion={diffusion} was trained on another encoder's embeddings than encoder={encoder}")
    rng = np.random.default_rng(seed)
    labeled = labeled_split(data_path, seed)
    tiles, pool = (labeled[0], labeled[2]) if labeled else (open_tiles(data_path), None)
    pool = np.arange(len(tiles)) if pool is None else pool        # labeled: views of held-out tiles only
    n = min(report.tiles, len(pool))
    if report.tiles < 2:
        raise GensisError(f"report.tiles={report.tiles}: assessing needs at least 2 tiles")
    if n < 2:
        raise GensisError(f"data.path={data_path}: assessing needs at least 2 tiles, got {len(pool)}")
    picked = rng.choice(pool, n, replace=False)
    real = [tiles[int(i)]["image"] for i in picked]
    plain = eval_transform(spec.img_size, spec.mean, spec.std)
    e = embed_images(model, real, plain, device, batch_size)
    k = report.views
    torch.manual_seed(seed)
    augment = augmented_view(spec.img_size, (0.4, 1.0), AugmentConfig(), 0.5, 0.0, spec.mean, spec.std,
                             blur_sigma_range(spec.img_size))
    augmented_pixels = np.stack([unnormalise(augment(Image.fromarray(a)), spec) for a in real for _ in range(k)])
    augmented = embed_images(model, augmented_pixels, plain, device, batch_size).reshape(n, k, -1)
    view_seeds = np.arange(n * k) + seed * 1_000_003
    conditions = np.repeat(e, k, axis=0)
    if report.neighbour_mix > 0:
        embeddings = torch.from_numpy(e)
        neighbours = nearest_neighbours(embeddings, report.neighbours)
        conditions = mix_views(embeddings, np.repeat(np.arange(n), k), neighbours, report.neighbour_mix,
                               view_seeds).numpy()
    if report.noise_level > 0:
        levels = np.repeat(tile_levels(report.noise_level, report.adaptive_noise, n, real.__getitem__), k)
        conditions = noise_views(torch.from_numpy(conditions), levels, pipe.scheduler.alphas_cumprod,
                                 view_seeds).numpy()
    views = draw(pipe, conditions, view_seeds, sampler, batch_size)
    generated = embed_images(model, views, plain, device, batch_size).reshape(n, k, -1)
    at_input = np.stack([np.asarray(Image.fromarray(v).resize((spec.img_size, spec.img_size),
                                                               Image.Resampling.BICUBIC)) for v in views])
    size = pipe.image_size
    resized = embed_images(model, [np.asarray(Image.fromarray(a).resize((size, size), Image.Resampling.BICUBIC))
                                   for a in real], plain, device, batch_size)
    others = (np.arange(n) + rng.integers(1, n, size=n)) % n       # a random other tile for each
    metrics = {
        "fidelity": float(np.einsum("td,tkd->tk", e, generated).mean()),
        "fidelity_augmented": float(np.einsum("td,tkd->tk", e, augmented).mean()),
        "fidelity_floor": float((e * e[others]).sum(-1).mean()),
        "fidelity_resized": float((e * resized).sum(-1).mean()),
        "diversity": mean_pairwise_distance(generated),
        "diversity_augmented": mean_pairwise_distance(augmented),
        "diversity_pixels": pixel_diversity(at_input.reshape(n, k, *at_input.shape[1:])),
        "diversity_pixels_augmented": pixel_diversity(augmented_pixels.reshape(n, k, *augmented_pixels.shape[1:])),
        "source_top10": source_in_top_k(e, generated, 10),
        "source_top10_chance": min(1.0, 10 / n),
        "label_fidelity": None,
    }
    if labeled:
        train = rng.permutation(labeled[1])[:PROBE_TILES]
        probe = embed_images(model, [tiles[int(i)]["image"] for i in train], plain, device, batch_size)
        metrics["label_fidelity"] = label_fidelity(probe, tiles.labels[train], e, tiles.labels[picked], generated,
                                                   len(tiles.classes), rng)
    metrics["fidelity_midpoint"] = (metrics["fidelity_augmented"] + metrics["fidelity_floor"]) / 2
    metrics["fidelity_above_midpoint"] = metrics["fidelity"] > metrics["fidelity_midpoint"]
    metrics.update(interpolation_check(pipe, model, plain, e, real, report, sampler, rng, device, batch_size, out))
    metrics.update({"tiles": n, "views": k, "sampler": sampler.name, "steps": sampler.steps,
                    "guidance": sampler.guidance, "noise_level": report.noise_level,
                    "adaptive_noise": report.adaptive_noise, "neighbour_mix": report.neighbour_mix,
                    "image_size": pipe.image_size, "seed": seed})
    save_png(tile_grid([[np.asarray(Image.fromarray(r).resize(views.shape[1:3][::-1])), *views[i * k:(i + 1) * k]]
                        for i, r in enumerate(real[:8])]), out / "views.png")
    with atomic_path(out / "generation.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))
    write_text(out / "generation.md", markdown_report(metrics, diffusion, encoder))
    if progress:
        print(f"fidelity {metrics['fidelity']:.3f} (hand-augmented {metrics['fidelity_augmented']:.3f}, random tile "
              f"{metrics['fidelity_floor']:.3f}); diversity {metrics['diversity']:.3f} (hand-augmented "
              f"{metrics['diversity_augmented']:.3f}) -> {out / 'generation.md'}")
    return metrics


def interpolation_check(pipe, model, transform, e, real, report: ReportConfig, sampler, rng, device, batch_size,
                        out: Path) -> dict:
    """Draw P pairs along alpha in [0, 1] (one noise seed per pair); cosine of each image to both sources."""
    n, p = len(e), min(report.pairs, len(e) // 2)
    if p == 0:
        return {}
    order = rng.permutation(n)
    pairs = order[:2 * p].reshape(p, 2)
    alphas = np.linspace(0.0, 1.0, report.alphas)
    e1, e2 = e[pairs[:, 0]].repeat(len(alphas), 0), e[pairs[:, 1]].repeat(len(alphas), 0)
    mixed = slerp(torch.from_numpy(e1), torch.from_numpy(e2), torch.from_numpy(np.tile(alphas, p)).float()).numpy()
    seeds = np.repeat(rng.integers(0, 2**31 - 1, size=p), len(alphas))
    images = draw(pipe, mixed, seeds, sampler, batch_size)
    embedded = embed_images(model, images, transform, device, batch_size).reshape(p, len(alphas), -1)
    to1 = np.einsum("pad,pd->pa", embedded, e[pairs[:, 0]])
    to2 = np.einsum("pad,pd->pa", embedded, e[pairs[:, 1]])
    rho1 = [spearman(alphas, row) for row in to1]
    rho2 = [spearman(alphas, row) for row in to2]
    monotone = [bool(np.all(np.diff(a - b) >= -1e-6)) for a, b in zip(to1, to2)]
    size = images.shape[1:3][::-1]
    strips = [[np.asarray(Image.fromarray(real[b]).resize(size)), *images[i * len(alphas):(i + 1) * len(alphas)],
               np.asarray(Image.fromarray(real[a]).resize(size))] for i, (a, b) in enumerate(pairs)]
    plot_interpolation(tile_grid(strips), alphas, to1, to2, out / "interpolation.png")
    return {"interpolation_pairs": p, "interpolation_reach": interpolation_reach(alphas, to1, e[pairs[:, 0]],
                                                                                 e[pairs[:, 1]]),
            "interpolation_spearman_source1": float(np.mean(rho1)),
            "interpolation_spearman_source2": float(np.mean(rho2)),
            "interpolation_monotone_fraction": float(np.mean(monotone)),
            "interpolation_alphas": alphas.tolist(), "interpolation_cosine_source1": to1.mean(0).tolist(),
            "interpolation_cosine_source2": to2.mean(0).tolist()}


def plot_interpolation(strip: Image.Image, alphas, to1, to2, path: Path) -> None:
    """The strips (source 2, alpha 0 -> 1, source 1 per row) above cosine-vs-alpha curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 3 + 0.9 * len(to1) + 3),
                                      gridspec_kw={"height_ratios": [0.9 * len(to1) + 0.6, 3]})
    top.imshow(strip)
    top.set_title("source 2 | alpha = 0 ... 1 | source 1")
    top.axis("off")
    for a, b in zip(to1, to2):
        bottom.plot(alphas, a, color="tab:blue", alpha=0.35)
        bottom.plot(alphas, b, color="tab:orange", alpha=0.35)
    bottom.plot(alphas, to1.mean(0), color="tab:blue", lw=2.5, label="cosine to source 1")
    bottom.plot(alphas, to2.mean(0), color="tab:orange", lw=2.5, label="cosine to source 2")
    bottom.set_xlabel("alpha (weight of source 1)")
    bottom.set_ylabel("cosine of the drawn image's embedding")
    bottom.legend()
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def label_fidelity_lines(fidelity: dict | None) -> list[str]:
    if not fidelity:
        return []
    return ["| label fidelity (kNN probe on real training tiles gives the source's label) | views | real held-out "
            "tiles (ceiling) | a random other tile (floor) |", "|---|---|---|---|",
            f"| | {fidelity['views']:.3f} | {fidelity['ceiling']:.3f} | {fidelity['floor']:.3f} |", ""]


def markdown_report(m: dict, diffusion, encoder) -> str:
    verdict = "above" if m["fidelity_above_midpoint"] else "below"
    lines = [
        "# What the stage-2 model draws", "",
        f"- diffusion: `{diffusion}`", f"- encoder: `{encoder}`",
        f"- {m['tiles']} tiles, {m['views']} views each, sampler {m['sampler']} {m['steps']} steps, "
        f"guidance {m['guidance']}, {m['image_size']} px", "",
        "| | generated views | hand-augmented views | random other tile |", "|---|---|---|---|",
        f"| fidelity (cosine to the tile's embedding) | {m['fidelity']:.3f} | {m['fidelity_augmented']:.3f} | "
        f"{m['fidelity_floor']:.3f} |",
        f"| diversity (mean pairwise cosine distance) | {m['diversity']:.3f} | {m['diversity_augmented']:.3f} | |",
        f"| diversity in pixels (mean pairwise RMS difference) | {m['diversity_pixels']:.3f} | "
        f"{m['diversity_pixels_augmented']:.3f} | |", "",
        f"A view's own tile is among its 10 nearest of the {m['tiles']} real tiles for "
        f"{m['source_top10']:.0%} of the views (by chance {m['source_top10_chance']:.0%}).", "",
        *label_fidelity_lines(m.get("label_fidelity")),
        f"Fidelity is {verdict} the midpoint ({m['fidelity_midpoint']:.3f}) between the floor and the "
        f"hand-augmented reference. The tile itself shrunk to the model's {m['image_size']} px and embedded "
        f"again scores {m['fidelity_resized']:.3f}: about the most a view at that size can reach.", "",
        "![views](views.png)", ""]
    if "interpolation_pairs" in m:
        lines += [
            "## Interpolation", "",
            f"{m['interpolation_pairs']} pairs; reach {m['interpolation_reach']:.2f} (the slope of the cosine to "
            f"source 1 over alpha as a fraction of 1 - cos(e1, e2): 1 travels the whole way, 0 ignores alpha); "
            f"Spearman correlation of alpha with the cosine to source 1: "
            f"{m['interpolation_spearman_source1']:.2f}, to source 2: {m['interpolation_spearman_source2']:.2f}; "
            f"monotone pairs: {m['interpolation_monotone_fraction']:.0%}.", "", "![interpolation](interpolation.png)",
            ""]
    return "\n".join(lines)


def run(cfg: AssessConfig) -> int:
    if not cfg.data.path:
        raise GensisError("give data.path=<tiles> (a folder of images, a tiles.h5 or a tiling output dir)")
    from gensis.evaluation.embed_run import pick_device

    assess_generator(cfg.diffusion, cfg.encoder, cfg.data.path, cfg.out, cfg.sampler, cfg.report, seed=cfg.seed,
                     device=pick_device(cfg.trainer), batch_size=cfg.data.batch_size, progress=cfg.progress)
    return 0
