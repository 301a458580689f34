"""Gated activations y = x·gate(x) with the LibraGrad "gate constant" backward.

Under rule "detach" the backward is ∂y/∂x = gate(x) (for GELU the exact Φ(x)); the forward
is always the original op, computed once. Rule "plain" is the op itself with JAX's own AD.
tanh (BERT pooler, RoBERTa head, logit soft-capping) is x·(tanh(x)/x), so under "detach" it is
linear for the backward and FullGrad stays complete; ReLU's gate is the step, whose
"detach" backward equals its plain one.
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


def _tanh_gate(x):
    """tanh(x)/x, continued by its Taylor series 1 − x²/3 near 0 (error ~x⁴, below float64 ulp there)."""
    small = jnp.abs(x) < 1e-4
    safe = jnp.where(small, 1.0, x)
    return jnp.where(small, 1.0 - x * x / 3.0, jnp.tanh(safe) / safe)


PLAIN = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "quick_gelu": _quick_gelu,
    "silu": jax.nn.silu,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
}
"""The forward ops, by timm activation name (GELU is the exact erf form, as timm's nn.GELU)."""

GATES = {
    "gelu": lambda x: 0.5 * (1.0 + jax.lax.erf(x / math.sqrt(2.0))),
    "gelu_tanh": lambda x: 0.5 * (1.0 + jnp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3))),
    "quick_gelu": lambda x: jax.nn.sigmoid(1.702 * x),
    "silu": jax.nn.sigmoid,
    "tanh": _tanh_gate,
    "relu": lambda x: (x > 0).astype(x.dtype),
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
    """Apply the activation `kind` ("gelu", "gelu_tanh", "quick_gelu", "silu", "tanh", "relu") elementwise.

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
