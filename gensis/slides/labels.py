"""Per-tile labels from a label map stored beside a slide.

A slide ``name.ext`` may come with ``name.labels.png`` (uint8, 0 = unlabelled, k = class
k - 1, covering the whole slide at any resolution) and ``name.labels.json``
(``{"classes": [...]}``). Each tile takes the most common label inside it. The synthetic slide
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
        """Each tile's label: the most common class over a 5 x 5 grid of points in it, -1 if none."""
        h, w = self.image.shape
        steps = (np.arange(5) + 0.5) / 5 * size0
        px = (coords[:, 0, None, None] + steps[None, None, :]) * w / slide_size[0]
        py = (coords[:, 1, None, None] + steps[None, :, None]) * h / slide_size[1]
        ix = np.clip(px.astype(np.int64), 0, w - 1)
        iy = np.clip(py.astype(np.int64), 0, h - 1)
        samples = self.image[iy, ix].reshape(len(coords), -1).astype(np.int64)
        counts = np.stack([(samples == k).sum(axis=1) for k in range(1, len(self.classes) + 1)], axis=1)
        labels = counts.argmax(axis=1)
        return np.where(counts.max(axis=1) > 0, labels, -1).astype(np.int64) if len(coords) else labels


def label_map_paths(slide_path: Path) -> tuple[Path, Path]:
    """``name.labels.png`` and ``name.labels.json`` beside ``name.ext`` (the name may hold dots: ``case.1.svs``)."""
    name = slide_path.name
    lower = name.lower()
    double = next((s for s in (".ome.tiff", ".ome.tif") if lower.endswith(s)), None)
    stem = name[:-len(double)] if double else Path(name).stem
    return slide_path.with_name(stem + ".labels.png"), slide_path.with_name(stem + ".labels.json")


def load_label_map(slide_path: str | Path) -> Optional[LabelMap]:
    """The slide's label map, or None when it has none."""
    from PIL import Image

    png, meta = label_map_paths(Path(slide_path))
    if not png.is_file():  # maps named after the part before the first dot, as earlier versions looked for
        first = Path(slide_path).name.split(".")[0]
        png, meta = (Path(slide_path).with_name(first + ".labels.png"),
                     Path(slide_path).with_name(first + ".labels.json"))
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
