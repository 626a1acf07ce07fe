"""``manifest.csv`` of a tiling run: one row per slide (TRIDENT-style), rewritten atomically."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from gensis.atomic import write_text

STATUSES = ("ok", "failed", "skipped")


@dataclass
class ManifestRow:
    slide: str
    path: str
    status: str
    n_tiles: int = 0
    mpp: str = ""
    read_level: str = ""
    seconds: float = 0.0
    error: str = ""


class Manifest:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: dict[str, ManifestRow] = {}
        if self.path.is_file():
            with open(self.path, newline="") as handle:
                for raw in csv.DictReader(handle):
                    row = ManifestRow(**{f.name: raw.get(f.name, "") for f in fields(ManifestRow)})
                    row.n_tiles = int(row.n_tiles or 0)
                    row.seconds = float(row.seconds or 0)
                    self.rows[row.slide] = row

    def get(self, slide: str):
        return self.rows.get(slide)

    def set(self, row: ManifestRow) -> None:
        self.rows[row.slide] = row
        self.save()

    def save(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=[f.name for f in fields(ManifestRow)])
        writer.writeheader()
        for row in self.rows.values():
            data = asdict(row)
            data["seconds"] = f"{row.seconds:.2f}"
            writer.writerow(data)
        write_text(self.path, buffer.getvalue())
