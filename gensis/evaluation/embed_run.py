"""``gensis embed``: the teacher backbone's CLS embedding of every tile into ``embeddings.h5`` (resumable)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from gensis.config.features import EmbedConfig
from gensis.data.augment import eval_transform
from gensis.data.embeddings_store import EmbeddingsWriter
from gensis.data.tile_source import open_tiles
from gensis.models.backbone import load_encoder


def pick_device(trainer_cfg) -> torch.device:
    if trainer_cfg.accelerator == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


@torch.no_grad()
def run(cfg: EmbedConfig) -> int:
    from tqdm import tqdm

    model, spec = load_encoder(cfg.encoder)
    encoder_hash = json.loads((Path(cfg.encoder) / "encoder.json").read_text()).get("sha256", "")
    tiles = open_tiles(cfg.data.path, transform=eval_transform(spec.img_size, spec.mean, spec.std))
    writer = EmbeddingsWriter(Path(cfg.out), tiles.keys, spec.embed_dim, encoder_hash, spec.name)
    start = writer.n_done
    if start:
        print(f"resuming: {start} of {len(tiles)} tiles already embedded")
    device = pick_device(cfg.trainer)
    model = model.to(device)
    bf16 = device.type == "cuda" and cfg.trainer.resolved_precision().startswith("bf16")
    loader = DataLoader(Subset(tiles, range(start, len(tiles))), batch_size=cfg.data.batch_size,
                        num_workers=cfg.data.workers, pin_memory=device.type == "cuda")
    position = start
    try:
        for batch in tqdm(loader, desc="embed", unit="batch", disable=not cfg.progress):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out = model(batch["image"].to(device, non_blocking=True)).float().cpu().numpy()
            writer.write(position, out)
            position += len(out)
        path = writer.finish()
    finally:
        if writer.file:
            try:
                writer.close()
            except Exception:
                pass
    print(f"embedded {len(tiles)} tiles ({spec.embed_dim}-d, {spec.name}) -> {path}")
    return 0
