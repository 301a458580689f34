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

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax.traverse_util import flatten_dict, unflatten_dict

from libra_jax.models.contract import OPTIONAL_PROBES, PROBES, probe_at
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


def probe_template(model, x, optional: Sequence[str] = ()) -> dict:
    """Zero probes for one example x (an image (H, W, C) or a model's input pytree), shaped by tracing
    `model.init` abstractly; of the `OPTIONAL_PROBES` (models/contract.py) only the kinds in `optional`."""
    unknown = set(optional) - set(OPTIONAL_PROBES)
    if unknown:
        raise ValueError(f"unknown optional probes {sorted(unknown)}; expected some of {sorted(OPTIONAL_PROBES)}")
    spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), x)
    shapes = flatten_dict(jax.eval_shape(model.init, jax.random.PRNGKey(0), spec)[PROBES])
    # a probe left out of the template is not applied at all (models/layers.py `probe`): no cost when unread
    skipped = {name for kind, name in OPTIONAL_PROBES.items() if kind not in optional}
    return unflatten_dict({k: jnp.zeros(s.shape, s.dtype) for k, s in shapes.items() if k[-1] not in skipped})


def single_pass(
    model, params, x, y, rules: Rules, target: Target, multi: bool = False, probes: Sequence[str] = ()
) -> dict:
    """Forward + backward for one example.

    Args:
      model: a model (models/contract.py).
      params: its params tree.
      x: one example's input (an (H, W, C) normalised image for vision models).
      y: class index / weights, or a stack of them (T, ...) when `multi`.
      rules: backward rules.
      target: f(logits, y) → scalar.
      multi: explain T targets from the one forward (the backward is vmapped over them).
      probes: `OPTIONAL_PROBES` kinds to record too (the model must offer them: `Capabilities.optional_probes`).
    Returns:
      dict with 'logits' (K,), 'mask' (N,) bool (False at padding), 'target' f, 'h' [h_0..h_L] (N, C) each,
      'g' [g_0..g_L], 'attn' [A_l (H, N, N)], 'attn_grad' [∂f/∂A_l], 'post_attn' [residual after attention add],
      'bias' {probe path: bias map}, plus 'pool_attn' when the model has an attention pool, and per kind k of
      `probes` 'k' [block l's value] and 'k_grad' [its gradient] (e.g. 'norm1' / 'norm1_grad', (N, C) each),
      and 'words' (N, C) with 'g_words' = ∂f/∂words when a text model reports its word embeddings (aux 'words').
      With `multi`, target-dependent entries ('target', 'g', 'attn_grad', 'bias', 'g_words', the '_grad' of
      `probes`) get a leading T axis.
    """
    missing = set(probes) - set(model.capabilities.optional_probes)
    if missing:
        offered = model.capabilities.optional_probes
        raise ValueError(f"this model does not record the probes {sorted(missing)}; it offers {list(offered)}")
    template = probe_template(model, x, probes)

    def forward(p):
        return model.apply({"params": params, PROBES: p}, x, rules)

    logits, vjp_fn, aux = jax.vjp(forward, template, has_aux=True)

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
    for kind in probes:
        record[kind] = [b[kind] for b in blocks]
        record[f"{kind}_grad"] = [probe_at(grads, kind, i) for i in depth]
    if "words" in aux:
        record["words"], record["g_words"] = aux["words"], probe_at(grads, "words")
    return jax.tree.map(to_float32, record)  # maps accumulate in float32 even when the model computes in bf16


def to_float32(a: jax.Array) -> jax.Array:
    """Floating arrays narrower than float32 → float32 (float32 and wider, and integers, unchanged)."""
    a = jnp.asarray(a)
    return a.astype(jnp.promote_types(a.dtype, jnp.float32)) if jnp.issubdtype(a.dtype, jnp.floating) else a
