"""1-D rotary position embedding of decoder LLMs in the split-half ("rotate_half") layout of Hugging Face
Llama / Mistral / Qwen / Gemma, with the `rope_scaling` types "default", "linear" and "llama3".

The inverse frequencies are a pure function of the config, computed on the host in float32 as
transformers' `modeling_rope_utils` computes them; the angles are positions ⊗ frequencies, so the
table follows the (possibly left-padded) position ids of each example. RoPE is linear in q and k:
it needs no LibraGrad rule (the attention rule detaches q and k after it).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

ROPE_TYPES = ("default", "linear", "llama3")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """transformers' `rope_scaling` / `rope_parameters` (minus the base θ).

    kind: "default" (none), "linear" (positions / factor, i.e. frequencies / factor) or "llama3"
    (Llama 3.1: low frequencies / factor, high ones kept, a smooth blend between; the band edges
    are original_max_position_embeddings / {low,high}_freq_factor wavelengths).
    """

    kind: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def __post_init__(self):
        if self.kind not in ROPE_TYPES:
            raise ValueError(
                f"unsupported rope_scaling type {self.kind!r}; supported: {ROPE_TYPES}"
                " (convert the checkpoint's config or drop the scaling if the prompts fit the original context)"
            )


def inverse_frequencies(head_dim: int, theta: float, scaling: RopeScaling = RopeScaling()) -> np.ndarray:
    """(head_dim/2,) float32 inverse frequencies 1/θ^(2i/d), rescaled by `scaling`."""
    inv = (1.0 / (np.float32(theta) ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)))).astype(
        np.float32
    )
    if scaling.kind == "linear":
        return (inv / np.float32(scaling.factor)).astype(np.float32)
    if scaling.kind == "llama3":
        old = scaling.original_max_position_embeddings
        low_wavelen, high_wavelen = old / scaling.low_freq_factor, old / scaling.high_freq_factor
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > low_wavelen, inv / scaling.factor, inv)
        smooth = (old / wavelen - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor)
        blended = (1 - smooth) * scaled / scaling.factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return np.where(medium, blended, scaled).astype(np.float32)
    return inv


def rope_angles(positions: jax.Array, inv_freq: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """(sin, cos), each (..., N, head_dim) float32, for integer positions (..., N): angles p·f_i,
    the half-table repeated (not interleaved), as transformers' `cat((freqs, freqs), -1)`."""
    freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)
    angles = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.sin(angles), jnp.cos(angles)


def rotate_half(x: jax.Array) -> jax.Array:
    """[x₁, x₂] → [−x₂, x₁] over the last axis (halves)."""
    first, second = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-second, first], axis=-1)


def apply_rope_half(x: jax.Array, sin: jax.Array, cos: jax.Array) -> jax.Array:
    """x·cos + rotate_half(x)·sin: x (..., H, N, D), sin/cos (..., N, D) (broadcast over heads)."""
    sin, cos = (jnp.expand_dims(t, -3).astype(x.dtype) for t in (sin, cos))
    return x * cos + rotate_half(x) * sin
