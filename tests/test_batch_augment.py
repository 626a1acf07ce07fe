"""The GPU-batched multi-crop: shapes, ranges, and each step against its definition."""

import torch

from gensis.data.augment import AugmentConfig, CropConfig
from gensis.data.batch_augment import BatchMultiCrop, _gaussian_blur, _hue_shift, random_resized_boxes

OFF = AugmentConfig(flip=False, rotate90=False, color_jitter=0, grayscale=0, hed_jitter=0, blur=False, solarize=0)


def test_crops_shapes_and_order():
    crops = BatchMultiCrop(CropConfig(n_global=2, n_local=3, global_size=32, local_size=16))(
        torch.randint(0, 256, (5, 3, 48, 48), dtype=torch.uint8))
    assert [tuple(c.shape) for c in crops] == [(5, 3, 32, 32)] * 2 + [(5, 3, 16, 16)] * 3
    assert all(torch.isfinite(c).all() for c in crops)


def test_boxes_respect_scale_and_image():
    boxes = random_resized_boxes(2000, 100, 80, (0.2, 0.5))
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (100 * 80)
    assert boxes[:, 0].min() >= 0 and boxes[:, 2].max() <= 80 + 1e-4 and boxes[:, 3].max() <= 100 + 1e-4
    assert area.max() <= 0.5 + 1e-4 and area.min() >= 0.15 and 0.3 < area.mean() < 0.4


def test_without_augmentations_a_full_crop_is_the_normalised_image():
    image = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    crop = BatchMultiCrop(CropConfig(n_global=1, n_local=0, global_size=16, global_scale=(1.0, 1.0)), OFF,
                          mean=(0, 0, 0), std=(1, 1, 1))
    boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0]] * 2)
    import gensis.data.batch_augment as module

    original = module.random_resized_boxes
    module.random_resized_boxes = lambda *a, **k: boxes
    try:
        out = crop(image)[0]
    finally:
        module.random_resized_boxes = original
    torch.testing.assert_close(out, image.float() / 255, atol=1e-5, rtol=0)


def test_blur_and_hue_steps():
    x = torch.rand(3, 3, 20, 20)
    torch.testing.assert_close(_gaussian_blur(x, torch.zeros(3)), x)
    blurred = _gaussian_blur(x, torch.tensor([0.0, 1.5, 3.0]))
    assert blurred[1].std() < x[1].std() and blurred[2].std() < blurred[1].std()
    torch.testing.assert_close(_hue_shift(x, torch.zeros(3)), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(_hue_shift(x, torch.ones(3)), x, atol=1e-5, rtol=0)  # a full turn
