"""Backbones: starting from a lab's own weights, and the encoder export round trip."""

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from gensis.errors import GensisError
from gensis.models.backbone import EncoderSpec, create_backbone, encoder_hash, file_hash, load_backbone_weights, \
    load_encoder, save_encoder

TINY = dict(patch_size=8, depth=2, embed_dim=64, num_heads=2)


def test_weights_from_a_local_file_are_loaded(tmp_path):
    source = create_backbone("vit_tiny_patch16_224", 32, TINY)
    for suffix in ("safetensors", "pth"):
        path = tmp_path / f"weights.{suffix}"
        state = {f"module.{k}": v for k, v in source.state_dict().items()}  # DDP-style prefixes are fine
        save_file(state, str(path)) if suffix == "safetensors" else torch.save({"state_dict": state}, path)
        target = create_backbone("vit_tiny_patch16_224", 32, TINY)
        load_backbone_weights(target, path)
        for (name, a), b in zip(source.state_dict().items(), target.state_dict().values()):
            torch.testing.assert_close(a, b, msg=name)


def test_wrong_weights_are_one_clear_error(tmp_path):
    other = create_backbone("vit_tiny_patch16_224", 32, dict(TINY, depth=1))
    path = tmp_path / "other.safetensors"
    save_file(other.state_dict(), str(path))
    with pytest.raises(GensisError, match="missing for this backbone"):
        load_backbone_weights(create_backbone("vit_tiny_patch16_224", 32, TINY), path)
    with pytest.raises(GensisError, match="no such file"):
        load_backbone_weights(other, tmp_path / "absent.pth")


def test_encoder_export_round_trip(tmp_path):
    model = create_backbone("vit_tiny_patch16_224", 32, TINY).eval()
    save_encoder(tmp_path, model, EncoderSpec(name="vit_tiny_patch16_224", kwargs=TINY, img_size=32, embed_dim=64))
    loaded, spec = load_encoder(tmp_path)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x))
    assert spec.embed_dim == 64 and spec.kwargs == TINY
    with pytest.raises(GensisError, match="not an encoder run dir"):
        load_encoder(tmp_path / "nothing")


def test_replaced_encoder_weights_are_refused_naming_both_hashes(tmp_path):
    spec = EncoderSpec(name="vit_tiny_patch16_224", kwargs=TINY, img_size=32, embed_dim=64)
    save_encoder(tmp_path / "a", create_backbone("vit_tiny_patch16_224", 32, TINY), spec)
    save_encoder(tmp_path / "b", create_backbone("vit_tiny_patch16_224", 32, TINY), spec)   # other random init
    recorded = json.loads((tmp_path / "a" / "encoder.json").read_text())["sha256"]
    assert encoder_hash(tmp_path / "a") == recorded == file_hash(tmp_path / "a" / "encoder.safetensors")
    shutil.copy(tmp_path / "b" / "encoder.safetensors", tmp_path / "a" / "encoder.safetensors")
    actual = file_hash(tmp_path / "b" / "encoder.safetensors")
    for check in (encoder_hash, load_encoder):
        with pytest.raises(GensisError, match=f"sha256 {actual} but encoder.json records {recorded}"):
            check(tmp_path / "a")


def test_weights_of_another_backbone_under_a_matching_hash_are_one_line(tmp_path):
    spec = EncoderSpec(name="vit_tiny_patch16_224", kwargs=TINY, img_size=32, embed_dim=64)
    save_encoder(tmp_path, create_backbone("vit_tiny_patch16_224", 32, dict(TINY, depth=1)), spec)  # json says 2
    with pytest.raises(GensisError, match="does not fit the vit_tiny_patch16_224 backbone that encoder.json"):
        load_encoder(tmp_path)
