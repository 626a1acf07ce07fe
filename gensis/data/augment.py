"""DINO multi-crop augmentation for histopathology tiles (torchvision transforms).

Global crops (``crops.global_size``, scale ``crops.global_scale``) and local crops, each with
flips, rotations by 90 degrees, colour jitter, grayscale, HED stain jitter, Gaussian blur
(1.0 / 0.1 on the two global crops, 0.5 on local ones; DINO's sigma range scaled from 224 px
to the global crop size) and solarisation (second global crop), as in DINO plus the
histopathology additions of METHOD.md. ``augment.strength`` scales the colour ranges and the
grayscale and solarisation chances (small crops carry little texture, so strong colour
changes leave two views of one tile with unrelated targets).
"""

from __future__ import annotations

import torch
from PIL import Image, ImageFilter
from torchvision.transforms import v2

from gensis.config.augment import AugmentConfig, CropConfig, blur_sigma_range
from gensis.data.hed_jitter import HEDJitter

__all__ = ["AugmentConfig", "CropConfig", "MultiCropAugment", "eval_transform", "uint8_transform"]


class RandomRotate90(torch.nn.Module):
    """Rotate a PIL image by 0, 90, 180 or 270 degrees (tissue has no up)."""

    _turns = (None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)

    def forward(self, image: Image.Image) -> Image.Image:
        turn = self._turns[int(torch.randint(0, 4, ()))]
        return image if turn is None else image.transpose(turn)


class PILGaussianBlur(torch.nn.Module):
    """Gaussian blur with a random sigma (PIL's filter: several times faster than a tensor convolution)."""

    def __init__(self, sigma=(0.1, 2.0), p: float = 0.5, scale: float = 1.0):
        super().__init__()
        self.sigma, self.p, self.scale = sigma, p, scale

    def forward(self, image: Image.Image) -> Image.Image:
        if torch.rand(()) >= self.p:
            return image
        radius = float(torch.empty(()).uniform_(*self.sigma)) * self.scale
        return image.filter(ImageFilter.GaussianBlur(radius=radius))


def augmented_view(size: int, scale, augment: AugmentConfig, blur_p: float, solarize_p: float, mean, std,
                   blur_sigma=(0.1, 2.0)) -> v2.Compose:
    """One crop's pipeline: geometric and colour steps on the PIL image (fast), then tensor steps.

    ``solarize_p`` is applied as given (scaled by ``augment.strength``); ``blur_sigma`` in pixels.
    """
    solarize_p = min(1.0, solarize_p * augment.strength)
    augment = augment.at_strength()
    steps = [v2.RandomResizedCrop(size, scale=tuple(scale), interpolation=v2.InterpolationMode.BICUBIC)]
    if augment.flip:
        steps += [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
    if augment.rotate90:
        steps.append(RandomRotate90())
    if augment.color_jitter > 0:
        steps.append(v2.RandomApply([v2.ColorJitter(augment.brightness, augment.contrast, augment.saturation,
                                                    augment.hue)], p=augment.color_jitter))
    if augment.grayscale > 0:
        steps.append(v2.RandomGrayscale(p=augment.grayscale))
    if augment.blur and blur_p > 0:
        steps.append(PILGaussianBlur(sigma=tuple(blur_sigma), p=blur_p))
    if solarize_p > 0:
        steps.append(v2.RandomSolarize(threshold=128, p=solarize_p))
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if augment.hed_jitter > 0:
        steps.append(HEDJitter(augment.hed_sigma, augment.hed_bias, p=augment.hed_jitter))
    steps.append(v2.Normalize(mean=list(mean), std=list(std)))
    return v2.Compose(steps)


class MultiCropAugment:
    """Image -> list of crops: ``n_global`` global crops first, then ``n_local`` local ones.

    >>> from PIL import Image
    >>> crops = MultiCropAugment(CropConfig(global_size=32, local_size=16, n_local=2))(Image.new("RGB", (64, 64)))
    >>> [tuple(c.shape) for c in crops]
    [(3, 32, 32), (3, 32, 32), (3, 16, 16), (3, 16, 16)]
    """

    def __init__(self, crops: CropConfig, augment: AugmentConfig = AugmentConfig(),
                 mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
        self.crops = crops
        sigma = blur_sigma_range(crops.global_size)  # one range for global and local crops, as in DINO
        self.global_views = []
        for index in range(crops.n_global):
            blur_p = 1.0 if index == 0 else 0.1
            solarize_p = augment.solarize if index == 1 else 0.0
            self.global_views.append(augmented_view(crops.global_size, crops.global_scale, augment, blur_p, solarize_p,
                                                    mean, std, sigma))
        self.local_view = augmented_view(crops.local_size, crops.local_scale, augment, 0.5, 0.0, mean, std, sigma)

    def __call__(self, image) -> list[torch.Tensor]:
        if not isinstance(image, Image.Image):
            image = Image.fromarray(image)
        crops = [view(image) for view in self.global_views]
        crops += [self.local_view(image) for _ in range(self.crops.n_local)]
        return crops


def uint8_transform(size: int) -> v2.Compose:
    """Tiles as uint8 (3, size, size) tensors, for augmentation batched on the device."""
    return v2.Compose([v2.ToImage(), v2.Resize((size, size), interpolation=v2.InterpolationMode.BICUBIC,
                                               antialias=True)])


def eval_transform(size: int, mean, std, grayscale: bool = False) -> v2.Compose:
    """Resize to the encoder's input size and normalise (embedding and evaluation); with ``grayscale`` the
    tile's luminance first replaces its colour in all three channels."""
    colour = [v2.Grayscale(num_output_channels=3)] if grayscale else []
    return v2.Compose([v2.ToImage(), *colour, v2.Resize((size, size), interpolation=v2.InterpolationMode.BICUBIC,
                                                        antialias=True),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))])
