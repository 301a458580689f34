"""Input checks with clear messages, usable eagerly and under jit.

Shape and layout checks are static (raised at trace time). Value checks (NaN/inf, class index
range) raise a ValueError directly on concrete arrays; under `jax.jit` they run as a host
callback, and the error surfaces as a runtime error whose last line is the same ValueError.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from libra_jax.models.config import ViTConfig


def _raise_if(bad, message: str) -> None:
    if bool(np.asarray(bad)):
        raise ValueError(message)


def runtime_check(bad: jax.Array, message: str) -> None:
    """Raise ValueError(message) if the scalar boolean `bad` is true (eagerly or under jit)."""
    if isinstance(bad, jax.core.Tracer):
        jax.debug.callback(lambda b: _raise_if(b, message), bad)
    else:
        _raise_if(bad, message)


def check_images(x, config: ViTConfig, *, batched: bool = True) -> None:
    """Static checks of a normalised NHWC float image batch against the model config."""
    shape = tuple(np.shape(x))
    want = (*config.img_size, config.in_chans)
    rank = 4 if batched else 3
    if len(shape) != rank:
        form = "(B, H, W, C)" if batched else "(H, W, C)"
        raise ValueError(
            f"images must have shape {form} = {'(B, ' if batched else '('}{want[0]}, {want[1]}, {want[2]}); got {shape}"
        )
    hwc = shape[-3:]
    if hwc != want:
        if hwc[0] == config.in_chans and hwc[1:] == want[:2]:
            raise ValueError(
                f"images look like NCHW {shape}; libra-jax expects NHWC (channels last), e.g. x.transpose(0, 2, 3, 1)"
            )
        raise ValueError(
            f"images have spatial shape/channels {hwc} but the model expects {want} "
            f"(resize with libra_jax.preprocess, or load the model with img_size={hwc[:2]})"
        )
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise ValueError(
            f"images must be normalised floats; got dtype {jnp.result_type(x)} "
            "(use libra_jax.preprocess(model, uint8_images))"
        )
    runtime_check(~jnp.isfinite(x).all(), "images contain NaN or inf values")


def check_targets(y, num_classes: int, batch: int) -> None:
    """Class indices (B,) / (B, T) in range, or class weights (B, K) / (B, T, K) that are finite."""
    y = jnp.asarray(y)
    if y.ndim == 0 or y.shape[0] != batch:
        raise ValueError(f"targets must have a leading batch axis of size {batch}; got shape {y.shape}")
    if jnp.issubdtype(y.dtype, jnp.integer):
        if y.ndim > 2:
            raise ValueError(f"integer targets must be class indices of shape (B,) or (B, T); got {y.shape}")
        runtime_check(
            ((y < 0) | (y >= num_classes)).any(),
            f"class index out of range: targets must lie in [0, {num_classes})",
        )
    else:
        if y.ndim not in (2, 3) or y.shape[-1] != num_classes:
            raise ValueError(
                f"float targets are class weights of shape (B, {num_classes}) or (B, T, {num_classes}); got {y.shape}"
            )
        runtime_check(~jnp.isfinite(y).all(), "target weights contain NaN or inf values")
