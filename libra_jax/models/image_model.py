"""Contract members shared by the image models (ViT family, MLP-Mixer): normalised NHWC images, never padded."""

from __future__ import annotations

import jax
from flax import linen as nn

from libra_jax import validate


class ImageModel:
    """Mixed into an image model that has `config` and `data_config` fields (models/contract.py `Model`)."""

    @nn.nowrap
    def check_inputs(self, inputs: jax.Array) -> None:
        """Images (B, H, W, C): normalised NHWC floats of the model's size (see `validate.check_images`)."""
        validate.check_images(inputs, self.config, self.data_config)

    @nn.nowrap
    def token_mask(self, inputs: jax.Array) -> None:
        """Images have no padded tokens."""
        return None
