"""Stop-gradient reference forms of every primitive, used as test oracles.

Each rule is written with `swap_backward(f, g) = sg(f) + (g − sg(g))` (value of f, gradient
of g) or a plain stop-gradient, exactly as the rules are stated in the LibraGrad paper. These
cost an extra evaluation of the surrogate; the custom_vjp primitives in this package do not.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from libra_jax.ops.activations import GATES, PLAIN

sg = jax.lax.stop_gradient


def swap_backward(f: jax.Array, g: jax.Array) -> jax.Array:
    """Value of `f`, gradient of `g`."""
    return sg(f) + (g - sg(g))


def activation_reference(x, kind, rule):
    y = PLAIN[kind](x)
    if rule == "plain":
        return y
    return swap_backward(y, x * sg(GATES[kind](x)))


def gate_product_reference(a, b, rule):
    h = a * b
    return h if rule == "plain" else swap_backward(h, h / 2)


def layer_norm_reference(x, scale, bias, eps, rule):
    mean = x.mean(-1, keepdims=True)
    xc = x - mean
    var = (xc * xc).mean(-1, keepdims=True)
    if rule == "detach":
        var = sg(var)
    return xc * jax.lax.rsqrt(var + eps) * scale + bias


def rms_norm_reference(x, scale, eps, rule):
    ms = (x * x).mean(-1, keepdims=True)
    if rule == "detach":
        ms = sg(ms)
    return x * jax.lax.rsqrt(ms + eps) * scale


def unit_norm_reference(x, rule):
    norm = jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return x / (sg(norm) if rule == "detach" else norm)


def attention_reference(q, k, v, bias, probe, scale, rule):
    if rule == "detach":
        q, k = sg(q), sg(k)
        bias = None if bias is None else sg(bias)
    logits = jnp.einsum("...hqd,...hkd->...hqk", q * scale, k)
    if bias is not None:
        logits = logits + bias
    attn = jax.nn.softmax(logits, axis=-1)
    if rule == "attnlrp":
        attn = swap_backward(attn, attn / 4)
        v = swap_backward(v, v / 2)
    a = attn if probe is None else attn + probe
    return jnp.einsum("...hqk,...hkd->...hqd", a, v), attn
