"""Backbone + DINO head applied to a list of crops of different sizes (DINO's MultiCropWrapper)."""

from __future__ import annotations

import torch
from torch import nn


class MultiCropNet(nn.Module):
    """Backbone + head over a list of crops: crops of one size go through the backbone together."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, crops: list[torch.Tensor]) -> torch.Tensor:
        outputs, start = [], 0
        while start < len(crops):
            end = start
            while end < len(crops) and crops[end].shape[-1] == crops[start].shape[-1]:
                end += 1
            outputs.append(self.backbone(torch.cat(crops[start:end])))
            start = end
        features = torch.cat(outputs)
        with torch.autocast(features.device.type, enabled=False):  # sharpening at tau 0.04 needs fp32 logits
            return self.head(features.float())
