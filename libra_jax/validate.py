"""Input checks with clear messages, usable eagerly and under jit.

Shape and layout checks are static (raised at trace time). Value checks (NaN/inf, pixel range,
class index range) raise a ValueError directly on concrete arrays; under `jax.jit` they run as a
host callback, whose failure XLA reports as a `JaxRuntimeError` holding the ValueError's text.
`validate.jit` (use it instead of `jax.jit`) turns that back into the ValueError an eager call raises.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from libra_jax.models.config import DataConfig, ViTConfig

PIXEL_MARGIN = 0.1
"""Slack of the pixel-range check, as a fraction of the range: resampling a normalised image overshoots a little."""

# how a failed check's ValueError appears inside the JaxRuntimeError of a jitted call (its traceback's last line)
_FAILED_CHECK = re.compile(r"in _raise_if\n(?:.*\n)*?ValueError: (?P<message>.*)\s*$")


def _raise_if(bad, message: str) -> None:
    if bool(np.asarray(bad)):
        raise ValueError(message)


def runtime_check(bad: jax.Array, message: str) -> None:
    """Raise ValueError(message) if the scalar boolean `bad` is true (eagerly or under jit)."""
    if isinstance(bad, jax.core.Tracer):
        jax.debug.callback(lambda b: _raise_if(b, message), bad)
    else:
        _raise_if(bad, message)


def jit(fn: Callable, **jit_kwargs) -> Callable:
    """`jax.jit(fn, **jit_kwargs)` whose failed input checks raise the same ValueError as an eager call.

    (Plain `jax.jit` reports them as `JaxRuntimeError: INTERNAL: CpuCallback error ...`.)
    """
    jitted = jax.jit(fn, **jit_kwargs)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return jitted(*args, **kwargs)
        except jax.errors.JaxRuntimeError as e:
            failed = _FAILED_CHECK.search(str(e))
            if failed is None:
                raise
            raise ValueError(failed["message"]) from None

    return call


def pixel_range(data_config: DataConfig, margin: float = PIXEL_MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """(low (C,), high (C,)): what `preprocess` makes of [0, 1] pixels, widened by `margin` of the range."""
    mean, std = np.asarray(data_config.mean, np.float64), np.asarray(data_config.std, np.float64)
    low, high = (0.0 - mean) / std, (1.0 - mean) / std
    slack = margin * (high - low)
    return low - slack, high + slack


def check_pixel_range(x, data_config: DataConfig) -> None:
    """Raise ValueError (eagerly or under jit) when a batch (..., C) holds values `preprocess` cannot make."""
    low, high = pixel_range(data_config)
    outside = ((x < low.astype(np.float32)) | (x > high.astype(np.float32))).any()
    bounds = ", ".join(f"[{lo:.2f}, {hi:.2f}]" for lo, hi in zip(low, high, strict=True))
    runtime_check(
        outside,
        "image values lie outside what the model's mean/std normalisation makes of [0, 1] pixels"
        f" (per channel {bounds}): the images are likely not normalised (0-255 values, or mean/std not applied)."
        " Prepare uint8 images with libra_jax.preprocess(model, images), or pass check_inputs=False to skip this check",
    )


def require_targets(y) -> None:
    """y must be given: class indices, class weights or (for a custom target) its argument."""
    if y is None:
        raise ValueError(
            "no targets: fn(params, x, y) needs y, e.g. class indices (B,) such as the top-1 prediction"
            " model.apply({'params': params}, x)[0].argmax(-1)"
        )


def check_images(x, config: ViTConfig, data_config: DataConfig | None = None, *, batched: bool = True) -> None:
    """Checks of a normalised NHWC float image batch against the model config: shape and dtype (static),
    finite values and, given the model's `data_config`, the range `preprocess` produces (at run time)."""
    if dataclasses.is_dataclass(x):
        raise ValueError(
            f"this image model takes an image array (B, H, W, C) made by libra_jax.preprocess(model, images); got a"
            f" {type(x).__name__} (token ids go to a text model)"
        )
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
    if data_config is not None:
        check_pixel_range(x, data_config)


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
