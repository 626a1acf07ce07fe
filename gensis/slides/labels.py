"""Per-tile labels from a label map stored beside a slide.

A slide ``name.ext`` may come with ``name.labels.png`` (uint8, 0 = unlabelled, k = class
k - 1, covering the whole slide at any resolution) and ``name.labels.json``
(``{"classes": [...]}``). Each tile takes the label at its centre. The synthetic slide
writes these; a lab can export its annotations the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from gensis.errors import SlideError


@dataclass(frozen=True)
class LabelMap:
    image: np.ndarray
    classes: tuple[str, ...]

    def labels_for(self, coords: np.ndarray, size0: int, slide_size: tuple[int, int]) -> np.ndarray:
        """Class index at each tile's centre, -1 where unlabelled."""
        h, w = self.image.shape
        cx = (coords[:, 0] + size0 / 2) * w / slide_size[0]
        cy = (coords[:, 1] + size0 / 2) * h / slide_size[1]
        ix = np.clip(cx.astype(np.int64), 0, w - 1)
        iy = np.clip(cy.astype(np.int64), 0, h - 1)
        return self.image[iy, ix].astype(np.int64) - 1


def label_map_paths(slide_path: Path) -> tuple[Path, Path]:
    stem = slide_path.name.split(".")[0]
    return slide_path.with_name(stem + ".labels.png"), slide_path.with_name(stem + ".labels.json")


def load_label_map(slide_path: str | Path) -> Optional[LabelMap]:
    """The slide's label map, or None when it has none."""
    from PIL import Image

    png, meta = label_map_paths(Path(slide_path))
    if not png.is_file():
        return None
    if not meta.is_file():
        raise SlideError(f"{png}: label map found but {meta.name} (with its class names) is missing")
    try:
        classes = tuple(json.loads(meta.read_text())["classes"])
        image = np.asarray(Image.open(png))
    except (OSError, ValueError, KeyError) as err:
        raise SlideError(f"{png}: cannot read label map ({err})") from None
    if image.ndim != 2:
        raise SlideError(f"{png}: label map must be a single-channel image of class indices")
    return LabelMap(image=image, classes=classes)
