import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = Path(os.environ.get("GENSIS_TEST_DATA", ROOT.parent / "shared" / "data"))
    if not (path / "slides").is_dir():
        pytest.skip(f"shared test data not found at {path} (set GENSIS_TEST_DATA)")
    return path


@pytest.fixture(scope="session")
def lung_tiles(shared_data, tmp_path_factory):
    """12 real tiles per class from lc25000_lung_dev, with their groups.csv rows."""
    source = shared_data / "tiles" / "lc25000_lung_dev"
    root = tmp_path_factory.mktemp("lung")
    rows = list(csv.DictReader(open(source / "groups.csv")))
    keep = []
    for label in ("lung_aca", "lung_n", "lung_scc"):  # 4 groups of 3 near-duplicates per class
        groups = sorted({r["group"] for r in rows if r["label"] == label})[:4]
        for group in groups:
            keep += [r for r in rows if r["group"] == group][:3]
    for row in keep:
        (root / row["file"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / row["file"], root / row["file"])
    with open(root / "groups.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "label", "group"])
        writer.writeheader()
        writer.writerows(keep)
    return root


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


HANG_GUARD_S = 1800  # against a hang only: a slow or busy machine must never fail a test


def run_cli(*args, cwd=None):
    """Run ``gensis`` in a fresh process; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "gensis", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=HANG_GUARD_S)
