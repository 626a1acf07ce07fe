"""Tiling speed: gensis against peer tilers (hs2p, LazySlide) on one synthetic slide.

Every tool gets the same slide (gensis's synthetic H&E-like slide, 40,960 x 40,960 px at
0.25 um/px by default), the same target (224 px tiles at 0.5 um/px, keeping tiles that are at
least half tissue by the tool's own tissue detection), the same worker count and the same
job: write every kept tile to disk as a JPEG (quality 90). Each run is one process tree,
timed from launch to exit (imports included) while its summed RSS is sampled every 0.1 s.
The tiles each peer keeps are compared with gensis's by their level-0 coordinates.

Peers live in their own virtualenv (``benchmarks/.venv-peers``, git-ignored), never in
gensis's environment; each peer runs ``benchmarks/tiling_peer_driver.py`` there.

    python benchmarks/tiling.py --setup-peers                  # once: create the peers' venv
    python benchmarks/tiling.py                                # make/reuse the slide, run, report
    python benchmarks/tiling.py --repeat 3 --update-md BENCHMARKS.md

Run it with gensis's interpreter (the one whose ``gensis`` command is benchmarked).
Results: a table on stdout, ``benchmarks/out/tiling.json`` and, with ``--update-md``, the
"## Tiling speed" section of that Markdown file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DRIVER = HERE / "tiling_peer_driver.py"
REQUIREMENTS = HERE / "peers_requirements.txt"
SECTION = "## Tiling speed"
PEERS = ("hs2p", "lazyslide")
GOAL = 1.5  # the project's goal: gensis at least this many times the tiles/s of the fastest peer
SAME_TILES = 0.9  # Jaccard of tile selections above which two tools count as keeping the same tiles


def rel(path) -> str:
    """``path`` relative to the repository root when inside it (never a machine path in reports)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return path.name


# ----------------------------------------------------------------------------------------
# setup

def setup_peers(venv: Path, requirements: Path) -> None:
    """Create the peers' virtualenv and install the pinned peers into it."""
    if not (venv / "bin" / "python").exists():
        print(f"creating {rel(venv)}")
        subprocess.run([shutil.which("python3") or sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    subprocess.run(pip + ["install", "-q", "-U", "pip"], check=True)
    subprocess.run(pip + ["install", "-r", str(requirements)], check=True)
    print(f"peers installed in {rel(venv)}:")
    for name in PEERS:
        found = subprocess.run(pip + ["show", name], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        version = re.search(r"^Version: (.+)$", found.stdout, re.M)
        print(f"  {name:12s} {version.group(1) if version else '(not installed)'}")


def ensure_slide(path: Path, size: int, mpp: float, gensis: str) -> None:
    """Write gensis's synthetic slide once with ``gensis synth`` (minutes at 40k x 40k); reuse it after."""
    if path.is_file():
        print(f"slide: reusing {rel(path)} ({path.stat().st_size / 2**20:.0f} MiB)")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [gensis, "synth", f"out={path}", f"width={size}", f"height={size}", f"mpp={mpp}", "level_factor=4",
           "progress=false"]
    print(f"slide: writing {rel(path)} with gensis synth ({size} x {size} px at {mpp} um/px; takes minutes)",
          flush=True)
    started = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"slide: written in {time.perf_counter() - started:.0f} s", flush=True)


def gensis_source() -> dict:
    """Which gensis was timed: its version, the repository commit and whether gensis/ had local edits."""
    from importlib.metadata import version

    info = {"version": version("gensis")}
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "gensis"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, check=True).stdout.strip()
        info.update(commit=head, uncommitted_changes_in_gensis=bool(dirty))
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def warm_cache(path: Path) -> None:
    """Read the slide once so that every run starts with it in the page cache."""
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


# ----------------------------------------------------------------------------------------
# one timed run

def monitored_run(cmd: list[str], log_path: Path, env: dict, interval: float = 0.1) -> dict:
    """Run ``cmd``; wall time, peak summed RSS of its process tree, CPU seconds of the tree."""
    import psutil

    with open(log_path, "w") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        root = psutil.Process(proc.pid)
        peak = 0
        max_procs = 0
        while True:
            done, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if done:
                break
            total, count = 0, 0
            try:
                members = [root] + root.children(recursive=True)
            except psutil.NoSuchProcess:
                members = []
            for member in members:
                try:
                    total += member.memory_info().rss
                    count += 1
                except psutil.NoSuchProcess:
                    pass
            peak, max_procs = max(peak, total), max(max_procs, count)
            time.sleep(interval)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"wall_s": wall, "peak_rss_mib": peak / 2**20, "cpu_s": usage.ru_utime + usage.ru_stime,
            "max_processes": max_procs, "returncode": proc.returncode}


