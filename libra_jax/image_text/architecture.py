"""What a loader needs to build an `ImageTextModel`: both towers' configs and the model-level flags."""

from __future__ import annotations

import dataclasses

from libra_jax.models.config import DataConfig, ViTConfig
from libra_jax.models.text import TextConfig

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class Architecture:
    """vision: image tower (num_classes=0); text: text tower; image_proj / logit_bias: see `ImageTextModel`;
    data_config: preprocessing; source_img_size: image size the weights were trained at."""

    vision: ViTConfig
    text: TextConfig
    image_proj: bool
    logit_bias: bool
    data_config: DataConfig
    source_img_size: tuple[int, int]


def check_keys(cfg: dict, known: set[str], where: str) -> None:
    """Loud failure on config entries this loader does not implement (rather than a silently wrong model)."""
    unknown = sorted(k for k, v in cfg.items() if k not in known and v not in (None, False, 0, {}, [], ""))
    if unknown:
        raise ValueError(f"{where}: unsupported settings {unknown}; libra-jax implements {sorted(known)}")
