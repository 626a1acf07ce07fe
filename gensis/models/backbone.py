"""timm ViT backbones and the encoder export: ``encoder.safetensors`` + ``encoder.json``.

``encoder.json`` holds everything needed to rebuild the backbone without a checkpoint:
timm name and kwargs, input size, embedding dim and input normalisation.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from gensis.atomic import atomic_path
from gensis.errors import GensisError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderSpec:
    """What ``encoder.json`` stores."""

    name: str
    kwargs: dict = field(default_factory=dict)
    img_size: int = 224
    embed_dim: int = 0
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD


def create_backbone(name: str, img_size: int, kwargs: Optional[dict] = None) -> nn.Module:
    """A timm model returning the CLS embedding (num_classes=0), any input size (dynamic_img_size)."""
    import timm

    kwargs = dict(kwargs or {})
    try:
        return timm.create_model(name, pretrained=False, num_classes=0, img_size=img_size, dynamic_img_size=True,
                                 **kwargs)
    except (RuntimeError, TypeError, ValueError) as err:
        raise GensisError(f"backbone.name={name}: timm cannot build it ({err})") from None


def load_backbone_weights(model: nn.Module, path: str | Path) -> None:
    """Load a timm-compatible state dict (.safetensors, .pth/.pt/.bin) into ``model``; the classifier may be absent."""
    path = Path(path)
    if not path.is_file():
        raise GensisError(f"backbone.weights={path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            for key in ("state_dict", "model", "teacher"):
                if isinstance(state, dict) and key in state and isinstance(state[key], dict):
                    state = state[key]
    except Exception as err:
        raise GensisError(f"backbone.weights={path}: cannot read weights ({err})") from None
    state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing:
        raise GensisError(f"backbone.weights={path}: {len(missing)} weight(s) missing for this backbone, "
                          f"e.g. {missing[0]}; is it the same architecture?")
    if unexpected:
        raise GensisError(f"backbone.weights={path}: {len(unexpected)} unexpected weight(s), e.g. {unexpected[0]}")


def save_encoder(run_dir: str | Path, model: nn.Module, spec: EncoderSpec) -> Path:
    """Write ``encoder.safetensors`` and ``encoder.json`` atomically; returns the weights path."""
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    weights = run_dir / "encoder.safetensors"
    state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp))
    info = dict(spec.__dict__)
    info["mean"], info["std"] = list(spec.mean), list(spec.std)
    info["sha256"] = file_hash(weights)
    with atomic_path(run_dir / "encoder.json") as tmp:
        tmp.write_text(json.dumps(info, indent=2))
    return weights


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def encoder_hash(run_dir: str | Path) -> str:
    """The sha256 prefix of an encoder run's weights, as recorded in its ``encoder.json`` and checked against
    ``encoder.safetensors`` (a replaced or damaged weights file is refused, naming both hashes)."""
    run_dir = Path(run_dir)
    info = run_dir / "encoder.json"
    if not info.is_file():
        raise GensisError(f"encoder={run_dir}: no encoder.json (a stage-1 or stage-3 run writes it)")
    try:
        recorded = json.loads(info.read_text()).get("sha256", "")
    except (OSError, ValueError) as err:
        raise GensisError(f"encoder={run_dir}: encoder.json cannot be read ({err}); export the encoder again") \
            from None
    weights = run_dir / "encoder.safetensors"
    if recorded and weights.is_file():
        actual = _cached_file_hash(str(weights), *_stat_key(weights))
        if actual != recorded:
            raise GensisError(f"encoder={run_dir}: encoder.safetensors has sha256 {actual} but encoder.json records "
                              f"{recorded}: the weights were replaced or damaged; copy the whole run dir again")
    return recorded


def _stat_key(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=32)
def _cached_file_hash(path: str, size: int, mtime_ns: int) -> str:
    """``file_hash`` once per file version (size and mtime) in a process."""
    return file_hash(Path(path))


def load_encoder(run_dir: str | Path) -> tuple[nn.Module, EncoderSpec]:
    """Rebuild an exported encoder from a run dir (no checkpoint needed), in eval mode."""
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    info_path, weights = run_dir / "encoder.json", run_dir / "encoder.safetensors"
    if not info_path.is_file() or not weights.is_file():
        raise GensisError(f"encoder={run_dir}: not an encoder run dir (needs encoder.json and encoder.safetensors; "
                          f"a stage-1 or stage-3 run writes them)")
    encoder_hash(run_dir)
    info = json.loads(info_path.read_text())
    spec = EncoderSpec(name=info["name"], kwargs=info.get("kwargs", {}), img_size=info["img_size"],
                       embed_dim=info["embed_dim"], mean=tuple(info["mean"]), std=tuple(info["std"]))
    model = create_backbone(spec.name, spec.img_size, spec.kwargs)
    try:
        model.load_state_dict(load_file(str(weights)))
    except Exception as err:  # safetensors and torch raise several types for a damaged or foreign file
        detail = " ".join(str(err).split())[:200]
        raise GensisError(f"encoder={run_dir}: encoder.safetensors does not fit the {spec.name} backbone that "
                          f"encoder.json describes ({type(err).__name__}: {detail}); copy the whole run dir "
                          f"again") from None
    return model.eval(), spec

