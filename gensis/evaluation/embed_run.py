"""``gensis embed``: the encoder's CLS embedding of every tile into ``embeddings.h5``.

One process, or several (``trainer.devices=N``, ``trainer.strategy=ddp``, any number of
nodes): each process embeds a contiguous shard into its own resumable part file, and the
first process joins the parts, in tile order, into one file. A killed run continues where
each shard stopped.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from gensis.atomic import atomic_path
from gensis.config.features import EmbedConfig
from gensis.data.augment import eval_transform
from gensis.data.embeddings_store import STRING, EmbeddingsWriter, is_embeddings_file, matches, partial_path
from gensis.data.tile_source import open_tiles
from gensis.errors import GensisError, disk_full_error, is_disk_full
from gensis.models.backbone import encoder_hash, load_encoder
from gensis.output_guard import hold_output_lock, refuse_foreign_output


def pick_device(trainer_cfg) -> torch.device:
    if trainer_cfg.accelerator == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def _fabric(cfg: EmbedConfig):
    """A launched Lightning Fabric when several processes are asked for, else None."""
    devices = cfg.trainer.resolved_devices()
    count = len(devices) if isinstance(devices, list) else (
        (torch.cuda.device_count() if torch.cuda.is_available() and cfg.trainer.accelerator != "cpu" else 1)
        if devices == "auto" else int(devices))
    if count * cfg.trainer.num_nodes <= 1:
        return None
    from lightning.fabric import Fabric

    accelerator = "cpu" if pick_device(cfg.trainer).type == "cpu" else cfg.trainer.accelerator
    fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=cfg.trainer.num_nodes, strategy="ddp")
    fabric.launch()
    return fabric


def shard_path(out: Path, rank: int, world: int) -> Path:
    return out.with_name(f"{out.name}.shard{rank}-of-{world}")


def run(cfg: EmbedConfig) -> int:
    if not cfg.data.path:
        raise GensisError("give data.path=<tiles> (a folder of images, a tiles.h5 or a tiling output dir)")
    refuse_foreign_output(cfg.out, "embeddings file", is_embeddings_file, inputs=(cfg.data.path, cfg.encoder))
    hold_output_lock(cfg.out)  # before other processes start: a second run stops here, all its ranks with it
    fabric = _fabric(cfg)
    rank, world = (fabric.global_rank, fabric.world_size) if fabric else (0, 1)
    device = fabric.device if fabric else pick_device(cfg.trainer)
    bf16 = device.type == "cuda" and cfg.trainer.resolved_precision().startswith("bf16")
    embed_tiles(cfg.encoder, cfg.data.path, Path(cfg.out), batch_size=cfg.data.batch_size,
                workers=cfg.data.workers, device=device, bf16=bf16, progress=cfg.progress, rank=rank, world=world)
    if fabric:
        fabric.barrier()
        if rank == 0 and shard_path(Path(cfg.out), 0, world).is_file():
            join_shards(Path(cfg.out), world)
        fabric.barrier()
    return 0


@torch.no_grad()
def embed_tiles(encoder: str | Path, data_path: str, out: Path, *, batch_size: int, workers: int,
                device: torch.device, bf16: bool = False, progress: bool = True, rank: int = 0,
                world: int = 1) -> Path:
    """Embed the tiles at ``data_path`` into ``out`` (or, with ``world`` > 1, this rank's shard of it).

    Skips a finished file with the same keys and encoder; continues a part file of a killed run.
    """
    from tqdm import tqdm

    out = Path(out)
    refuse_foreign_output(out, "embeddings file", is_embeddings_file, inputs=(data_path, encoder))
    if rank == 0:
        hold_output_lock(out)
    model, spec = load_encoder(encoder)
    weights_hash = encoder_hash(encoder)
    tiles = open_tiles(data_path, transform=eval_transform(spec.img_size, spec.mean, spec.std))
    if matches(out, tiles.keys, spec.embed_dim, weights_hash, complete=True):
        if rank == 0:
            print(f"{out} already holds these {len(tiles)} embeddings; nothing to do")
        return out
    bounds = np.linspace(0, len(tiles), world + 1).round().astype(int)
    first, last = int(bounds[rank]), int(bounds[rank + 1])
    target = out if world == 1 else shard_path(out, rank, world)
    writer = EmbeddingsWriter(target, tiles.keys[first:last], spec.embed_dim, weights_hash, spec.name)
    start = writer.n_done
    if start and rank == 0:
        print(f"resuming: {start} of {last - first} tiles of this shard already embedded")
    model = model.to(device)
    loader = DataLoader(Subset(tiles, range(first + start, last)), batch_size=batch_size,
                        num_workers=workers, pin_memory=device.type == "cuda")
    position = start
    try:
        for batch in tqdm(loader, desc="embed", unit="batch", disable=not progress or rank != 0):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                embedded = model(batch["image"].to(device, non_blocking=True)).float().cpu().numpy()
            writer.write(position, embedded)
            position += len(embedded)
        writer.finish()
    except OSError as err:
        if is_disk_full(err):
            raise disk_full_error(out, err) from None
        raise
    finally:
        try:
            writer.close()
        except Exception:
            pass
    if rank == 0:
        print(f"embedded {len(tiles)} tiles ({spec.embed_dim}-d, {spec.name}) on {world} process(es) -> {out}")
    return out


def join_shards(out: Path, world: int) -> None:
    """Concatenate the finished shard files, in order, into ``out`` (atomic), then remove them."""
    shards = [shard_path(out, r, world) for r in range(world)]
    with h5py.File(shards[0], "r") as f:
        attrs = dict(f.attrs)
        dim = f["embeddings"].shape[1]
    total = 0
    for shard in shards:
        with h5py.File(shard, "r") as f:
            total += len(f["keys"])
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as dst:
            data = dst.create_dataset("embeddings", shape=(total, dim), dtype=np.float32)
            keys = []
            row = 0
            for shard in shards:
                with h5py.File(shard, "r") as f:
                    n = len(f["keys"])
                    data[row: row + n] = f["embeddings"][:]
                    keys += [k.decode() if isinstance(k, bytes) else k for k in f["keys"][:]]
                    row += n
            dst.create_dataset("keys", data=keys, dtype=STRING)
            for key, value in attrs.items():
                dst.attrs[key] = value
            dst.attrs["n_done"] = total
    for shard in shards:
        os.remove(shard)
        if partial_path(shard).exists():
            os.remove(partial_path(shard))
