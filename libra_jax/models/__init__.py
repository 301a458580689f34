"""Model families. Every model is a Flax Linen module with a `config` and a `data_config`."""

from libra_jax.models.config import DataConfig, ViTConfig
from libra_jax.models.vit import VisionTransformer

__all__ = ["DataConfig", "ViTConfig", "VisionTransformer"]
