"""Model families. Every model is a Flax Linen module with a `config` and a `data_config`."""

from libra_jax.models.config import (
    CONFIG_CLASSES,
    BeitConfig,
    DataConfig,
    EvaConfig,
    MixerConfig,
    ModelConfig,
    ViTConfig,
)
from libra_jax.models.mixer import MlpMixer
from libra_jax.models.vit import VisionTransformer

# BEiT and EVA are VisionTransformer variants: their configs switch the attention features on.
MODEL_CLASSES = {"vit": VisionTransformer, "beit": VisionTransformer, "eva": VisionTransformer, "mixer": MlpMixer}
"""Flax model class of each family (`config.family`)."""


def build_model(config: ModelConfig, data_config: DataConfig) -> VisionTransformer | MlpMixer:
    """The Flax model of `config`'s family."""
    return MODEL_CLASSES[config.family](config, data_config)


__all__ = [
    "CONFIG_CLASSES",
    "MODEL_CLASSES",
    "BeitConfig",
    "DataConfig",
    "EvaConfig",
    "MixerConfig",
    "MlpMixer",
    "ModelConfig",
    "ViTConfig",
    "VisionTransformer",
    "build_model",
]
