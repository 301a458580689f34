"""CLIP / SigLIP image–text models: a ViT image tower with an image projection, plus a text tower.

`ImageTextModel` *is* a `VisionTransformer` (num_classes=0) whose output is the image embedding
(E,): the pooled feature through the image projection (open_clip `visual.proj`, HF
`visual_projection`), or the pooled feature itself when there is none (SigLIP's MAP output). So
it plugs into `libra_jax.attribution` like any vision model (same `config`, probes, aux), and an
image–text target (`libra_jax.image_text.similarity_target`) explains ⟨n(image embedding), t⟩.
The text tower, `logit_scale` and `logit_bias` live in the same params tree ('text', ...) and are
reached through `encode_text` / `init_all`; attribution never runs them (text features are constants).

    model.apply({"params": params}, images, rules)               → (image embeddings (..., E), aux)
    model.apply({"params": params}, tokens, method="encode_text") → text embeddings (..., E)
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import linen as nn

from libra_jax.models.contract import Capabilities
from libra_jax.models.layers import Linear
from libra_jax.models.text import TextConfig, TextTransformer
from libra_jax.models.vit import VANILLA, VisionTransformer
from libra_jax.rules import Rules


class ImageTextModel(VisionTransformer):
    """A CLIP-style two-tower model (see the module docstring).

    Fields besides `VisionTransformer`'s (whose `config` describes the image tower, num_classes=0):
      text_config: the text tower.
      image_proj: the pooled image feature goes through a bias-free (C → E) projection 'proj'
        (CLIP); False: the pooled feature is the embedding (SigLIP).
      logit_bias: the model has a learned logit bias (SigLIP's sigmoid loss).
    """

    text_config: TextConfig = TextConfig()
    image_proj: bool = True
    logit_bias: bool = False

    def setup(self):
        super().setup()
        if self.config.num_classes:
            raise ValueError("the image tower of an ImageTextModel has no classifier: use num_classes=0")
        self.proj = Linear(self.text_config.embed_dim, use_bias=False, name="proj") if self.image_proj else None
        self.text = TextTransformer(self.text_config, name="text")
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(math.log(1 / 0.07)), ())
        self.bias = self.param("logit_bias", nn.initializers.constant(-10.0), ()) if self.logit_bias else None

    @property
    def embed_dim(self) -> int:
        return self.text_config.embed_dim

    def project(self, pooled: jax.Array) -> jax.Array:
        """Pooled image feature (..., C) → image embedding (..., E)."""
        return pooled if self.proj is None else self.proj(pooled)

    @property
    def capabilities(self) -> Capabilities:
        """The image tower's, with a head: the projection to the image embedding."""
        return dataclasses.replace(super().capabilities, head=True)

    def _output(self, head_input: jax.Array, dist: jax.Array | None) -> jax.Array:
        """The unnormalised image embedding (..., E) of the pooled feature (`forward_head`, `forward_tokens`)."""
        emb = self.project(head_input)
        return emb if self.dtype is None else emb.astype(jnp.float32)

    def encode_image(self, images: jax.Array, rules: Rules = VANILLA) -> jax.Array:
        """Images (..., H, W, 3) normalised NHWC → unnormalised image embeddings (..., E)."""
        return self.forward_tokens(self.embed(images), rules)[0]

    def encode_text(self, tokens: jax.Array) -> jax.Array:
        """Token ids (..., L) → unnormalised text embeddings (..., E)."""
        return self.text(tokens)

    def scale_and_bias(self) -> tuple[jax.Array, jax.Array]:
        """(exp(logit_scale), logit_bias or 0): logits = scale·cos(image, text) + bias."""
        bias = jnp.zeros(()) if self.bias is None else self.bias
        return jnp.exp(self.logit_scale), bias

    def init_all(self, images: jax.Array, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Touch every parameter (both towers, scale, bias): `model.init(key, images, tokens, method="init_all")`."""
        self.scale_and_bias()
        return self.encode_image(images), self.encode_text(tokens)
