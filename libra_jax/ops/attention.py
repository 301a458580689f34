"""Attention core softmax(q·kᵀ·scale + bias)·v with LibraGrad / AttnLRP backward rules.

A zero-valued `probe` may be added to the post-softmax probabilities A; its gradient is
∂f/∂A, so GenAtt/GradSAM-style methods get ∂f/∂A from the same backward pass. The probe
gradient is the cotangent of A as used in A·v, whatever the rule (it is unaffected by the
q/k detach, as in the official implementation).

Rules:
  "plain":   the true gradient (JAX's own AD through the softmax).
  "detach":  A constant: q, k and bias get zero gradient; v gets Aᵀ·g. No softmax Jacobian
             is ever formed.
  "attnlrp": value unchanged; the gradient reaching the softmax is scaled by ¼ and the one
             reaching v by ½ (A ← SB(A, A/4), v ← SB(v, v/2)).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from libra_jax.ops._util import sum_to_shape, zeros_like_or_none
from libra_jax.rules import AttentionRule


def _probabilities(q, k, bias, scale):
    wide = jnp.promote_types(q.dtype, jnp.float32)  # softmax in float32 under bf16 compute
    logits = jnp.einsum("...hqd,...hkd->...hqk", q * scale, k, preferred_element_type=wide)
    if bias is not None:
        logits = logits + bias
    return jax.nn.softmax(logits, axis=-1).astype(q.dtype)


def _mix(attn, probe, v):
    a = attn if probe is None else attn + probe
    return jnp.einsum("...hqk,...hkd->...hqd", a, v), a


def attention_plain(q, k, v, bias=None, probe=None, *, scale: float):
    """Reference forward (and true gradient): returns (out, A)."""
    attn = _probabilities(q, k, bias, scale)
    out, _ = _mix(attn, probe, v)
    return out, attn


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _attention_rule(rule, scale, q, k, v, bias, probe):
    return attention_plain(q, k, v, bias, probe, scale=scale)


def _attention_rule_fwd(rule, scale, q, k, v, bias, probe):
    attn = _probabilities(q, k, bias, scale)
    out, a = _mix(attn, probe, v)
    if rule == "detach":
        res = (None, None, v, attn, a, bias, probe)
    else:
        res = (q, k, v, attn, a, bias, probe)
    return (out, attn), res


def _attention_rule_bwd(rule, scale, res, cts):
    q, k, v, attn, a, bias, probe = res
    g_out, g_attn = cts
    d_a = jnp.einsum("...hqd,...hkd->...hqk", g_out, v)  # ∂f/∂(A + probe)
    d_v = jnp.einsum("...hqk,...hqd->...hkd", a, g_out)
    d_probe = None if probe is None else sum_to_shape(d_a, probe.shape)
    if rule == "detach":
        return (
            jnp.zeros(g_out.shape[:-2] + (attn.shape[-2], v.shape[-1]), g_out.dtype),
            jnp.zeros(g_out.shape[:-2] + (attn.shape[-1], v.shape[-1]), g_out.dtype),
            d_v,
            zeros_like_or_none(bias),
            d_probe,
        )
    # attnlrp: ¼ of the gradient reaches the softmax, ½ reaches v.
    d_attn = 0.25 * (d_a + g_attn)
    d_logits = attn * (d_attn - (attn * d_attn).sum(-1, keepdims=True))
    d_q = scale * jnp.einsum("...hqk,...hkd->...hqd", d_logits, k)
    d_k = scale * jnp.einsum("...hqk,...hqd->...hkd", d_logits, q)
    # the bias may be wider than the bf16 probabilities (a float32 mask): its cotangent takes its dtype
    d_bias = None if bias is None else sum_to_shape(d_logits, bias.shape).astype(bias.dtype)
    return d_q, d_k, 0.5 * d_v, d_bias, d_probe


_attention_rule.defvjp(_attention_rule_fwd, _attention_rule_bwd)


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    bias: jax.Array | None = None,
    probe: jax.Array | None = None,
    *,
    scale: float,
    rule: AttentionRule = "plain",
) -> tuple[jax.Array, jax.Array]:
    """Multi-head attention core.

    Args:
      q: (..., H, Nq, D) queries (before scaling).
      k: (..., H, Nk, D) keys.
      v: (..., H, Nk, Dv) values.
      bias: optional additive logit bias broadcastable to (..., H, Nq, Nk) (relative position
        bias, masks).
      probe: optional zero-valued (..., H, Nq, Nk) array added to A before A·v.
      scale: logit scale (usually D**-0.5), applied to q as timm does.
      rule: "plain", "detach" or "attnlrp".
    Returns:
      (out (..., H, Nq, Dv), A (..., H, Nq, Nk)) — A without the probe.
    """
    if rule == "plain":
        return attention_plain(q, k, v, bias, probe, scale=scale)
    if rule in ("detach", "attnlrp"):
        return _attention_rule(rule, scale, q, k, v, bias, probe)
    raise ValueError(f"unknown attention rule {rule!r}")
