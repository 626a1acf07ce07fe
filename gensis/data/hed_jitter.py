"""HED stain jitter (Tellez et al. 2018): perturb haematoxylin, eosin and DAB densities.

RGB -> optical density -> HED (scikit-image's stain matrix); each stain channel becomes
``alpha * s + beta`` with alpha ~ U(1 - sigma, 1 + sigma), beta ~ U(-bias, bias) (densities are
scikit-image's, scaled by 1 / -log(1e-6), so a bias of 0.01 is already a clear shift); back to RGB.
"""

from __future__ import annotations

import torch
from skimage.color.colorconv import hed_from_rgb, rgb_from_hed

_HED_FROM_RGB = torch.tensor(hed_from_rgb, dtype=torch.float32)
_RGB_FROM_HED = torch.tensor(rgb_from_hed, dtype=torch.float32)
_LOG_EPS = 1e-6


class HEDJitter(torch.nn.Module):
    """Random stain-density jitter of an RGB float tensor (3, H, W) in [0, 1]."""

    def __init__(self, sigma: float = 0.05, bias: float = 0.01, p: float = 0.5):
        super().__init__()
        self.sigma, self.bias, self.p = sigma, bias, p

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.p < 1 and torch.rand(()) >= self.p:
            return image
        c, h, w = image.shape
        rgb = image.reshape(3, -1).T.clamp(_LOG_EPS, 1)
        stains = (torch.log(rgb) / torch.log(torch.tensor(_LOG_EPS))) @ _HED_FROM_RGB
        alpha = 1 + (torch.rand(3) * 2 - 1) * self.sigma
        beta = (torch.rand(3) * 2 - 1) * self.bias
        stains = stains * alpha + beta
        log_rgb = -(stains * -torch.log(torch.tensor(_LOG_EPS))) @ _RGB_FROM_HED
        out = torch.exp(log_rgb).clamp(0, 1)
        return out.T.reshape(c, h, w)
