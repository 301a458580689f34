"""One forward + one backward pass per example, with every gradient the methods need.

The model is run with zero-valued probes ('perturbations'): at the token embeddings h₀, at
every block output, on every attention matrix and on every bias (see models/layers.py). One
`jax.vjp` of the explained scalar w.r.t. the probes then yields, in a single backward pass:
g_l = ∂f/∂h_l for every block input, ∂f/∂A_l for every attention matrix, and the FullGrad
bias map Σ_c b_c·∂f/∂out[t,c] of every bias. Methods are cheap read-outs of this record; under
`jit`, whatever a method does not read is dead code that XLA removes.

Everything here is per example (no batch axis); `libra_jax.attribution` vmaps it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax.traverse_util import flatten_dict

from libra_jax.models.contract import PROBES, probe_at
from libra_jax.rules import Rules

Target = Callable[[jax.Array, Any], jax.Array]


def target_function(rules: Rules, target: str | Target | None) -> Target:
    """The explained scalar f(logits (K,), y) for one example.

    `y` is a class index (int scalar) or a weight vector over classes (K,) (f = Σ_k w_k s_k).
    "prob" explains the softmax probability (S1, ordinary softmax gradient), "logit" the logit
    (S0). A callable is used as is.
    """
    kind = rules.target if target is None else target
    if callable(kind):
        return kind
    if kind not in ("prob", "logit"):
        raise ValueError(f"target must be 'prob', 'logit' or a callable; got {kind!r}")

    def f(logits, y):
        scores = jax.nn.softmax(logits) if kind == "prob" else logits
        if jnp.issubdtype(jnp.asarray(y).dtype, jnp.integer):
            return scores[y]
        return jnp.dot(scores, y.astype(scores.dtype))

    return f


def probe_template(model, x) -> dict:
    """Zero probes for one example x (an image (H, W, C) or a model's input pytree), shaped by tracing
    `model.init` abstractly."""
    spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), x)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), spec)[PROBES]
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def single_pass(model, params, x, y, rules: Rules, target: Target, multi: bool = False) -> dict:
    """Forward + backward for one example.

    Args:
      model: a model (models/contract.py).
      params: its params tree.
      x: one example's input (an (H, W, C) normalised image for vision models).
      y: class index / weights, or a stack of them (T, ...) when `multi`.
      rules: backward rules.
      target: f(logits, y) → scalar.
      multi: explain T targets from the one forward (the backward is vmapped over them).
    Returns:
      dict with 'logits' (K,), 'mask' (N,) bool (False at padding), 'target' f, 'h' [h_0..h_L] (N, C) each,
      'g' [g_0..g_L], 'attn' [A_l (H, N, N)], 'attn_grad' [∂f/∂A_l], 'post_attn' [residual after attention add],
      'bias' {probe path: bias map}, plus 'pool_attn' when the model has an attention pool, and 'words'
      (N, C) with 'g_words' = ∂f/∂words when a text model reports its word embeddings (aux 'words').
      With `multi`, target-dependent entries get a leading T axis.
    """
    probes = probe_template(model, x)

    def forward(p):
        return model.apply({"params": params, PROBES: p}, x, rules)

    logits, vjp_fn, aux = jax.vjp(forward, probes, has_aux=True)

    def backward(yi):
        f, df = jax.value_and_grad(lambda z: target(z, yi))(logits)
        (grads,) = vjp_fn(df.astype(logits.dtype))
        return f, grads

    f, grads = jax.vmap(backward)(y) if multi else backward(y)
    blocks = aux["blocks"]
    depth = range(len(blocks))
    attention = model.capabilities.attention
    mask = model.token_mask(x)
    record = {
        "logits": logits,
        "mask": jnp.ones(aux["tokens"].shape[:-1], bool) if mask is None else mask,
        "target": f,
        "h": [aux["tokens"], *(b["out"] for b in blocks)],
        "g": [probe_at(grads, "tokens"), *(probe_at(grads, "out", i) for i in depth)],
        "post_attn": [b["post_attn"] for b in blocks] if attention else [],
        "attn": [b["attn"] for b in blocks] if attention else [],
        "attn_grad": [probe_at(grads, "attn", i) for i in depth] if attention else [],
        "bias": {k[: -len("/bias")]: v for k, v in flatten_dict(grads, sep="/").items() if k.endswith("/bias")},
    }
    if "pool_attn" in aux:
        record["pool_attn"] = aux["pool_attn"]
    if "words" in aux:
        record["words"], record["g_words"] = aux["words"], probe_at(grads, "words")
    return jax.tree.map(to_float32, record)  # maps accumulate in float32 even when the model computes in bf16


def to_float32(a: jax.Array) -> jax.Array:
    """Floating arrays narrower than float32 → float32 (float32 and wider, and integers, unchanged)."""
    a = jnp.asarray(a)
    return a.astype(jnp.promote_types(a.dtype, jnp.float32)) if jnp.issubdtype(a.dtype, jnp.floating) else a
