"""Soft-capping c·tanh(x/c) (Gemma 2 final logits) with the LibraGrad "gate constant" backward.

c·tanh(x/c) = x·g(x) with g(x) = tanh(x/c)/(x/c). Under rule "detach" g is held constant, so the op is
linear for the backward (∂y/∂x = g(x)) and FullGrad stays complete through it; "plain" is
JAX's own derivative 1 − tanh²(x/c).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from libra_jax.rules import ActivationRule


def softcap_plain(x: jax.Array, cap: float) -> jax.Array:
    return cap * jnp.tanh(x / cap)


def softcap_gate(x: jax.Array, cap: float) -> jax.Array:
    """tanh(u)/u at u = x/c, continued by 1 − u²/3 near 0 (its Taylor series; error ~u⁴)."""
    u = x / cap
    small = jnp.abs(u) < 1e-4
    safe = jnp.where(small, 1.0, u)
    return jnp.where(small, 1.0 - u * u / 3.0, jnp.tanh(safe) / safe)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _softcap_detach(x, cap):
    return softcap_plain(x, cap)


def _softcap_detach_fwd(x, cap):
    return softcap_plain(x, cap), x


def _softcap_detach_bwd(cap, x, g):
    return (g * softcap_gate(x, cap).astype(g.dtype),)


_softcap_detach.defvjp(_softcap_detach_fwd, _softcap_detach_bwd)


def softcap(x: jax.Array, cap: float, rule: ActivationRule = "plain") -> jax.Array:
    """c·tanh(x/c) elementwise (any shape, same dtype); rule "plain" or "detach" (gate constant)."""
    if rule == "plain":
        return softcap_plain(x, cap)
    if rule == "detach":
        return _softcap_detach(x, cap)
    raise ValueError(f"unknown soft-cap rule {rule!r}")
