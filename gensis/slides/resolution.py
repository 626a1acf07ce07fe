"""Physical resolution (microns per pixel) from slide metadata.

Sources, in order: OpenSlide's ``openslide.mpp-x``, an Aperio ``MPP =`` description,
OME ``PhysicalSizeX``, and the TIFF ``XResolution`` / ``ResolutionUnit`` tags. Values
outside a plausible microscope range (e.g. a 72 dpi default) count as unknown: gensis
never guesses a resolution.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Mapping, Optional

PLAUSIBLE_MPP = (0.02, 100.0)

_UNIT_MICRONS = {"inch": 25400.0, "centimeter": 10000.0, "cm": 10000.0, "millimeter": 1000.0, "mm": 1000.0,
                 "micrometer": 1.0, "µm": 1.0, "um": 1.0, "nm": 1e-3, "nanometer": 1e-3}


def plausible(mpp: Optional[float]) -> Optional[float]:
    """``mpp`` if it is a believable microscope resolution, else None."""
    if mpp is None:
        return None
    try:
        mpp = float(mpp)
    except (TypeError, ValueError):
        return None
    return mpp if PLAUSIBLE_MPP[0] <= mpp <= PLAUSIBLE_MPP[1] else None


def mpp_from_resolution_tag(pixels_per_unit: float, unit: str | int | None) -> Optional[float]:
    """mpp from TIFF XResolution (pixels per unit) and ResolutionUnit (2 = inch, 3 = cm)."""
    if unit in (2, "2"):
        unit = "inch"
    elif unit in (3, "3"):
        unit = "centimeter"
    unit_um = _UNIT_MICRONS.get(str(unit).lower()) if unit is not None else None
    if not unit_um or not pixels_per_unit or pixels_per_unit <= 0:
        return None
    return plausible(unit_um / pixels_per_unit)


def mpp_from_aperio_description(description: str) -> Optional[float]:
    match = re.search(r"MPP\s*=\s*([0-9.eE+-]+)", description or "")
    return plausible(match.group(1)) if match else None


def mpp_from_ome_xml(xml: str) -> Optional[float]:
    """PhysicalSizeX of the first OME Image, converted to microns."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for element in root.iter():
        if element.tag.endswith("Pixels") and "PhysicalSizeX" in element.attrib:
            unit = element.attrib.get("PhysicalSizeXUnit", "µm")
            factor = _UNIT_MICRONS.get(unit.lower(), None)
            if factor is None:
                return None
            return plausible(float(element.attrib["PhysicalSizeX"]) * factor)
    return None


def mpp_from_openslide_properties(props: Mapping[str, str]) -> Optional[float]:
    mpp = plausible(props.get("openslide.mpp-x"))
    if mpp:
        return mpp
    description = props.get("tiff.ImageDescription", "")
    mpp = mpp_from_aperio_description(description)
    if mpp:
        return mpp
    if "<OME" in description:
        mpp = mpp_from_ome_xml(description)
        if mpp:
            return mpp
    try:
        res = float(props.get("tiff.XResolution", "nan"))
    except ValueError:
        return None
    return mpp_from_resolution_tag(res, props.get("tiff.ResolutionUnit"))
