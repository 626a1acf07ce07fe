"""The views store ``views.h5``: generated views and interpolated images of a tile source (DESIGN.md).

Layout: ``generated`` uint8 N x K x H x W x 3 (row i holds the K views drawn from tile i's
embedding, aligned with the tile source, whose ``keys`` are stored too);
``interp/images`` uint8 M x H x W x 3, ``interp/pairs`` int64 M x 2 (the two source tiles),
``interp/alpha`` float32 M (the weight of the first tile: slerp(e1, e2, alpha)); attrs: encoder and
diffusion hashes, sampler, steps, guidance scale, seed, and the rest of the plan.

While generating, each process fills a part file of whole batches (``done`` flags, resumable);
the finished parts are joined into ``views.h5`` with an atomic rename.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from gensis.atomic import atomic_path
from gensis.errors import GensisError

STRING = h5py.string_dtype("utf-8")


@dataclass(frozen=True)
class ViewsPlan:
    """What a views store holds and how it was drawn; two runs with equal plans draw the same images."""

    n_tiles: int
    views_per_tile: int
    interpolations: int
    image_size: int
    batch_size: int
    seed: int
    sampler: str
    steps: int
    guidance_scale: float
    alpha_low: float
    alpha_high: float
    encoder: str
    diffusion: str
    keys_sha: str
    noise_level: int = 0          # DDPM timestep of the noise on a view's condition (0: none)
    adaptive_noise: bool = False  # scaled per tile by its tissue share
    noise_levels: tuple = ()      # several levels: views_per_tile / len(noise_levels) views at each, level by level
    neighbour_mix: float = 0.0    # a view's condition slerped towards a near tile by up to this weight
    neighbours: int = 0           # how many near tiles a view may mix with (0: no mixing)

    def slot_level(self, slot: int) -> int | None:
        """The condition-noise level of view slot ``slot`` of a store drawn at several levels (else None)."""
        if not self.noise_levels:
            return None
        return int(self.noise_levels[slot // (self.views_per_tile // len(self.noise_levels))])

    @property
    def n_images(self) -> int:
        return self.n_tiles * self.views_per_tile + self.interpolations

    @property
    def n_batches(self) -> int:
        return -(-self.n_images // self.batch_size)

    def batch_jobs(self, batch: int) -> range:
        return range(batch * self.batch_size, min(self.n_images, (batch + 1) * self.batch_size))

    def fingerprint(self) -> str:
        """The plan as JSON; the condition-noise and mixing fields only when set, so stores drawn before they
        existed still match (and resume) when drawn without them."""
        plan = asdict(self)
        plan["noise_levels"] = list(plan["noise_levels"])
        for key, default in (("noise_level", 0), ("adaptive_noise", False), ("noise_levels", []),
                             ("neighbour_mix", 0.0), ("neighbours", 0)):
            if plan[key] == default:
                del plan[key]
        return json.dumps(plan, sort_keys=True)

    def pairs_and_alphas(self) -> tuple[np.ndarray, np.ndarray]:
        """The M interpolation pairs (two different tiles) and alphas, drawn from ``seed``."""
        rng = np.random.default_rng([self.seed, 7])
        m = self.interpolations
        first = rng.integers(0, self.n_tiles, size=m)
        second = (first + rng.integers(1, max(2, self.n_tiles), size=m)) % self.n_tiles
        alphas = rng.uniform(self.alpha_low, self.alpha_high, size=m).astype(np.float32)
        return np.stack([first, second], axis=1).astype(np.int64), alphas


def keys_sha(keys: Sequence[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


def part_path(out: Path, rank: int, world: int) -> Path:
    return Path(out).with_name(f"{Path(out).name}.part{rank}-of-{world}")


class ViewsPart:
    """One process's share of the batches (``batch % world == rank``), written whole batch by batch."""

    def __init__(self, path: Path, plan: ViewsPlan, batches: Sequence[int]):
        self.path, self.plan, self.batches = Path(path), plan, list(batches)
        self.slots = {batch: slot for slot, batch in enumerate(self.batches)}
        self.file = None
        if self.path.is_file():
            try:
                f = h5py.File(self.path, "a")
                if f.attrs.get("plan") == plan.fingerprint() and len(f["done"]) == len(self.batches):
                    self.file = f
                else:
                    f.close()
            except (OSError, KeyError):   # a part file damaged by a kill: draw its batches again
                pass
            if self.file is None:
                self.path.unlink()
        if self.file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            f = self.file = h5py.File(self.path, "w")
            size, rows = plan.image_size, len(self.batches) * plan.batch_size
            f.create_dataset("images", shape=(rows, size, size, 3), dtype=np.uint8,
                             chunks=(1, size, size, 3) if rows else None)
            f.create_dataset("done", data=np.zeros(len(self.batches), dtype=bool))
            f.attrs["plan"] = plan.fingerprint()

    def todo(self) -> list[int]:
        done = self.file["done"][:]
        return [b for b, finished in zip(self.batches, done) if not finished]

    def write(self, batch: int, images: np.ndarray) -> None:
        slot = self.slots[batch]
        start = slot * self.plan.batch_size
        self.file["images"][start:start + len(images)] = images
        self.file.flush()
        self.file["done"][slot] = True
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def join_parts(out: Path, plan: ViewsPlan, world: int, keys: Sequence[str], attrs: dict) -> Path:
    """Write ``views.h5`` (atomic) from the finished parts of ``world`` processes, then remove them."""
    parts = [h5py.File(part_path(out, r, world), "r") for r in range(world)]
    try:
        for r, f in enumerate(parts):
            if f.attrs.get("plan") != plan.fingerprint() or not f["done"][:].all():
                raise GensisError(f"{part_path(out, r, world)}: unfinished or from another plan; run generate again")
        n, k, m, size = plan.n_tiles, plan.views_per_tile, plan.interpolations, plan.image_size
        pairs, alphas = plan.pairs_and_alphas()
        with atomic_path(out) as tmp:
            with h5py.File(tmp, "w") as dst:
                generated = dst.create_dataset("generated", shape=(n, k, size, size, 3), dtype=np.uint8,
                                               chunks=(1, 1, size, size, 3) if n * k else None, compression="lzf",
                                               fletcher32=bool(n * k))
                interp = dst.create_group("interp")
                images = interp.create_dataset("images", shape=(m, size, size, 3), dtype=np.uint8,
                                               chunks=(1, size, size, 3) if m else None, compression="lzf",
                                               fletcher32=bool(m))
                interp.create_dataset("pairs", data=pairs)
                interp.create_dataset("alpha", data=alphas)
                dst.create_dataset("keys", data=list(keys), dtype=STRING)
                for b in range(plan.n_batches):
                    slot, jobs = b // world, plan.batch_jobs(b)
                    block = parts[b % world]["images"][slot * plan.batch_size: slot * plan.batch_size + len(jobs)]
                    for job, image in zip(jobs, block):
                        if job < n * k:
                            generated[job // k, job % k] = image
                        else:
                            images[job - n * k] = image
                for key, value in {**attrs, **asdict(plan)}.items():
                    dst.attrs[key] = value
                dst.attrs["plan"] = plan.fingerprint()
    finally:
        for f in parts:
            f.close()
    remove_parts(out)
    return out


def remove_parts(out: Path) -> None:
    """Delete every part file of ``out`` (this run's, and those of runs with another process count)."""
    for part in Path(out).parent.glob(f"{Path(out).name}.part*-of-*"):
        part.unlink(missing_ok=True)


def views_plan_of(path: Path) -> str | None:
    """The plan fingerprint of a finished views store, or None when there is none (or it is unreadable)."""
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("plan")
    except (OSError, KeyError):
        return None


def check_views_store(path: str | Path, keys: Sequence[str], need_views: bool, need_interpolations: bool,
                      source: str, encoder_sha: str | None = None, encoder: str | None = None) -> dict:
    """Check that ``path`` is a views store of exactly the tiles at ``source`` (count and keys, in order) and,
    given ``encoder_sha`` (of the run dir ``encoder``), drawn from that encoder's embeddings. Returns what
    identifies the store: its plan (with the encoder and diffusion hashes)."""
    path = Path(path)
    if not path.is_file():
        raise GensisError(f"views={path}: no such file; make it with gensis generate data.path={source} ...")
    try:
        with h5py.File(path, "r") as f:
            if "generated" not in f or "keys" not in f or "interp" not in f:
                raise GensisError(f"views={path}: not a gensis views store (needs generated, keys, interp/); "
                                  f"make it with gensis generate")
            stored = [k.decode() if isinstance(k, bytes) else str(k) for k in f["keys"][:]]
            plan = f.attrs.get("plan", "")
            k = f["generated"].shape[1]
            m = f["interp/images"].shape[0]
    except (OSError, KeyError) as err:
        raise GensisError(f"views={path}: cannot read it ({err}); generate it again") from None
    if len(stored) != len(keys):
        raise GensisError(f"views={path} holds views of {len(stored)} tiles but data.path={source} has {len(keys)}: "
                          f"it was generated for another tile source; make one with gensis generate "
                          f"data.path={source} ...")
    if stored != list(keys):
        first = next(i for i, (a, b) in enumerate(zip(stored, keys)) if a != b)
        raise GensisError(f"views={path} does not match data.path={source}: tile {first} is '{keys[first]}' there "
                          f"but '{stored[first]}' in the views store; make one with gensis generate "
                          f"data.path={source} ...")
    if need_views and k < 1:
        raise GensisError(f"views={path} has no generated views per tile; generate some "
                          f"(generate.views_per_tile) or switch them off with gen.p=0")
    if need_interpolations and m < 1:
        raise GensisError(f"views={path} has no interpolated images; generate some "
                          f"(generate.interpolations) or switch the task off with disentangle.weight=0")
    try:
        identity = json.loads(plan) if plan else {}
    except ValueError:
        identity = {}
    if encoder_sha is not None and identity.get("encoder") != encoder_sha:
        raise GensisError(f"views={path} was drawn from the embeddings of encoder sha256 "
                          f"{identity.get('encoder') or 'unknown'}, not of encoder={encoder} ({encoder_sha}); "
                          f"generate the views with that encoder, or give the encoder they were made with")
    return identity
