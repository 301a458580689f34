"""libra-jax: faithful, complete gradient attributions for Vision Transformers in JAX/Flax.

Usage:
    model, params = libra_jax.load("vit_base_patch16_224.augreg2_in21k_ft_in1k")  # or "synthetic_vit" (embedded)
    x = libra_jax.preprocess(model, images_uint8)
    fn = libra_jax.methods.libra_fullgrad_plus(model)
    maps = jax.jit(fn)(params, x, y)                          # (B, gh, gw)
"""

from libra_jax import image_text, methods, metrics, ops, rules, weights
from libra_jax.image_text import load_image_text
from libra_jax.methods import attribution
from libra_jax.preprocess import preprocess
from libra_jax.rules import PRESETS, Rules
from libra_jax.weights import load, save_checkpoint

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "Rules",
    "attribution",
    "image_text",
    "load",
    "load_image_text",
    "methods",
    "metrics",
    "ops",
    "preprocess",
    "rules",
    "save_checkpoint",
    "weights",
    "__version__",
]
