"""2-D rotary position embedding of EVA (timm `RotaryEmbeddingCat` with language-style bands).

The sin/cos table is a pure function of the config, computed on the host in float32 exactly as timm
builds it (bands 1/T^(i/nb), integer grid positions rescaled to `ref_feat_shape`, interleaved layout),
so it is a constant of the traced function, never a parameter.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from libra_jax.models.config import RopeSpec


@functools.lru_cache(maxsize=16)
def rope_table(spec: RopeSpec) -> tuple[np.ndarray, np.ndarray]:
    """(sin, cos), each (gh·gw, head_dim) float32, rows in row-major patch order.

    timm: bands (nb,) = 1/T^(arange(nb)/nb) with nb = head_dim/4; per axis positions arange(s) + offset,
    times ref/s when a reference grid is set; angles (gh, gw, 2, nb) = grid ⊗ bands flattened to
    (N, head_dim/2) and each angle repeated twice (interleaved pairs).
    """
    nb = spec.head_dim // 4
    bands = (1.0 / (np.float32(spec.temperature) ** (np.arange(nb, dtype=np.float32) / np.float32(nb)))).astype(
        np.float32
    )
    shape, ref = list(spec.grid), None if spec.ref_feat_shape is None else list(spec.ref_feat_shape)
    if spec.grid_indexing == "xy":  # torch.meshgrid 'xy' swaps the first two axes of shape and reference
        shape = shape[::-1]
        ref = None if ref is None else ref[::-1]
    axes = [np.arange(s, dtype=np.float32) + np.float32(spec.grid_offset) for s in shape]
    if ref is not None:
        axes = [
            (t / np.float32(s) * np.float32(r)).astype(np.float32) for t, s, r in zip(axes, shape, ref, strict=True)
        ]
    grid = np.stack(np.meshgrid(*axes, indexing=spec.grid_indexing), axis=-1)  # (*spatial, 2)
    angles = (grid[..., None] * bands).astype(np.float32)  # (*spatial, 2, nb)
    angles = angles.reshape(-1, 2 * nb)
    sin, cos = np.sin(angles).astype(np.float32), np.cos(angles).astype(np.float32)
    return np.repeat(sin, 2, axis=-1), np.repeat(cos, 2, axis=-1)


def rotate_pairs(x: jax.Array) -> jax.Array:
    """[x0, x1, x2, x3, ...] → [−x1, x0, −x3, x2, ...] over the last axis (timm `rot`)."""
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    return jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)


def apply_rope(x: jax.Array, sin: jax.Array, cos: jax.Array) -> jax.Array:
    """x·cos + rot(x)·sin: x (..., N, D), sin/cos (N, D) or broadcastable. Linear in x (no LibraGrad rule)."""
    return x * cos.astype(x.dtype) + rotate_pairs(x) * sin.astype(x.dtype)
