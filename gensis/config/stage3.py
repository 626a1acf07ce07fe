"""Config of ``gensis stage3`` (Gen-DINO, METHOD.md stage 4): the stage-1 recipe plus two switches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from gensis.config.stage1 import Stage1Config
from gensis.config.tile import _help


@dataclass(frozen=True)
class GenViewsConfig:
    p: float = _help("probability that a sample's second global crop comes from one of its generated views "
                     "(0: off)", 0.5)
    weighting: str = _help("none, or genview: weigh each sample's global pair by N softmax(gamma (s_fg - s_bg)) "
                           "of the encoder= run's patch tokens (GenView)", "none")
    gamma: float = _help("GenView's gamma (gen.weighting=genview)", 1.0)
    curriculum: str = _help("none, linear or cosine: harder positives as epochs go (views drawn at several "
                            "generate.noise_levels: the level rises from the first to the last; one level: "
                            "p rises from 0 to gen.p)", "none")

    def __post_init__(self):
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"gen.p must be in [0, 1], got {self.p}")
        if self.curriculum not in ("none", "linear", "cosine"):
            raise ValueError(f"gen.curriculum must be none, linear or cosine, got {self.curriculum!r}")
        if self.weighting not in ("none", "genview"):
            raise ValueError(f"gen.weighting must be none or genview, got {self.weighting!r}")


DISENTANGLE_TARGETS = ("sources", "self")


@dataclass(frozen=True)
class DisentangleConfig:
    weight: float = _help("lambda of L_dino + lambda * L_dis / P on interpolated images, P the DINO loss's crop "
                          "pairs: 1 weighs the task like one DINO crop pair (0: off)", 1.0)
    target: str = _help("sources: the interpolated image's target mixes its two source tiles' (the task); self: it "
                        "mixes two other views of the interpolated image itself, a control that keeps the images "
                        "and drops the pair", "sources")
    per_item: int = _help("interpolated images per training item, each with its own pair and augmentation: the "
                          "task's batch is per_item x B images (its loss is their mean, so the weight keeps its "
                          "meaning)", 1)

    def __post_init__(self):
        if self.weight < 0:
            raise ValueError(f"disentangle.weight must be >= 0, got {self.weight}")
        if self.target not in DISENTANGLE_TARGETS:
            raise ValueError(f"disentangle.target must be one of {'|'.join(DISENTANGLE_TARGETS)}, got {self.target!r}")
        if self.per_item < 1:
            raise ValueError(f"disentangle.per_item must be >= 1, got {self.per_item}")


@dataclass(frozen=True)
class Stage3Config(Stage1Config):
    views: Optional[str] = _help("views.h5 of gensis generate for data.path (needed unless both parts are off)",
                                 None)
    encoder: Optional[str] = _help("the encoder run dir the views were generated with (gensis generate encoder=): "
                                   "when given, a views store of another encoder is refused", None)
    init: Optional[str] = _help("start the backbone from weights: an encoder run dir or a .safetensors/.pth file "
                                "(default: from scratch)", None)
    gen: GenViewsConfig = _help("generated views as positives", factory=GenViewsConfig)
    disentangle: DisentangleConfig = _help("the disentanglement pretext task", factory=DisentangleConfig)

    @property
    def uses_views(self) -> bool:
        return self.gen.p > 0 or self.disentangle.weight > 0
