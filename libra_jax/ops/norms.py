"""LayerNorm and RMSNorm with LibraGrad's "normaliser constant" backward.

Rule "detach": the value is unchanged; √(σ²+ε) (LayerNorm) or rms(x) (RMSNorm) is treated as a
constant, so the LayerNorm input gradient is γ/s·(g − mean(g)) — the mean subtraction keeps its
gradient. Scale and bias are explicit arguments and receive their ordinary gradients. The bias
may be broadcast over tokens (FullGrad's bias probes scale it per token).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from libra_jax.ops._util import sum_to_shape
from libra_jax.rules import NormRule


def layer_norm_plain(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    """Two-pass LayerNorm over the last axis, as torch's F.layer_norm."""
    mean = x.mean(-1, keepdims=True)
    xc = x - mean
    var = (xc * xc).mean(-1, keepdims=True)
    return xc * jax.lax.rsqrt(var + eps) * scale + bias


def rms_norm_plain(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    """RMSNorm over the last axis: x / √(mean(x²)+ε) · γ."""
    return x * jax.lax.rsqrt((x * x).mean(-1, keepdims=True) + eps) * scale


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _layer_norm_detach(x, scale, bias, eps):
    return layer_norm_plain(x, scale, bias, eps)


def _layer_norm_detach_fwd(x, scale, bias, eps):
    mean = x.mean(-1, keepdims=True)
    xc = x - mean
    var = (xc * xc).mean(-1, keepdims=True)
    inv = jax.lax.rsqrt(var + eps)
    y = xc * inv * scale + bias
    return y, (xc * inv, inv, scale, bias)


def _layer_norm_detach_bwd(eps, res, g):
    xhat, inv, scale, bias = res
    gs = g * scale
    dx = (gs - gs.mean(-1, keepdims=True)) * inv
    return dx, sum_to_shape(g * xhat, scale.shape), sum_to_shape(g, bias.shape)


_layer_norm_detach.defvjp(_layer_norm_detach_fwd, _layer_norm_detach_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _rms_norm_detach(x, scale, eps):
    return rms_norm_plain(x, scale, eps)


def _rms_norm_detach_fwd(x, scale, eps):
    inv = jax.lax.rsqrt((x * x).mean(-1, keepdims=True) + eps)
    return x * inv * scale, (x * inv, inv, scale)


def _rms_norm_detach_bwd(eps, res, g):
    xhat, inv, scale = res
    return g * scale * inv, sum_to_shape(g * xhat, scale.shape)


_rms_norm_detach.defvjp(_rms_norm_detach_fwd, _rms_norm_detach_bwd)


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, *, eps: float, rule: NormRule = "plain") -> jax.Array:
    """LayerNorm over the last axis.

    Args:
      x: (..., C).
      scale: (C,) γ.
      bias: β, broadcastable to x (usually (C,); (..., N, C) when a bias probe scales it).
      eps: ε inside the square root.
      rule: "plain" or "detach" (σ constant).
    Returns:
      (..., C) in x's dtype, identical in value for both rules. Inputs narrower than float32 (bf16
      compute) are normalised in float32: the statistics are where low precision hurts most.
    """
    wide = jnp.promote_types(x.dtype, jnp.float32)
    if wide != x.dtype:
        y = layer_norm(x.astype(wide), scale.astype(wide), jnp.asarray(bias, wide), eps=eps, rule=rule)
        return y.astype(x.dtype)
    if rule == "plain":
        return layer_norm_plain(x, scale, bias, eps)
    if rule == "detach":
        return _layer_norm_detach(x, scale, jnp.asarray(bias, x.dtype), eps)
    raise ValueError(f"unknown norm rule {rule!r}")


def rms_norm(x: jax.Array, scale: jax.Array, *, eps: float, rule: NormRule = "plain") -> jax.Array:
    """RMSNorm over the last axis; x: (..., C), scale: (C,). Rule "detach": rms constant. Returns x's dtype;
    inputs narrower than float32 (bf16 compute) are normalised in float32, as `layer_norm`."""
    wide = jnp.promote_types(x.dtype, jnp.float32)
    if wide != x.dtype:
        return rms_norm(x.astype(wide), scale.astype(wide), eps=eps, rule=rule).astype(x.dtype)
    if rule == "plain":
        return rms_norm_plain(x, scale, eps)
    if rule == "detach":
        return _rms_norm_detach(x, scale, eps)
    raise ValueError(f"unknown norm rule {rule!r}")


def unit_norm_plain(x: jax.Array) -> jax.Array:
    """x / ‖x‖ over the last axis (torch `F.normalize`: the norm is clamped at 1e-12)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@jax.custom_vjp
def _unit_norm_detach(x):
    return unit_norm_plain(x)


def _unit_norm_detach_fwd(x):
    norm = jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return x / norm, norm


def _unit_norm_detach_bwd(norm, g):
    return (g / norm,)


_unit_norm_detach.defvjp(_unit_norm_detach_fwd, _unit_norm_detach_bwd)


def unit_norm(x: jax.Array, *, rule: NormRule = "plain") -> jax.Array:
    """Normalise to unit length over the last axis; x: (..., C) → (..., C).

    Rule "detach" is LibraGrad's N2U rule (official `LX1` of `normalize_to_unit_vector`): ‖x‖ is a
    constant in the backward, so ∂y/∂x = I/‖x‖ and y is linear in x for the attribution — the
    CLIP similarity ⟨n(x), t⟩ then stays FullGrad-complete.
    """
    if rule == "plain":
        return unit_norm_plain(x)
    if rule == "detach":
        return _unit_norm_detach(x)
    raise ValueError(f"unknown unit-norm rule {rule!r}")
