"""Peak memory of `gensis tile` and `gensis features` as the cohort grows (issue: it must stay flat).

    python benchmarks/cohort_memory.py [--slides 1 10] [--out benchmarks/out/cohort_memory]

Writes ``--slides`` counts of synthetic 4096 x 4096 slides (0.5 um/px; 32 px tiles at 0.5 um/px give about
9,500 tissue tiles each), tiles each cohort into a tiles.h5 in one process (workers=0) and then computes
per-slide features with an untrained 4-layer ViT-Tiny (32 px), each command under ``/usr/bin/time -v``.
Prints and writes ``cohort_memory.json``: tiles, seconds and peak RSS (MiB) per command and cohort.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(*args: str) -> dict:
    """Run ``gensis args`` under /usr/bin/time -v: seconds and peak RSS in MiB."""
    start = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "gensis", *args, "progress=false"],
                            capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    return {"seconds": round(time.perf_counter() - start, 1), "peak_rss_mib": round(peak / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slides", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "cohort_memory")
    args = parser.parse_args()
    from gensis.models.backbone import EncoderSpec, create_backbone, save_encoder
    from gensis.slides.synthetic import write_synthetic_slide

    args.out.mkdir(parents=True, exist_ok=True)
    kwargs = {"patch_size": 4, "depth": 4, "embed_dim": 192, "num_heads": 3}
    encoder = args.out / "encoder"
    if not (encoder / "encoder.json").is_file():
        save_encoder(encoder, create_backbone("vit_tiny_patch16_224", 32, kwargs),
                     EncoderSpec(name="vit_tiny_patch16_224", kwargs=kwargs, img_size=32, embed_dim=192))
    results = []
    for count in args.slides:
        slides = args.out / f"slides{count}"
        slides.mkdir(exist_ok=True)
        for index in range(count):
            if not (slides / f"s{index:03d}.svs").is_file():
                write_synthetic_slide(slides / f"s{index:03d}.svs", 4096, 4096, 0.5, seed=index)
        tiles, features = args.out / f"tiles{count}", args.out / f"features{count}"
        tile = timed("tile", f"slides={slides}", f"out={tiles}", "tile.mpp=0.5", "tile.size=32", "workers=0")
        import h5py

        with h5py.File(tiles / "tiles.h5", "r") as f:
            n_tiles = len(f["coords"])
        feats = timed("features", f"encoder={encoder}", f"tiles={tiles}", f"out={features}", "data.workers=0",
                      "data.batch_size=256", "trainer.accelerator=cpu")
        row = {"slides": count, "tiles": n_tiles, "tile": tile, "features": feats}
        print(json.dumps(row), flush=True)
        results.append(row)
    (args.out / "cohort_memory.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
