"""``ssl``: which self-supervised method stages 1 and 3 train, and the heads and loss of the non-DINO ones."""

from __future__ import annotations

from dataclasses import dataclass

from gensis.config.tile import _help

METHODS = ("dino", "mocov3", "byol", "simclr")


@dataclass(frozen=True)
class SSLConfig:
    method: str = _help("dino (its own dino block), mocov3, byol or simclr", "dino")
    hidden_dim: int = _help("projector / predictor MLP width (mocov3, byol, simclr)", 2048)
    out_dim: int = _help("projection size (mocov3, byol, simclr)", 256)
    batch_norm: bool = _help("batch norm in the projector and predictor (mocov3, byol, simclr); false: none, so that "
                             "no sample's projection depends on the rest of its batch", True)
    temperature: float = _help("InfoNCE / NT-Xent temperature (mocov3, simclr)", 0.2)
    momentum: float = _help("momentum encoder's EMA momentum at the start, cosine to momentum_end (mocov3, byol; "
                            "simclr has none)", 0.99)
    momentum_end: float = _help("EMA momentum at the end", 1.0)
    simclr_ema: float = _help("simclr: the exported encoder is an EMA of the network with this fixed momentum, as "
                              "DINO exports its teacher (0: the network itself, as in SimCLR)", 0.0)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"ssl.method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.temperature <= 0:
            raise ValueError(f"ssl.temperature must be > 0, got {self.temperature}")
        if not 0 <= self.simclr_ema < 1:
            raise ValueError(f"ssl.simclr_ema must be in [0, 1), got {self.simclr_ema}")
        if not 0 <= self.momentum <= self.momentum_end <= 1:
            raise ValueError(f"need 0 <= ssl.momentum <= ssl.momentum_end <= 1, got {self.momentum} and "
                             f"{self.momentum_end}")
        if self.hidden_dim < 1 or self.out_dim < 1:
            raise ValueError(f"ssl.hidden_dim and ssl.out_dim must be >= 1, got {self.hidden_dim}, {self.out_dim}")
