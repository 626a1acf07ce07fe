"""``gen.weighting=genview``: the weights of each sample's pair of global crops, from a frozen encoder's patch
tokens (gensis/losses/genview_weights.py). The encoder is the ``encoder=`` run (the stage-1 encoder the views
were drawn with); it is kept out of the trained module, its checkpoint and its optimiser."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from gensis.losses.genview_weights import genview_weights
from gensis.models.backbone import load_encoder


class PairWeights:
    def __init__(self, encoder: str, gamma: float):
        model, spec = load_encoder(encoder)
        self.model, self.size, self.gamma = model.requires_grad_(False), spec.img_size, gamma

    @torch.no_grad()
    def __call__(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """(B,) weights of the pairs (first[i], second[i]): normalised crops, B x 3 x H x W."""
        model = self.model.to(first.device)
        images = torch.cat([first, second]).float()
        if images.shape[-1] != self.size:
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", antialias=True)
        tokens = model.forward_features(images)[:, model.num_prefix_tokens:]
        a, b = tokens.chunk(2)
        return genview_weights(a, b, self.gamma)
