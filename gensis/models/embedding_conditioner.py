"""Embedding conditioning of the E-LDM (METHOD.md stage 2): no text encoder anywhere.

The stage-1 embedding e is L2-normalised and projected by one linear layer to ``n_tokens``
cross-attention tokens of width ``cross_attention_dim``. With ``center`` (the mean of the
training tiles' L2-normalised embeddings) the unit embedding is first centred on it and
normalised again: a small encoder's embeddings share a large common direction (random tiles
at cosine 0.98), and only what is left tells tiles apart. During training e is replaced by a
learned null embedding with probability ``p_uncond``, so that classifier-free guidance can
mix conditional and unconditional predictions at sampling time.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class EmbeddingConditioner(ModelMixin, ConfigMixin):
    """e (B, D) -> encoder_hidden_states (B, n_tokens, cross_attention_dim) for a diffusers UNet.

    >>> cond = EmbeddingConditioner(embed_dim=8, cross_attention_dim=16, n_tokens=2)
    >>> cond(torch.randn(4, 8)).shape
    torch.Size([4, 2, 16])

    A diffusers model: ``save_pretrained`` / ``from_pretrained`` keep its config and weights,
    so the pipeline folder loads it like its UNet.
    """

    @register_to_config
    def __init__(self, embed_dim: int, cross_attention_dim: int, n_tokens: int = 1, p_uncond: float = 0.1,
                 center: list[float] | None = None):
        super().__init__()
        if not 0 <= p_uncond < 1:
            raise ValueError(f"p_uncond must be in [0, 1), got {p_uncond}")
        self.embed_dim, self.cross_attention_dim, self.n_tokens, self.p_uncond = (
            embed_dim, cross_attention_dim, n_tokens, p_uncond)
        self.project = nn.Linear(embed_dim, n_tokens * cross_attention_dim)
        self.null_embedding = nn.Parameter(torch.zeros(embed_dim))
        if center is not None and len(center) != embed_dim:
            raise ValueError(f"center has {len(center)} values for {embed_dim}-d embeddings")
        self.register_buffer("center_vector", torch.tensor(center, dtype=torch.float32) if center is not None else None,
                             persistent=False)  # in the config (config.json), not the weights

    def null_like(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The null embedding repeated for a batch (the unconditional branch of guidance)."""
        return self.null_embedding.to(embeddings.dtype).expand_as(embeddings)

    def forward(self, embeddings: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens for ``embeddings``; in training mode each row is replaced by the null embedding
        with probability ``p_uncond`` (or where the boolean ``drop`` says)."""
        e = nn.functional.normalize(embeddings.float(), dim=-1)
        if self.center_vector is not None:
            e = nn.functional.normalize(e - self.center_vector.to(e.device), dim=-1)
        if drop is None and self.training:  # also at p_uncond = 0: the null embedding stays in the graph (DDP)
            drop = torch.rand(e.shape[0], device=e.device) < self.p_uncond
        if drop is not None:
            e = torch.where(drop[:, None], self.null_like(e), e)
        return self.project(e).view(e.shape[0], self.n_tokens, self.cross_attention_dim)
