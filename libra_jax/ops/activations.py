"""Gated activations y = x·gate(x) with the LibraGrad "gate constant" backward.

Under rule "detach" the backward is ∂y/∂x = gate(x) (for GELU the exact Φ(x)); the forward
is always the original op, computed once. Rule "plain" is the op itself with JAX's own AD.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from libra_jax.rules import ActivationRule

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _quick_gelu(x):
    return x * jax.nn.sigmoid(1.702 * x)


PLAIN = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "quick_gelu": _quick_gelu,
    "silu": jax.nn.silu,
}
"""The forward ops, by timm activation name (GELU is the exact erf form, as timm's nn.GELU)."""

GATES = {
    "gelu": lambda x: 0.5 * (1.0 + jax.lax.erf(x / math.sqrt(2.0))),
    "gelu_tanh": lambda x: 0.5 * (1.0 + jnp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3))),
    "quick_gelu": lambda x: jax.nn.sigmoid(1.702 * x),
    "silu": jax.nn.sigmoid,
}
"""gate(x) such that op(x) = x·gate(x)."""


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _gate_constant(kind: str, x: jax.Array) -> jax.Array:
    return PLAIN[kind](x)


def _gate_constant_fwd(kind, x):
    return PLAIN[kind](x), x


def _gate_constant_bwd(kind, x, g):
    return (g * GATES[kind](x).astype(g.dtype),)


_gate_constant.defvjp(_gate_constant_fwd, _gate_constant_bwd)


def activation(x: jax.Array, kind: str, rule: ActivationRule = "plain") -> jax.Array:
    """Apply the activation `kind` ("gelu", "gelu_tanh", "quick_gelu", "silu") elementwise.

    Args:
      x: any shape.
      kind: activation name.
      rule: "plain" (true gradient) or "detach" (gate(x) treated as a constant).
    Returns:
      Same shape and dtype as `x`; the value does not depend on `rule`.
    """
    if kind not in PLAIN:
        raise ValueError(f"unknown activation {kind!r}; known: {sorted(PLAIN)}")
    if rule == "plain":
        return PLAIN[kind](x)
    if rule == "detach":
        return _gate_constant(kind, x)
    raise ValueError(f"unknown activation rule {rule!r}")
