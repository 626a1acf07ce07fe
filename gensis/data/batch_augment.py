"""The multi-crop augmentation of :mod:`gensis.data.augment`, batched on the GPU.

Workers only decode tiles to uint8 tensors; each crop is then made for the whole batch at
once: random resized crops with one ``roi_align`` call, per-sample flips and 90-degree
rotations, colour jitter (brightness, contrast, saturation, hue), grayscale, Gaussian blur
(one grouped convolution with a kernel per sample), solarisation, HED stain jitter and
normalisation. Same probabilities and ranges as the per-sample CPU pipeline
(``augment.on_gpu=true`` switches to it).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from gensis.config.augment import blur_sigma_range
from gensis.data.augment import AugmentConfig, CropConfig
from gensis.data.hed_jitter import _HED_FROM_RGB, _LOG_EPS, _RGB_FROM_HED

_GRAY = torch.tensor([0.299, 0.587, 0.114])


def _uniform(n, low, high, device):
    return torch.rand(n, device=device) * (high - low) + low


def _chance(n, p, device):
    return torch.rand(n, device=device) < p


def random_resized_boxes(n: int, height: int, width: int, scale, ratio=(3 / 4, 4 / 3), device="cpu") -> torch.Tensor:
    """(n, 4) boxes x0, y0, x1, y1 with area share ~ U(scale) and log aspect ratio ~ U(log ratio)."""
    area = _uniform(n, *scale, device) * height * width
    log_ratio = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), device)
    w = torch.sqrt(area * log_ratio.exp()).clamp(1, width)
    h = torch.sqrt(area / log_ratio.exp()).clamp(1, height)
    x0 = torch.rand(n, device=device) * (width - w)
    y0 = torch.rand(n, device=device) * (height - h)
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=1)


def _blend(mask, a, b):
    return torch.where(mask[:, None, None, None], a, b)


def _gray(x):
    return (x * _GRAY.to(x.device)[None, :, None, None]).sum(1, keepdim=True)


def _hue_shift(x, shift):
    """Rotate chroma in YIQ space by ``shift`` turns (per sample)."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=x.device)
    yiq = torch.einsum("ij,bjhw->bihw", to_yiq, x)
    angle = shift * 2 * math.pi
    cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
    i, q = yiq[:, 1], yiq[:, 2]
    yiq = torch.stack([yiq[:, 0], i * cos - q * sin, i * sin + q * cos], dim=1)
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_yiq), yiq)


def _gaussian_blur(x, sigma):
    """Per-sample Gaussian blur (sigma 0 leaves a sample unchanged), separable grouped convolution."""
    b, c, h, w = x.shape
    radius = max(1, int(math.ceil(3 * float(sigma.max()))))
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-offsets[None] ** 2 / (2 * sigma.clamp(min=1e-3)[:, None] ** 2))
    kernel = torch.where(sigma[:, None] > 0, kernel, (offsets == 0).to(x.dtype)[None].expand_as(kernel))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, dim=0)
    flat = x.reshape(1, b * c, h, w)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=b * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"), kernel[:, None, :, None], groups=b * c)
    return flat.reshape(b, c, h, w)


def _hed_jitter(x, sigma, bias, p):
    b, c, h, w = x.shape
    apply = _chance(b, p, x.device)
    rgb = x.permute(0, 2, 3, 1).reshape(b, -1, 3).clamp(_LOG_EPS, 1)
    log_eps = math.log(_LOG_EPS)
    stains = (torch.log(rgb) / log_eps) @ _HED_FROM_RGB.to(x.device)
    alpha = 1 + (torch.rand(b, 1, 3, device=x.device) * 2 - 1) * sigma
    beta = (torch.rand(b, 1, 3, device=x.device) * 2 - 1) * bias
    stains = stains * alpha + beta
    out = torch.exp(-(stains * -log_eps) @ _RGB_FROM_HED.to(x.device)).clamp(0, 1)
    out = out.reshape(b, h, w, 3).permute(0, 3, 1, 2)
    return _blend(apply, out, x)


class BatchMultiCrop(nn.Module):
    """uint8 (B, 3, H, W) -> list of normalised crops, global crops first (as :class:`MultiCropAugment`)."""

    def __init__(self, crops: CropConfig, augment: AugmentConfig = AugmentConfig(),
                 mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
        super().__init__()
        self.crops, self.config, self.augment = crops, augment, augment.at_strength()
        self.blur_sigma = blur_sigma_range(crops.global_size)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = images.float() / 255.0
        c, a = self.crops, self.config
        out = []
        for index in range(c.n_global):
            out.append(self.view(x, c.global_size, c.global_scale, 1.0 if index == 0 else 0.1,
                                 a.solarize if index == 1 else 0.0))
        for _ in range(c.n_local):
            out.append(self.view(x, c.local_size, c.local_scale, 0.5, 0.0))
        return out

    def view(self, x, size, scale, blur_p, solarize_p):
        """One crop of every image of ``x`` (float, 0-1); ``solarize_p`` before ``augment.strength``."""
        from torchvision.ops import roi_align

        solarize_p = min(1.0, solarize_p * self.config.strength)

        a = self.augment
        b, _, h, w = x.shape
        dev = x.device
        boxes = random_resized_boxes(b, h, w, scale, device=dev)  # roi_align averages ceil(box / size) samples per pixel
        rois = torch.cat([torch.arange(b, device=dev, dtype=x.dtype)[:, None], boxes.to(x.dtype)], dim=1)
        y = roi_align(x, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        if a.flip:
            y = _blend(_chance(b, 0.5, dev), y.flip(-1), y)
            y = _blend(_chance(b, 0.5, dev), y.flip(-2), y)
        if a.rotate90:
            turns = torch.randint(0, 4, (b,), device=dev)
            for k in (1, 2, 3):
                y = _blend(turns == k, torch.rot90(y, k, dims=(-2, -1)), y)
        if a.color_jitter > 0:
            jitter = _chance(b, a.color_jitter, dev)
            ones = torch.ones(b, device=dev)
            bright = torch.where(jitter, _uniform(b, 1 - a.brightness, 1 + a.brightness, dev), ones)
            contrast = torch.where(jitter, _uniform(b, 1 - a.contrast, 1 + a.contrast, dev), ones)
            saturation = torch.where(jitter, _uniform(b, 1 - a.saturation, 1 + a.saturation, dev), ones)
            hue = torch.where(jitter, _uniform(b, -a.hue, a.hue, dev), torch.zeros(b, device=dev))
            y = (y * bright[:, None, None, None]).clamp(0, 1)
            m = _gray(y).mean(dim=(2, 3), keepdim=True)
            y = ((y - m) * contrast[:, None, None, None] + m).clamp(0, 1)
            g = _gray(y)
            y = ((y - g) * saturation[:, None, None, None] + g).clamp(0, 1)
            y = _hue_shift(y, hue).clamp(0, 1)
        if a.grayscale > 0:
            y = _blend(_chance(b, a.grayscale, dev), _gray(y).expand_as(y), y)
        if a.blur and blur_p > 0:
            sigma = _uniform(b, *self.blur_sigma, dev)
            y = _gaussian_blur(y, torch.where(_chance(b, blur_p, dev), sigma, torch.zeros_like(sigma)))
        if solarize_p > 0:
            y = _blend(_chance(b, solarize_p, dev), torch.where(y >= 0.5, 1 - y, y), y)
        if a.hed_jitter > 0:
            y = _hed_jitter(y, a.hed_sigma, a.hed_bias, a.hed_jitter)
        return (y - self.mean) / self.std
