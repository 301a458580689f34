"""Chefer et al. (CVPR'21) on BERT-family classifiers, as the official BERT code computes it.

The relevance pass of `hila-chefer/Transformer-Explainability`'s BERT modules (tested against that code's
outputs in tests/test_bert_golden.py), over the activations of ONE recorded forward pass, with the LRP rules of
`methods/lrp.py` (α1β0 Linear, LRP-0 Add / fork / matmul, the 1e-9 safe division). What differs from the
ViT pass:

  * the head: classifier (x = pooled) → tanh (identity) → pooler dense (x = h[CLS]) → [CLS] select;
  * post-norm blocks: the residual adds sit before the LayerNorms, so block l's pass is
    Add(o, y) → MLP → fork(y) → Add(ao, x) → attention → fork(x);
  * the attention's mask add (S/√d + m) is a relevance Add too (the "ours" rules renormalise there);
    Q·Kᵀ is LRP-0 on the unscaled S; q, k and v are three Linears whose relevances meet in one fork;
  * the pass stops at the encoder input (the embedding LayerNorm's output);
  * the maps: transformer attribution rolls out (I + Ā_l) **row-normalised** from `start_layer` and sets
    [CLS] to the row minimum; partial LRP, full LRP, raw attention, rollout and GradCAM set [CLS] to 0,
    GradCAM after a min-max over the whole N×N matrix (NaN when that matrix is constant, as officially).

`record` runs the forward, the backward and both relevance passes once; every method is a read-out of it
(`read_*`), so several maps of one example cost one record.

Relevance seed: one-hot at y (value 1), or y itself when it is a (K,) class-weight vector. The gradient
∂f/∂A_l is that of `target` under `rules`; the official code uses the raw logit under plain rules
(target="logit", rules="vanilla"). Per example: x a `TextInputs` of one sequence (N,), y a class index;
every map is (N,) over all positions ([CLS] and [SEP] included).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from libra_jax.methods import requirements
from libra_jax.methods.core import Target
from libra_jax.methods.lrp import _add, _attention_gradients, _halved_matmul, _linear, _lrp0, _recorded, _seed
from libra_jax.models.bert import padding_bias
from libra_jax.models.layers import merge_heads, split_heads
from libra_jax.rules import Rules


def _fork(x: jax.Array, *rs: jax.Array) -> jax.Array:
    """The official Clone: x feeds several branches with relevances rs → R_x = x ⊙ Σ_i sdiv(R_i, x)."""
    return _lrp0(lambda t: (t,) * len(rs), (x,), rs)[0]


def _block_relevance(mask: jax.Array, a: dict, r: jax.Array, orig: bool):
    """Relevance through one block (a `BertRelevanceBlock`, models/bert_relevance.py), R (N, C) at its output
    → (R at its input h (N, C), R_A (H, N, N))."""
    h, y = a["h"], a["y"]
    r_mlp, r_y = _add(a["mlp_out"], y, r, orig)
    r_mlp = _linear(a["hidden"], a["fc2_kernel"], r_mlp, orig)
    r_mlp = _linear(y, a["fc1_kernel"], r_mlp, orig)
    r = _fork(y, r_mlp, r_y)

    r_att, r_h = _add(a["attn_out"], h, r, orig)
    attn = a["attn"]
    heads = attn.shape[-3]
    q, k, v = (split_heads(t, heads) for t in jnp.split(a["qkv"], 3, axis=-1))
    r_ctx = split_heads(_linear(merge_heads(attn @ v), a["proj_kernel"], r_att, orig), heads)
    r_attn, r_v = _halved_matmul(attn, v, r_ctx)
    kt = jnp.swapaxes(k, -1, -2)
    scores = q @ kt  # unscaled (the official matmul1); the 1/√d is not a module
    bias = jnp.broadcast_to(padding_bias(mask, scores.dtype), scores.shape)
    r_scores, _ = _add(scores * q.shape[-1] ** -0.5, bias, r_attn, orig)
    r_q, r_kt = _halved_matmul(q, kt, r_scores)
    kernels = jnp.split(a["qkv_kernel"], 3, axis=-1)
    r_qkv = (r_q, jnp.swapaxes(r_kt, -1, -2), r_v)
    r_in = [_linear(h, w, merge_heads(t), orig) for w, t in zip(kernels, r_qkv, strict=True)]
    return _fork(h, _fork(h, *r_in), r_h), r_attn


def relevance(rec: dict, y, orig: bool):
    """The relevance pass over a `BertRelevanceRecord` from the seed at the logits down to the encoder input.

    orig=False: the rules of Chefer's method (`layers_ours.py`); True: the LRP baselines' (`layers_lrp.py`).
    Returns (R (N, C) at the encoder input (the embedding LayerNorm's output), R_A (L, H, N, N) per block).
    """
    aux = rec["aux"]
    features = aux["features"]
    r = _linear(aux["pooled"], rec["classifier_kernel"], _seed(y, rec["output"]), orig)  # head activation: identity
    r = _linear(features[0], rec["pooler_kernel"], r, orig)
    r = _lrp0(lambda f: f[0], (features,), r)[0]
    blocks = jax.tree.map(lambda *t: jnp.stack(t), *rec["blocks"])

    def step(r, block):
        return _block_relevance(rec["mask"], block, r, orig)

    # A scan traces and compiles one block body, whatever the depth.
    return jax.lax.scan(step, r, blocks, reverse=True)


def record(model, params, x, y, rules: Rules, target: Target) -> dict:
    """Everything the methods read, from ONE forward, ONE backward and the two relevance passes.

    Returns {'attn': A (L, H, N, N), 'attn_grad': ∂f/∂A (L, H, N, N), 'mask' (N,), 'ours' and 'orig':
    (R (N, C) at the encoder input, R_A (L, H, N, N))}. Each method below is a read-out of it: under `jit`,
    what a method does not read (the backward, a relevance pass) is dead code that XLA removes.
    """
    requirements.check(model, "Chefer's BERT methods", REQUIREMENTS)
    rec, grads = _attention_gradients(model, x, y, target, _recorded(model, params, x, rules))
    return {
        "attn": jnp.stack([b["attn"] for b in rec["blocks"]]),
        "attn_grad": jnp.stack(grads),
        "mask": rec["mask"],
        **{name: relevance(rec, y, orig) for name, orig in RULE_SETS.items()},
    }


RULE_SETS = {"ours": False, "orig": True}
"""The two relevance rule sets: Chefer's method (`layers_ours.py`) and the LRP baselines' (`layers_lrp.py`)."""


def _rollout(mats: jax.Array) -> jax.Array:
    """Row 0 of aug(M_{last}) ⋯ aug(M_first) for mats (L', N, N), aug(M) = (M + I) / rowsum(M + I)
    (`compute_rollout_attention`)."""
    eye = jnp.eye(mats.shape[-1], dtype=mats.dtype)
    joint = eye
    for m in mats:
        aug = m + eye
        joint = (aug / aug.sum(-1, keepdims=True)) @ joint
    return joint[0]


def _check_start(rec: dict, start_layer: int) -> None:
    depth = rec["attn"].shape[0]
    if not 0 <= start_layer < depth:
        raise ValueError(f"start_layer must be in [0, {depth}); got {start_layer}")


def read_transformer_attribution(rec: dict, start_layer: int = 0) -> jax.Array:
    """Row 0 of the rollout of Ā_l = mean_h (∂f/∂A_l ⊙ R_A,l)⁺ (ours rules) from `start_layer`; [CLS] ← the
    minimum over the real tokens."""
    _check_start(rec, start_layer)
    abar = jax.nn.relu(rec["attn_grad"] * rec["ours"][1]).mean(-3)
    row = _rollout(abar[start_layer:])
    return row.at[0].set(jnp.where(rec["mask"], row, jnp.inf).min())


def read_partial_lrp(rec: dict, rule_set: str = "orig") -> jax.Array:
    """Row 0 of mean_h (R_A)⁺ of the last block; [CLS] ← 0."""
    return jax.nn.relu(rec[rule_set][1][-1]).mean(-3)[0].at[0].set(0.0)


def read_full_lrp(rec: dict, rule_set: str = "orig") -> jax.Array:
    """The encoder-input relevance summed over hidden units (signed); [CLS] ← 0."""
    return rec[rule_set][0].sum(-1).at[0].set(0.0)


def read_attn_gradcam(rec: dict) -> jax.Array:
    """α_h = mean over all (i, j) of ∂f/∂A_{L−1}[h]; M = (mean_h α_h A_h)⁺ min-max normalised over the whole
    matrix; row 0, [CLS] ← 0. Padding takes no part (∂f/∂A is not 0 at padded keys, where A is)."""
    real = rec["mask"]
    pairs = real[:, None] & real[None, :]
    weights = jnp.where(pairs, rec["attn_grad"][-1], 0.0).sum((-2, -1)) / pairs.sum()
    m = jax.nn.relu((weights[:, None, None] * rec["attn"][-1]).mean(0))
    lo, hi = jnp.where(pairs, m, jnp.inf).min(), jnp.where(pairs, m, -jnp.inf).max()
    return jnp.where(real, (m[0] - lo) / (hi - lo), 0.0).at[0].set(0.0)


def read_rawatt(rec: dict) -> jax.Array:
    """mean_h A_{L−1}[h, 0, :]; [CLS] ← 0."""
    return rec["attn"][-1].mean(0)[0].at[0].set(0.0)


def read_rollout(rec: dict, start_layer: int = 0) -> jax.Array:
    """Row 0 of the rollout of mean_h A_l from `start_layer`; [CLS] ← 0."""
    _check_start(rec, start_layer)
    return _rollout(rec["attn"][start_layer:].mean(-3)).at[0].set(0.0)


def transformer_attribution(model, params, x, y, rules: Rules, target: Target, start_layer: int = 0) -> jax.Array:
    """Chefer CVPR'21 on BERT (`generate_LRP`): see `read_transformer_attribution`. start_layer: the demo's 0;
    the benchmark's default is 11 (L − 1 for BERT-base). Returns (N,)."""
    return read_transformer_attribution(record(model, params, x, y, rules, target), start_layer)


def partial_lrp(model, params, x, y, rules: Rules, target: Target, rule_set: str = "orig") -> jax.Array:
    """Partial LRP (`generate_LRP_last_layer`), orig rules as the benchmark runs it ('ours': Chefer's model).
    Relevance only: `rules` and `target` do not change it. Returns (N,)."""
    return read_partial_lrp(record(model, params, x, y, rules, target), rule_set)


def full_lrp(model, params, x, y, rules: Rules, target: Target, rule_set: str = "orig") -> jax.Array:
    """Full LRP at the encoder input (`generate_full_lrp`), orig rules by default. Relevance only. Returns (N,)."""
    return read_full_lrp(record(model, params, x, y, rules, target), rule_set)


def attn_gradcam(model, params, x, y, rules: Rules, target: Target) -> jax.Array:
    """Chefer's attention GradCAM (`generate_attn_gradcam`): see `read_attn_gradcam`. NaN (0/0) at every
    non-[CLS] entry when M is constant (all zero), as the official code returns: kept, so the caller sees the
    map is undefined. Returns (N,)."""
    return read_attn_gradcam(record(model, params, x, y, rules, target))


def rawatt(model, params, x, y, rules: Rules, target: Target) -> jax.Array:
    """Raw attention of the last block (`generate_attn_last_layer`). Returns (N,)."""
    return read_rawatt(record(model, params, x, y, rules, target))


def rollout(model, params, x, y, rules: Rules, target: Target, start_layer: int = 0) -> jax.Array:
    """Attention rollout (`generate_rollout`), row-normalised. Returns (N,)."""
    return read_rollout(record(model, params, x, y, rules, target), start_layer)


MULTI_PASS = {
    "transformer_attribution": transformer_attribution,
    "partial_lrp": partial_lrp,
    "full_lrp": full_lrp,
    "attn_gradcam": attn_gradcam,
    "rawatt": rawatt,
    "rollout": rollout,
}
"""Chefer's BERT methods and baselines as the official BERT code computes them: name → fn(model, params, x, y,
rules, target, **options), per example. `libra_jax.attribution` runs the first four for models whose
`Capabilities.relevance_pass` is "bert" (rollout and raw attention there are the generic methods/maps.py ones)."""

REQUIREMENTS = (
    requirements.attention("Chefer's BERT methods"),
    requirements.class_token_row("Chefer's BERT methods"),
    requirements.relevance_pass("Chefer's BERT methods"),
    requirements.relevance_kind("Chefer's BERT methods", "bert"),
)
"""What every method here needs (methods/requirements.py): attention, [CLS] pooling and the relevance record."""
