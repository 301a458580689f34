"""Gate product h = a·b of GLU / SwiGLU MLPs with LibraGrad's ½ rule.

Under rule "half" the value is a·b and the gradient to *both* operands is halved
(SwapBackward(a·b, a·b/2)): the product is homogeneous of degree 2 in the block input, so
the halving keeps FullGrad complete.
"""

from __future__ import annotations

import jax

from libra_jax.rules import GateRule


@jax.custom_vjp
def _half_product(a: jax.Array, b: jax.Array) -> jax.Array:
    return a * b


def _half_product_fwd(a, b):
    return a * b, (a, b)


def _half_product_bwd(res, g):
    a, b = res
    half = 0.5 * g
    return half * b, half * a


_half_product.defvjp(_half_product_fwd, _half_product_bwd)


def gate_product(a: jax.Array, b: jax.Array, rule: GateRule = "plain") -> jax.Array:
    """Elementwise a·b (same shapes) with the gate rule "plain" or "half"."""
    if rule == "plain":
        return a * b
    if rule == "half":
        return _half_product(a, b)
    raise ValueError(f"unknown gate rule {rule!r}")
