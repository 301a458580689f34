"""Small random models for tests (no checkpoint needed)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from libra_jax.models import VisionTransformer, ViTConfig
from libra_jax.weights.keymap import flatten, unflatten

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5)


def randomize(params, key, scale: float = 0.1):
    """Re-draw biases, norm affines, tokens and LayerScale so that no term is trivially zero/one.

    Kernels keep their init; q/k are scaled up so attention is far from uniform.
    """
    flat = flatten(params)
    out = {}
    for i, (path, value) in enumerate(sorted(flat.items())):
        noise = jax.random.normal(jax.random.fold_in(key, i), value.shape, value.dtype)
        leaf = path.rsplit("/", 1)[-1]
        if leaf == "scale":
            out[path] = 1 + scale * noise
        elif leaf == "gamma":
            out[path] = 0.2 * (1 + 0.5 * noise)
        elif leaf == "kernel" and path.endswith("qkv/kernel"):
            c = value.shape[0]
            out[path] = value.at[:, : 2 * c].multiply(4.0)
        elif leaf == "kernel":
            out[path] = value
        else:
            out[path] = scale * noise
    return unflatten(out)


def tiny_model(key=0, **overrides):
    """(model, params) of a small random ViT (defaults: 32 px, patch 8, width 32, depth 2)."""
    model = VisionTransformer(ViTConfig(**{**TINY, **overrides}))
    h, w = model.config.img_size
    variables = model.init(jax.random.PRNGKey(key), jnp.zeros((h, w, 3)))
    return model, randomize(variables["params"], jax.random.PRNGKey(key + 1))


def images(model, batch: int, key: int = 7):
    """Random normalised images (batch, H, W, C): uniform in [-1, 1], what mean = std = 0.5 makes of [0, 1] pixels."""
    h, w = model.config.img_size
    return jax.random.uniform(jax.random.PRNGKey(key), (batch, h, w, model.config.in_chans), minval=-1.0, maxval=1.0)