def run_gensis(gensis: str, slide: Path, out: Path, args) -> dict:
    cmd = [gensis, "tile", f"slides={slide}", f"out={out}", f"tile.mpp={args.mpp}", f"tile.size={args.size}",
           "tile.format=jpg", f"workers={args.workers}", f"tile.min_tissue={args.min_tissue}",
           f"tile.jpeg_quality={args.jpeg_quality}", "progress=false"]
    stats = monitored_run(cmd, out.parent / f"{out.name}.log", dict(os.environ))
    text = (out.parent / f"{out.name}.log").read_text()
    if stats["returncode"] != 0:
        raise RuntimeError(f"gensis tile failed (exit {stats['returncode']}):\n{text[-3000:]}")
    import h5py
    import numpy as np

    name = slide.stem
    with h5py.File(out / "coords" / f"{name}.h5", "r") as f:
        coords = np.asarray(f["coords"][:], np.int64).reshape(-1, 2)
    files = list((out / "tiles" / name).glob("*.jpg"))
    reported = re.search(r"tiles in ([0-9.]+) s", text)
    from importlib.metadata import version

    return dict(stats, tool="gensis", version=version("gensis"), command=_show(cmd), coords=coords,
                tiles=len(files), bytes=sum(p.stat().st_size for p in files),
                internal_s={"total": float(reported.group(1))} if reported else {},
                tile_format="one JPEG file per tile (gensis tile.format=jpg)")


