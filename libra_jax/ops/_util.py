"""Small helpers shared by the primitives."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sum_to_shape(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Reverse of broadcasting: sum `x` down to `shape` (the cotangent of a broadcast input)."""
    lead = x.ndim - len(shape)
    if lead:
        x = x.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and x.shape[i] != 1)
    if axes:
        x = x.sum(axis=axes, keepdims=True)
    return x


def zeros_like_or_none(x):
    """Cotangent placeholder for an optional argument."""
    return None if x is None else jnp.zeros_like(x)
