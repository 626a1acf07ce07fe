import csv
import importlib.util
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests import forked_cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def seeded_global_rng():
    """Every test starts from the same state of torch's, numpy's and Python's global RNGs, so a test's
    unseeded draws do not depend on which tests ran before it (or on -k / -x)."""
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_path()
    if not (path / "slides").is_dir():
        pytest.skip(f"shared test data not found at {path} (set GENSIS_TEST_DATA)")
    return path


def shared_data_path() -> Path:
    return Path(os.environ.get("GENSIS_TEST_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def labeled_tiles(tmp_path_factory):
    """36 labeled tiles, 3 classes x 4 groups of 3 near neighbours, with groups.csv: real lung tiles from
    lc25000_lung_dev when the shared data is there, else tiles of the synthetic slide's textures (so that
    every end-to-end test runs on a fresh machine)."""
    source = shared_data_path() / "tiles" / "lc25000_lung_dev"
    root = tmp_path_factory.mktemp("labeled")
    if source.is_dir():
        rows = list(csv.DictReader(open(source / "groups.csv")))
        keep = []
        for label in ("lung_aca", "lung_n", "lung_scc"):  # 4 groups of 3 near-duplicates per class
            groups = sorted({r["group"] for r in rows if r["label"] == label})[:4]
            for group in groups:
                keep += [r for r in rows if r["group"] == group][:3]
        for row in keep:
            (root / row["file"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source / row["file"], root / row["file"])
    else:
        keep = synthetic_labeled_tiles(tmp_path_factory.mktemp("labeled_source"), root)
    with open(root / "groups.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "label", "group"])
        writer.writeheader()
        writer.writerows(keep)
    return root


def synthetic_labeled_tiles(work: Path, root: Path) -> list[dict]:
    """Tile a small synthetic slide and keep 12 tiles of 3 of its textures, groups of 3 neighbouring tiles."""
    from PIL import Image

    from gensis.config.tile import TileConfig, TileParams
    from gensis.data.tile_source import open_tiles
    from gensis.slides.synthetic import write_synthetic_slide
    from gensis.slides.tiling import run_tiling

    slide = write_synthetic_slide(work / "labeled.svs", 1024, 1024, 0.5)
    run_tiling(TileConfig(slides=str(slide), out=str(work / "tiling"), tile=TileParams(mpp=0.5, size=64),
                          workers=0, progress=False), log=lambda *a: None)
    tiles = open_tiles(work / "tiling" / "tiles.h5")
    import h5py

    with h5py.File(work / "tiling" / "tiles.h5") as f:
        labels = f["label"][:]
    keep = []
    for label in (0, 1, 3):   # nuclei, stroma, mucus: told apart by texture and colour
        members = np.flatnonzero(labels == label)[:12]
        assert len(members) == 12, f"synthetic slide: only {len(members)} tiles of class {tiles.classes[label]}"
        for n, index in enumerate(members):
            name = tiles.classes[label]
            file = f"{name}/{tiles.keys[index].replace('/', '_')}.png"
            (root / name).mkdir(exist_ok=True)
            Image.fromarray(tiles.load(int(index))).save(root / file)
            keep.append({"file": file, "label": name, "group": f"{name}_{n // 3}"})
    return keep


@pytest.fixture(scope="session")
def synthetic_slide(tmp_path_factory) -> Path:
    """A small synthetic slide (1024 px at 0.5 um/px, levels 1x and 4x) with its label map."""
    from gensis.slides.synthetic import write_synthetic_slide

    return write_synthetic_slide(tmp_path_factory.mktemp("synthetic") / "synthetic.svs", 1024, 1024, 0.5)


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """``gensis demo experiment=tiny``: the whole pipeline on a small synthetic slide (its stdout is kept)."""
    root = tmp_path_factory.mktemp("demo")
    result = run_cli("demo", f"out={root / 'demo'}", "experiment=tiny", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    (root / "first_run.log").write_text(result.stdout)
    return root / "demo"


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    """The module of the script ``benchmarks/<name>.py`` (benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HANG_GUARD_S = 1800  # against a hang only: a slow or busy machine must never fail a test


def run_cli(*args, cwd=None, env=None):
    """Run ``gensis`` in a fresh process (``env``: extra environment variables); returns the CompletedProcess.
    The process is forked from one that has already imported torch and the rest (tests/forked_cli.py)."""
    return forked_cli.run_cli([str(a) for a in args], cwd=cwd, env=env, timeout=HANG_GUARD_S)


def pytest_sessionfinish(session, exitstatus):
    forked_cli.stop()


SAVE_EACH_RANKS_TEACHER = """
import os, torch
from gensis.training import dino_module
def on_train_end(self):
    state = {k: v.detach().cpu().clone() for k, v in self.teacher.state_dict().items()}
    torch.save(state, os.path.join(os.environ["GENSIS_TEST_TEACHERS"], f"rank{self.global_rank}.pt"))
dino_module.DINOModule.on_train_end = on_train_end
"""


def run_saving_each_ranks_teacher(tmp_path, *args):
    """Run ``gensis *args`` with a ``sitecustomize`` that makes every process (the DDP ranks too) save its
    teacher's weights at the end of training; returns (CompletedProcess, [state dict per rank])."""
    hooks, saved = tmp_path / "hooks", tmp_path / "teachers"
    hooks.mkdir()
    saved.mkdir()
    (hooks / "sitecustomize.py").write_text(SAVE_EACH_RANKS_TEACHER)
    path = os.pathsep.join([str(hooks), *filter(None, [os.environ.get("PYTHONPATH")])])
    result = run_cli(*args, env={"PYTHONPATH": path, "GENSIS_TEST_TEACHERS": str(saved)})
    states = [torch.load(p, weights_only=True) for p in sorted(saved.glob("rank*.pt"))]
    return result, states
