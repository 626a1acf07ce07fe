"""Turn ``slides=`` (a file, a folder, a glob or a CSV) into a list of slides to tile."""

from __future__ import annotations

import csv
import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from gensis.errors import GensisError
from gensis.slides.reader import slide_name

SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif",
                  ".btf", ".qptiff", ".dcm")


@dataclass(frozen=True)
class SlideEntry:
    path: Path
    name: str
    mpp: Optional[float] = None   # from the CSV's mpp column


def _is_slide(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in SLIDE_SUFFIXES and not path.name.startswith(".")


def find_slides(spec: str) -> list[SlideEntry]:
    """Slides named by ``spec``; one clear error when there are none or names clash."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.suffix.lower() == ".csv":
        entries = _from_csv(path)
    elif path.is_dir():   # an existing file or folder is taken as named, even with [ ] * ? in its name
        entries = [SlideEntry(p, slide_name(p)) for p in sorted(path.rglob("*")) if _is_slide(p)]
    elif path.is_file():
        entries = [SlideEntry(path, slide_name(path))]
    elif any(ch in text for ch in "*?["):
        entries = [SlideEntry(Path(p), slide_name(p)) for p in sorted(glob.glob(text, recursive=True))
                   if _is_slide(Path(p))]
    else:
        raise GensisError(f"slides={spec}: no such file or folder")
    if not entries:
        raise GensisError(f"slides={spec}: no slides found (looked for {', '.join(SLIDE_SUFFIXES)})")
    seen: dict[str, Path] = {}
    for entry in entries:
        if entry.name in seen:
            raise GensisError(f"slides={spec}: two slides share the name '{entry.name}' ({seen[entry.name]} and "
                              f"{entry.path}); rename one, outputs are named after the slide")
        seen[entry.name] = entry.path
    return entries


def _from_csv(path: Path) -> list[SlideEntry]:
    if not path.is_file():
        raise GensisError(f"slides={path}: no such CSV file")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise GensisError(f"{path}: a slides CSV needs a 'path' column (and optionally 'mpp'), "
                              f"found columns {reader.fieldnames}")
        entries = []
        for line, row in enumerate(reader, start=2):
            if None in row:
                raise GensisError(f"{path}, line {line}: more fields than the {len(reader.fieldnames)} columns "
                                  f"({', '.join(reader.fieldnames)}); quote a path that holds a comma")
            if not (row["path"] or "").strip():
                raise GensisError(f"{path}, line {line}: the path is empty; fill it in or delete the line")
            slide = Path(row["path"]).expanduser()
            if not slide.is_absolute():
                slide = path.parent / slide
            mpp = None
            if row.get("mpp") not in (None, ""):
                try:
                    mpp = float(row["mpp"])
                except ValueError:
                    raise GensisError(f"{path}, line {line}: mpp {row['mpp']!r} is not a number") from None
                if mpp <= 0:
                    raise GensisError(f"{path}, line {line}: mpp must be > 0, got {mpp}")
            entries.append(SlideEntry(slide, slide_name(slide), mpp))
    return entries
