"""A real SIGKILL in the middle of a run, then the same command again: it finishes, and what it wrote
equals an uninterrupted run's (embeddings) or continues it with one history (training).

Each killed process runs the real command with one write slowed down (a sleep after each
batch), so that the kill lands while work is half done; the test kills it once the process
says it has written something."""

import csv
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import torch

from gensis.data.embeddings_store import partial_path, read_embeddings
from tests.conftest import HANG_GUARD_S, ROOT, run_cli

SLOW_EMBED = """
import time
from gensis.data import embeddings_store
write = embeddings_store.EmbeddingsWriter.write
def slow(self, start, rows):
    write(self, start, rows)
    print("wrote", start + len(rows), flush=True)
    time.sleep(0.3)
embeddings_store.EmbeddingsWriter.write = slow
"""

SLOW_TRAINING = """
import time
from gensis.training import dino_module
step = dino_module.DINOModule.training_step
def slow(self, batch, batch_idx):
    print("step", self.global_step, flush=True)
    time.sleep(0.3)
    return step(self, batch, batch_idx)
dino_module.DINOModule.training_step = slow
"""


def kill_when(patch: str, args: list[str], ready) -> str:
    """Run ``gensis args`` with ``patch`` applied; SIGKILL it once ``ready(line)`` is true of a stdout line."""
    code = patch + f"\nfrom gensis.cli import main\nraise SystemExit(main({args!r}))\n"
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    seen, deadline = [], time.monotonic() + HANG_GUARD_S
    for line in process.stdout:
        seen.append(line)
        if ready(line) or time.monotonic() > deadline:
            break
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "".join(seen)
    return "".join(seen)


def test_embed_killed_mid_run_finishes_with_the_same_embeddings(labeled_tiles, tmp_path):
    from tests.test_outputs import TINY_VIT
    from gensis.models.backbone import EncoderSpec, create_backbone, save_encoder

    torch.manual_seed(0)
    save_encoder(tmp_path / "encoder", create_backbone("vit_tiny_patch16_224", 16, TINY_VIT),
                 EncoderSpec(name="vit_tiny_patch16_224", kwargs=TINY_VIT, img_size=16, embed_dim=32))
    args = [f"encoder={tmp_path / 'encoder'}", f"data.path={labeled_tiles}", "data.batch_size=2", "data.workers=0",
            "trainer.accelerator=cpu", "progress=false"]
    whole = tmp_path / "whole.h5"
    assert run_cli("embed", *args, f"out={whole}").returncode == 0
    killed = tmp_path / "killed.h5"
    kill_when(SLOW_EMBED, ["embed", *args, f"out={killed}"], lambda line: line.startswith("wrote 8"))
    assert partial_path(killed).is_file() and not killed.exists()      # half done, nothing under the final name
    again = run_cli("embed", *args, f"out={killed}")
    assert again.returncode == 0 and "resuming: 8 of 36" in again.stdout, again.stdout + again.stderr[-1000:]
    np.testing.assert_allclose(read_embeddings(killed)[0], read_embeddings(whole)[0], rtol=1e-5, atol=1e-6)


def test_stage1_killed_mid_epoch_continues_from_its_checkpoint_with_one_history(labeled_tiles, tmp_path):
    out = tmp_path / "run"
    args = ["stage1", f"data.path={labeled_tiles}", f"out={out}", "experiment=tiny", "optim.epochs=3",
            "data.workers=0", "progress=false"]
    per_epoch = 36 // 8
    kill_when(SLOW_TRAINING, args, lambda line: line.strip() == f"step {per_epoch + 2}")   # mid epoch 2
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == per_epoch                         # the checkpoint of epoch 1
    again = run_cli(*args, "resume=true")
    assert again.returncode == 0, again.stderr[-2000:]
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == 3 * per_epoch
    steps = [int(r["step"]) for r in csv.DictReader(open(out / "metrics.csv")) if r.get("train/loss")]
    assert steps == list(range(3 * per_epoch))                       # the killed epoch's rows are replaced


SLOW_TILING = """
import time
from gensis.slides import tiling
put = tiling.put_tiles
def slow(writer, rows, images):
    put(writer, rows, images)
    print("put", writer.file.filename, len(rows), flush=True)
    time.sleep(0.3)
tiling.put_tiles = slow
"""


def test_tile_killed_mid_slide_finishes_with_the_same_store(synthetic_slide, tmp_path):
    import h5py

    slides = tmp_path / "slides"
    slides.mkdir()
    for name in ("a", "b"):
        os.symlink(synthetic_slide, slides / f"{name}.svs")
    args = [f"slides={slides}", "experiment=tiny", "workers=0", "progress=false"]
    assert run_cli("tile", *args, f"out={tmp_path / 'whole'}").returncode == 0
    killed = tmp_path / "killed"
    kill_when(SLOW_TILING, ["tile", *args, f"out={killed}"], lambda line: line.startswith("put") and "b.h5" in line)
    assert not (killed / "tiles.h5").exists() and (killed / "tiles.parts" / "a.h5").is_file()   # a done, b not
    again = run_cli("tile", *args, f"out={killed}")
    assert again.returncode == 0 and "1 slide(s) already tiled" in again.stdout, again.stdout + again.stderr
    with h5py.File(tmp_path / "whole" / "tiles.h5") as whole, h5py.File(killed / "tiles.h5") as resumed:
        for key in ("images", "coords", "slide", "label"):
            np.testing.assert_array_equal(resumed[key][:], whole[key][:], err_msg=key)
    assert not [p for p in killed.rglob("*") if ".tmp-" in p.name]


SLOW_DIFFUSION = """
import time
from stages import stage2
step = stage2.DiffusionModule.training_step
def slow(self, batch, batch_idx):
    print("step", self.global_step, flush=True)
    time.sleep(0.3)
    return step(self, batch, batch_idx)
stage2.DiffusionModule.training_step = slow
"""


def test_stage2_killed_mid_epoch_continues_from_its_checkpoint_with_one_history(labeled_tiles, tmp_path):
    from gensis.models.backbone import EncoderSpec, create_backbone, save_encoder
    from tests.test_outputs import TINY_VIT

    save_encoder(tmp_path / "encoder", create_backbone("vit_tiny_patch16_224", 16, TINY_VIT),
                 EncoderSpec(name="vit_tiny_patch16_224", kwargs=TINY_VIT, img_size=16, embed_dim=32))
    out = tmp_path / "run"
    args = ["stage2", f"data.path={labeled_tiles}", f"encoder={tmp_path / 'encoder'}", f"out={out}",
            "experiment=tiny", "train.epochs=3", "data.workers=0", "progress=false", "unet.cross_attention_dim=32"]
    per_epoch = 36 // 8
    kill_when(SLOW_DIFFUSION, args, lambda line: line.strip() == f"step {per_epoch + 2}")     # mid epoch 2
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == per_epoch
    again = run_cli(*args, "resume=true")
    assert again.returncode == 0, again.stderr[-2000:]
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == 3 * per_epoch
    steps = [int(r["step"]) for r in csv.DictReader(open(out / "metrics.csv")) if r.get("train/loss")]
    assert steps == list(range(3 * per_epoch))
    assert (out / "pipeline" / "model_index.json").is_file()
