import os
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
def synthetic_slide(tmp_path_factory) -> Path:
    """A small synthetic slide (1024 px at 0.5 um/px, levels 1x and 4x) with its label map."""
    from gensis.slides.synthetic import write_synthetic_slide

    return write_synthetic_slide(tmp_path_factory.mktemp("synthetic") / "synthetic.svs", 1024, 1024, 0.5)


def run_cli(*args, cwd=None):
    """Run ``gensis`` in a fresh process; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "gensis", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)