def run_peer(tool: str, python: Path, slide: Path, out: Path, args) -> dict:
    import numpy as np

    cmd = [str(python), str(DRIVER), tool, "--slide", str(slide), "--out", str(out), "--mpp", str(args.mpp),
           "--size", str(args.size), "--workers", str(args.workers), "--min-tissue", str(args.min_tissue),
           "--jpeg-quality", str(args.jpeg_quality)]
    env = dict(os.environ, WANDB_MODE="disabled", HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    log = out.parent / f"{out.name}.log"
    stats = monitored_run(cmd, log, env)
    text = log.read_text()
    found = [line for line in text.splitlines() if line.startswith("PEER_SUMMARY ")]
    if stats["returncode"] != 0 or not found:
        raise RuntimeError(f"{tool} failed (exit {stats['returncode']}):\n{text[-3000:]}")
    summary = json.loads(found[-1][len("PEER_SUMMARY "):])
    coords = np.load(out / "coords.npy").astype(np.int64).reshape(-1, 2)
    tiles, size = _count_jpegs(out / summary["tile_output"])
    return dict(stats, tool=tool, version=summary["version"], command=_show(cmd), coords=coords, tiles=tiles,
                bytes=size, internal_s=summary["seconds"], tile_format=summary["tile_format"])


def _count_jpegs(path: Path) -> tuple[int, int]:
    """JPEG tiles on disk (files in a folder, or members of a tar) and their bytes."""
    if path.is_dir():
        files = list(path.glob("*.jpg"))
        return len(files), sum(p.stat().st_size for p in files)
    with tarfile.open(path) as tar:
        members = [m for m in tar.getmembers() if m.name.endswith(".jpg")]
    return len(members), sum(m.size for m in members)


def _show(cmd: list[str]) -> str:
    return " ".join(shlex.quote(rel(c) if os.path.isabs(c) and Path(c).exists() else _rel_arg(c)) for c in cmd)


def _rel_arg(arg: str) -> str:
    key, sep, value = arg.partition("=")
    if sep and os.path.isabs(value):
        return f"{key}={rel(value)}"
    return arg


# ----------------------------------------------------------------------------------------
# agreement of tissue selections

def agreement(reference, other, tile_level0: float) -> dict:
    """Match ``other``'s tiles to ``reference``'s: same (x, y), or nearest within half a tile.

    One-to-one: a reference tile is matched at most once. Returns counts, the fraction of
    reference tiles the other also selected (recall), the fraction of the other's tiles that
    the reference selected (precision) and the Jaccard index of the two selections.
    """
    import numpy as np

    half = tile_level0 / 2.0
    ref = np.asarray(reference, np.int64).reshape(-1, 2)
    oth = np.asarray(other, np.int64).reshape(-1, 2)
    exact = len({tuple(c) for c in ref.tolist()} & {tuple(c) for c in oth.tolist()})
    buckets: dict[tuple[int, int], list[int]] = {}
    cell = max(1.0, tile_level0)
    for i, (x, y) in enumerate(ref.tolist()):
        buckets.setdefault((int(x // cell), int(y // cell)), []).append(i)
    used = np.zeros(len(ref), bool)
    matched = 0
    for x, y in oth.tolist():
        bx, by = int(x // cell), int(y // cell)
        best, best_d = -1, None
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for i in buckets.get((bx + dx, by + dy), ()):
                    if used[i]:
                        continue
                    ddx, ddy = abs(ref[i, 0] - x), abs(ref[i, 1] - y)
                    if ddx <= half and ddy <= half:
                        d = ddx * ddx + ddy * ddy
                        if best_d is None or d < best_d:
                            best, best_d = i, d
        if best >= 0:
            used[best] = True
            matched += 1
    union = len(ref) + len(oth) - matched
    return {"exact_same_xy": exact, "matched": matched,
            "recall_of_gensis": matched / len(ref) if len(ref) else 1.0,
            "precision_vs_gensis": matched / len(oth) if len(oth) else 1.0,
            "jaccard": matched / union if union else 1.0}


def tiles_per_class(slide: Path, coords, tile_level0: float) -> dict | None:
    """Kept tiles per tissue class of the synthetic slide, from its label map (class at the tile centre)."""
    import numpy as np
    from PIL import Image

    png, meta = slide.with_name(slide.stem + ".labels.png"), slide.with_name(slide.stem + ".labels.json")
    if not (png.is_file() and meta.is_file()):
        return None
    info = json.loads(meta.read_text())
    labels = np.asarray(Image.open(png))
    coords = np.asarray(coords, np.float64).reshape(-1, 2)
    cx = np.clip(((coords[:, 0] + tile_level0 / 2) / info["downsample"]).astype(int), 0, labels.shape[1] - 1)
    cy = np.clip(((coords[:, 1] + tile_level0 / 2) / info["downsample"]).astype(int), 0, labels.shape[0] - 1)
    values = labels[cy, cx].astype(int)
    names = ["background"] + list(info["classes"])
    counts = np.bincount(values, minlength=len(names))
    return {name: int(counts[i]) for i, name in enumerate(names)}


# ----------------------------------------------------------------------------------------
# report

def compare(results: list[dict], coords: dict, slide: Path, tile_level0: float) -> None:
    """Add each tool's agreement with gensis and its tiles per tissue class to ``results``."""
    for r in results:
        r["tiles_per_class"] = tiles_per_class(slide, coords[r["tool"]], tile_level0)
        if r["tool"] != "gensis" and "gensis" in coords:
            r["agreement"] = agreement(coords["gensis"], coords[r["tool"]], tile_level0)


def notes(results: list[dict]) -> list[str]:
    """Plain-words remarks on what the table alone does not say."""
    out = []
    gensis = next((r for r in results if r["tool"] == "gensis"), None)
    for r in results:
        if r["tool"] == "gensis" or gensis is None:
            continue
        if r["agreement"]["jaccard"] < SAME_TILES:
            missing = []
            if r.get("tiles_per_class") and gensis.get("tiles_per_class"):
                for name, n in gensis["tiles_per_class"].items():
                    theirs = r["tiles_per_class"].get(name, 0)
                    if name != "background" and n and theirs < 0.5 * n:
                        missing.append(f"{name} ({theirs} tiles vs gensis {n})")
            out.append(f"{r['tool']} keeps a different selection (Jaccard {r['agreement']['jaccard']:.3f})"
                       + (f": its tissue detection drops {', '.join(missing)}" if missing else "")
                       + f", so its tiles/s is over {r['tiles']} tiles, not gensis's {gensis['tiles']}; per tile of "
                       f"CPU it costs {r['cpu_ms_per_tile']:.1f} ms against gensis's {gensis['cpu_ms_per_tile']:.1f} ms.")
    return out


def machine() -> dict:
    import psutil

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = "none"
    if shutil.which("nvidia-smi"):
        found = subprocess.run(["nvidia-smi", "-L"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        gpu = found.stdout.strip() or "none"
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "gpu": gpu, "os": f"{platform.system()} {platform.release()}", "python": platform.python_version()}


def summarize(runs: list[dict]) -> dict:
    """Median over repeats of a tool's runs."""
    first = runs[0]
    wall = statistics.median(r["wall_s"] for r in runs)
    middle = sorted(runs, key=lambda r: r["wall_s"])[(len(runs) - 1) // 2]
    return {"tool": first["tool"], "version": first["version"], "tiles": first["tiles"],
            "wall_s": wall, "tiles_per_s": first["tiles"] / wall if wall else 0.0,
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
            "cpu_s": statistics.median(r["cpu_s"] for r in runs),
            "cpu_ms_per_tile": 1000 * statistics.median(r["cpu_s"] for r in runs) / max(1, first["tiles"]),
            "internal_s": middle["internal_s"], "repeats": [round(r["wall_s"], 2) for r in runs],
            "bytes": first["bytes"], "tile_format": first["tile_format"], "command": first["command"]}


def table(results: list[dict]) -> list[str]:
    head = ["tool", "version", "tiles written", "wall s", "tiles/s", "gensis speed-up", "peak RSS MiB",
            "CPU s", "CPU ms/tile", "Jaccard vs gensis", "gensis tiles also kept"]
    gensis = next((r for r in results if r["tool"] == "gensis"), None)
    rows = []
    for r in results:
        agree = r.get("agreement")
        speedup = (gensis["tiles_per_s"] / r["tiles_per_s"]) if gensis and r["tiles_per_s"] else float("nan")
        rows.append([r["tool"], r["version"], str(r["tiles"]), f"{r['wall_s']:.1f}", f"{r['tiles_per_s']:.1f}",
                     "1.00x" if r["tool"] == "gensis" else f"{speedup:.2f}x", f"{r['peak_rss_mib']:.0f}",
                     f"{r['cpu_s']:.1f}", f"{r['cpu_ms_per_tile']:.1f}", "1.000" if r["tool"] == "gensis" else f"{agree['jaccard']:.3f}",
                     "100.0%" if r["tool"] == "gensis" else f"{100 * agree['recall_of_gensis']:.1f}%"])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def verdict(results: list[dict]) -> str:
    gensis = next((r for r in results if r["tool"] == "gensis"), None)
    peers = [r for r in results if r["tool"] != "gensis"]
    if gensis is None or not peers:
        return "no verdict (needs gensis and at least one peer)"
    fastest = max(peers, key=lambda r: r["tiles_per_s"])
    ratio = gensis["tiles_per_s"] / fastest["tiles_per_s"]
    text = (f"gensis {gensis['tiles_per_s']:.1f} tiles/s vs the fastest peer, {fastest['tool']}, "
            f"{fastest['tiles_per_s']:.1f} tiles/s: {ratio:.2f}x (tile selection Jaccard "
            f"{fastest['agreement']['jaccard']:.3f})")
    same = [r for r in peers if r["agreement"]["jaccard"] >= SAME_TILES]
    if same and fastest not in same:
        best = max(same, key=lambda r: r["tiles_per_s"])
        text += (f"; vs the fastest peer keeping the same tiles (Jaccard >= {SAME_TILES}), {best['tool']}, "
                 f"{best['tiles_per_s']:.1f} tiles/s: {gensis['tiles_per_s'] / best['tiles_per_s']:.2f}x")
    met = ratio >= GOAL and all(gensis["tiles_per_s"] >= GOAL * r["tiles_per_s"] for r in peers)
    return text + f". Goal {GOAL}x: {'met' if met else 'NOT met'}"


def markdown_section(report: dict, argv: list[str]) -> str:
    m, p = report["machine"], report["params"]
    lines = [SECTION, "",
             f"Measured {report['date']} on {m['cores']} CPU cores ({m['cpu']}), {m['memory_gib']} GiB RAM, "
             f"no GPU, Python {m['python']}. gensis {_describe_source(report.get('gensis', {}))}.",
             "",
             f"One synthetic slide from `gensis synth` ({p['slide_px']} x {p['slide_px']} px at {p['slide_mpp']} um/px, "
             f"{p['slide_mib']:.0f} MiB, Aperio-style JPEG TIFF), tiled by every tool at {p['mpp']} um/px into "
             f"{p['size']} px tiles, keeping tiles at least {p['min_tissue']:.0%} tissue by the tool's own tissue "
             f"detection, with {p['workers']} workers, every kept tile written to disk as JPEG (quality "
             f"{p['jpeg_quality']}). Wall time is the whole process from launch to exit (imports included, page "
             f"cache warm), the median of {p['repeat']} run(s); peak memory is the summed RSS of the process tree "
             f"sampled every 0.1 s (shared pages of forked workers count once per process); CPU s is user + system "
             f"time of the tree. Agreement compares each peer's tile level-0 coordinates with gensis's, matching the "
             f"same (x, y) or the nearest tile within half a tile.",
             ""]
    lines += table(report["results"])
    lines += ["", f"Goal: gensis at least {GOAL}x the tiles/s of the fastest peer with the same tiles kept. "
              f"Result: {report['verdict']}.", ""]
    if report.get("notes"):
        lines += ["Notes:", ""] + [f"- {n}" for n in report["notes"]] + [""]
    classes = [r for r in report["results"] if r.get("tiles_per_class")]
    if classes:
        names = list(classes[0]["tiles_per_class"])
        lines += ["Tiles kept per tissue class of the synthetic slide (class at the tile centre, from its label map):",
                  "", "| tool | " + " | ".join(names) + " |", "|" + "|".join("---" for _ in range(len(names) + 1)) + "|"]
        lines += ["| " + r["tool"] + " | " + " | ".join(str(r["tiles_per_class"].get(n, 0)) for n in names) + " |"
                  for r in classes]
        lines.append("")
    lines += ["How each tool ran:", ""]
    for r in report["results"]:
        extra = ", ".join(f"{k} {v:.1f} s" for k, v in r["internal_s"].items())
        lines.append(f"- {r['tool']} {r['version']}: {r['tile_format']}"
                     + (f"; its own timing: {extra}" if extra else "")
                     + (f"; exact same (x, y) as gensis: {r['agreement']['exact_same_xy']}, "
                        f"peer tiles also kept by gensis: {100 * r['agreement']['precision_vs_gensis']:.1f}%"
                        if r.get("agreement") else ""))
    lines += ["", "Reproduce (from the repository root, with gensis's virtualenv active):", "", "```bash",
              "python benchmarks/tiling.py --setup-peers   # once: peers into benchmarks/.venv-peers "
              "(benchmarks/peers_requirements.txt)",
              "python benchmarks/tiling.py " + " ".join(shlex.quote(a) for a in argv),
              "```", "",
              "The slide is cached in `benchmarks/out/` (writing it takes many minutes); raw numbers go to "
              "`benchmarks/out/tiling.json`.", ""]
    return "\n".join(lines)


def _describe_source(info: dict) -> str:
    text = info.get("version", "?")
    if info.get("commit"):
        text += f" at commit {info['commit']}"
        if info.get("uncommitted_changes_in_gensis"):
            text += " plus uncommitted changes in gensis/"
    return text


def update_markdown(path: Path, section: str) -> None:
    text = path.read_text() if path.is_file() else "# gensis benchmarks\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == SECTION), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        before = "\n".join(lines[:start]).rstrip("\n")
        after = "\n".join(lines[end:])
        new = (before + "\n\n" if before else "") + section.rstrip("\n") + "\n" + ("\n" + after + "\n" if after else "")
    path.write_text(new)
    print(f"updated the '{SECTION}' section of {rel(path)}")


# ----------------------------------------------------------------------------------------

def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setup-peers", action="store_true", help="create the peers' venv and install them, then exit")
    parser.add_argument("--peers-venv", type=Path, default=HERE / ".venv-peers")
    parser.add_argument("--requirements", type=Path, default=REQUIREMENTS)
    parser.add_argument("--out", type=Path, default=HERE / "out", help="slide cache, tile outputs, logs, tiling.json")
    parser.add_argument("--slide", type=Path, default=None, help="default: OUT/synthetic-<px>.svs (made if absent)")
    parser.add_argument("--slide-px", type=int, default=40960)
    parser.add_argument("--slide-mpp", type=float, default=0.25)
    parser.add_argument("--make-slide-only", action="store_true", help="write (or find) the slide, then exit")
    parser.add_argument("--tools", default="gensis,hs2p,lazyslide", help=f"comma list of gensis,{','.join(PEERS)}")
    parser.add_argument("--mpp", type=float, default=0.5)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--min-tissue", type=float, default=0.5)
    parser.add_argument("--jpeg-quality", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=1, help="runs per tool (round-robin); the median is reported")
    parser.add_argument("--gensis", default=None, help="the gensis command (default: next to this Python)")
    parser.add_argument("--update-md", type=Path, default=None, help="write the table into this Markdown file")
    parser.add_argument("--keep-tiles", action="store_true", help="keep the tiles of the last run of each tool")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="no runs: re-print (and with --update-md re-write) the report of this tiling.json")
    args = parser.parse_args(argv)

    if args.setup_peers:
        setup_peers(args.peers_venv, args.requirements)
        return 0

    if args.from_json:
        report = json.loads(args.from_json.read_text())
        saved = args.from_json.with_name("tiling-coords.npz")
        if saved.is_file():
            import numpy as np

            with np.load(saved) as data:
                coords = {k: data[k] for k in data.files}
            compare(report["results"], coords, ROOT / report["params"]["slide"], report["params"]["tile_level0_px"])
        report["verdict"] = verdict(report["results"])
        report["notes"] = notes(report["results"])
        _finish(report, args, report.get("argv", []), write_json=args.from_json)
        return 0

    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in tools if t not in ("gensis",) + PEERS]
    if unknown:
        parser.error(f"unknown tool(s): {', '.join(unknown)}")
    gensis = args.gensis or str(Path(sys.executable).with_name("gensis"))
    if not Path(gensis).exists() and not shutil.which(gensis):
        parser.error(f"gensis command not found ({gensis}); run this with gensis's interpreter or pass --gensis")
    peer_python = args.peers_venv / "bin" / "python"
    if any(t in PEERS for t in tools) and not peer_python.exists():
        parser.error(f"no peers venv at {rel(args.peers_venv)}: run  python {rel(__file__)} --setup-peers")

    args.out.mkdir(parents=True, exist_ok=True)
    slide = (args.slide or args.out / f"synthetic-{args.slide_px}.svs").resolve()
    ensure_slide(slide, args.slide_px, args.slide_mpp, gensis)
    if args.make_slide_only:
        return 0
    source = gensis_source()  # before the runs: the code that is timed
    runs_dir = args.out / "tiling-runs"
    runs: dict[str, list[dict]] = {t: [] for t in tools}
    for repeat in range(args.repeat):
        for tool in tools:
            out = (runs_dir / tool).resolve()
            shutil.rmtree(out, ignore_errors=True)  # gensis resumes, hs2p may too: always start empty
            out.parent.mkdir(parents=True, exist_ok=True)
            warm_cache(slide)
            print(f"[{repeat + 1}/{args.repeat}] {tool} ...", flush=True)
            if tool == "gensis":
                result = run_gensis(gensis, slide, out, args)
            else:
                result = run_peer(tool, peer_python, slide, out, args)
            print(f"    {result['tiles']} tiles in {result['wall_s']:.1f} s ({result['tiles'] / result['wall_s']:.1f} "
                  f"tiles/s), peak RSS {result['peak_rss_mib']:.0f} MiB, CPU {result['cpu_s']:.1f} s", flush=True)
            runs[tool].append(result)
            if not args.keep_tiles or repeat + 1 < args.repeat:
                for sub in ("tiles", "slide.zarr"):
                    shutil.rmtree(out / sub, ignore_errors=True)

    results = [summarize(runs[t]) for t in tools]
    tile_level0 = args.size * args.mpp / args.slide_mpp
    coords = {t: runs[t][0]["coords"] for t in tools}
    import numpy as np

    np.savez_compressed(args.out / "tiling-coords.npz", **coords)
    compare(results, coords, slide, tile_level0)
    report = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "gensis": source,
              "params": {"slide": rel(slide), "slide_px": args.slide_px, "slide_mpp": args.slide_mpp,
                         "slide_mib": slide.stat().st_size / 2**20, "mpp": args.mpp, "size": args.size,
                         "workers": args.workers, "min_tissue": args.min_tissue, "jpeg_quality": args.jpeg_quality,
                         "repeat": args.repeat, "tile_level0_px": tile_level0},
              "results": results}
    report["verdict"] = verdict(results)
    report["notes"] = notes(results)
    report["argv"] = _drop_option_values(argv, ("--update-md", "--from-json"))
    _finish(report, args, report["argv"], write_json=args.out / "tiling.json")
    return 0


def _finish(report: dict, args, argv: list[str], write_json: Path) -> None:
    print()
    print("\n".join(table(report["results"])))
    print()
    print(report["verdict"])
    write_json.write_text(json.dumps(report, indent=2))
    print(f"wrote {rel(write_json)}")
    if args.update_md:
        update_markdown(args.update_md, markdown_section(report, argv + ["--update-md", rel(args.update_md)]))


def _drop_option_values(argv: list[str], options: tuple[str, ...]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in options:
            skip = True
            continue
        if any(a.startswith(o + "=") for o in options):
            continue
        out.append(rel(a) if os.path.isabs(a) else a)
    return out


if __name__ == "__main__":
    sys.exit(main())
