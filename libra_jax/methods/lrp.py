"""Chefer et al. (CVPR'21) LRP relevance: transformer_attribution, full_lrp, partial_lrp, attn_gradcam.

The relevance pass of `hila-chefer/Transformer-Explainability` (its ViT_LRP model and LRP layers),
rule for rule, as an explicit backward sweep over the activations of ONE recorded forward pass
(the model's `relevance_record`; no second forward). Every rule is LRP-0 through a small function,
`R_i = arg_i ⊙ vjp(f)(R / f(args))` (`_lrp0`), so the code reads like the rule table:

  * Linear (bias ignored): α1β0; "ours" shares one denominator Z = x⁺W⁺ + x⁻W⁻, "orig" (the LRP
    baselines' `layers_lrp.py`) divides each term by its own part, so relevance roughly doubles.
  * LayerNorm, activation, softmax, dropout, LayerScale: identity (LayerScale is a diagonal linear
    map, where LRP-0 is the identity up to the 1e-9 stabiliser; the official ViT has none).
  * A·V and Q·Kᵀ: LRP-0 on both operands, each halved. R_A of A·V is the relevance the methods read.
  * Residual add: LRP-0 split; "ours" rescales each branch to its |share| of ΣR (per example).
  * Residual fork (clone): R_x = x ⊙ Σ_i sdiv(R_i, x). CLS pooling: LRP-0 (all relevance on token 0).
  * Patch embedding (full LRP only): the z^B rule with the image's min / max as bounds.

Relevance seed: one-hot at the class y (Chefer seeds 1.0, not the logit value), or y itself when y
is a (K,) class-weight vector. `target` does NOT change the seed; it is the scalar whose gradient
∂f/∂A_l (under `rules`) the gradient-weighted methods use. The official code differentiates the raw
logit: use target="logit" (e.g. `transformer_attribution(model, target="logit")`) to reproduce it;
the library default of the vanilla preset is the softmax probability (README, "Rule presets").

Per example: x (H, W, C) normalised, y a class index; every method returns an (N,) token map with
the prefix tokens first. `libra_jax.attribution` vmaps over the batch, so the Add rescaling sums are
per sample, as in the official batch-1 code.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import traverse_util

from libra_jax.methods import requirements
from libra_jax.methods.core import Target, probe_template
from libra_jax.models.contract import PROBES, RelevanceBlock, RelevanceRecord, probe_at, probe_path
from libra_jax.models.layers import merge_heads, split_heads
from libra_jax.rules import Rules

EPS = 1e-9


def _sdiv(a: jax.Array, b: jax.Array) -> jax.Array:
    """The official `safe_divide`: a / (b + 1e-9) where b ≠ 0, else 0 (the 1e-9 is not sign-aware)."""
    den = b + EPS
    den = den + EPS * (den == 0)
    return jnp.where(b == 0, 0.0, a / den)


def _lrp0(f, args: tuple, r, divide=_sdiv) -> tuple:
    """LRP-0 through f: R_i = args_i ⊙ (∂f/∂args_i)ᵀ·divide(R, f(args)) for every argument."""
    z, vjp = jax.vjp(f, *args)
    return tuple(a * c for a, c in zip(args, vjp(jax.tree.map(divide, r, z)), strict=True))


def _linear(x: jax.Array, w: jax.Array, r: jax.Array, orig: bool) -> jax.Array:
    """α1β0 rule of the bias-free Linear x·w; x (..., in), w (in, out), r (..., out) → (..., in)."""
    xp, xn = jnp.maximum(x, 0), jnp.minimum(x, 0)
    wp, wn = jnp.maximum(w, 0), jnp.minimum(w, 0)
    if orig:
        return _lrp0(lambda a: a @ wp, (xp,), r)[0] + _lrp0(lambda a: a @ wn, (xn,), r)[0]
    rp, rn = _lrp0(lambda a, b: a @ wp + b @ wn, (xp, xn), r)
    return rp + rn


def _add(u: jax.Array, v: jax.Array, r: jax.Array, orig: bool) -> tuple[jax.Array, jax.Array]:
    """Relevance of the two summands of u + v; "ours" gives each its |share| of ΣR."""
    a, b = _lrp0(jnp.add, (u, v), r)
    if orig:
        return a, b
    sa, sb = a.sum(), b.sum()
    share = jnp.abs(sa) + jnp.abs(sb)
    return a * _sdiv(_sdiv(jnp.abs(sa), share) * r.sum(), sa), b * _sdiv(_sdiv(jnp.abs(sb), share) * r.sum(), sb)


def _clone(x: jax.Array, r1: jax.Array, r2: jax.Array) -> jax.Array:
    """The residual fork x → (x, x): R_x = x ⊙ (sdiv(R₁, x) + sdiv(R₂, x))."""
    return _lrp0(lambda t: (t, t), (x,), (r1, r2))[0]


def _halved_matmul(a: jax.Array, b: jax.Array, r: jax.Array) -> tuple[jax.Array, jax.Array]:
    """½·LRP-0 of a @ b onto both operands (the official binary-op normalisation)."""
    ra, rb = _lrp0(jnp.matmul, (a, b), r)
    return 0.5 * ra, 0.5 * rb


def _attention_gradients(model, x: jax.Array, y, target: Target, forward) -> tuple:
    """(forward's aux, [∂f/∂A_l per block]) of `forward(probes) → (output, aux)` with zero probes on A_l only."""
    template = probe_template(model, x)
    layers = range(model.capabilities.depth)
    probes = traverse_util.unflatten_dict({probe_path("attn", i): probe_at(template, "attn", i) for i in layers})
    output, vjp_fn, aux = jax.vjp(forward, probes, has_aux=True)
    (grads,) = vjp_fn(jax.grad(target)(output, y).astype(output.dtype))
    return aux, [probe_at(grads, "attn", i) for i in layers]


def _recorded(model, params, x: jax.Array, rules: Rules):
    """forward(probes) → (output, `RelevanceRecord`) for `_attention_gradients`."""

    def forward(probes):
        rec = model.relevance_record(params, x, rules, probes)
        return rec["output"], rec

    return forward


def _seed(y, logits: jax.Array) -> jax.Array:
    """The relevance at the logits: one-hot of a class index, or a (K,) class-weight vector as is."""
    y = jnp.asarray(y)
    if jnp.issubdtype(y.dtype, jnp.integer) and y.ndim == 0:
        return jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype)
    if y.shape == logits.shape:
        return y.astype(logits.dtype)
    raise ValueError(f"the LRP relevance seed needs a class index or {logits.shape} class weights; got {y.shape}")


def _block_relevance(block: RelevanceBlock, r: jax.Array, orig: bool) -> tuple[jax.Array, jax.Array]:
    """Relevance through one block (§1.4), R (N, C) at its output → (R at its input, R_A (H, N, N))."""
    t_mid, x_in, attn = block["post_attn"], block["input"], block["attn"]
    r_res, r_mlp = _add(t_mid, block["mlp_branch"], r, orig)
    r_mlp = _linear(block["hidden"], block["fc2_kernel"], r_mlp, orig)
    r_mlp = _linear(block["norm2"], block["fc1_kernel"], r_mlp, orig)
    r = _clone(t_mid, r_res, r_mlp)

    r_res, r_att = _add(x_in, block["attn_branch"], r, orig)
    heads = attn.shape[-3]
    q, k, v = (split_heads(t, heads) for t in jnp.split(block["qkv"], 3, axis=-1))
    r_o = split_heads(_linear(merge_heads(attn @ v), block["proj_kernel"], r_att, orig), heads)
    r_attn, r_v = _halved_matmul(attn, v, r_o)
    r_q, r_kt = _halved_matmul(q, jnp.swapaxes(k, -1, -2), r_attn)  # unscaled q·kᵀ, as the official matmul1
    r_qkv = jnp.concatenate([merge_heads(t) for t in (r_q, jnp.swapaxes(r_kt, -1, -2), r_v)], axis=-1)
    r_x = _linear(block["norm1"], block["qkv_kernel"], r_qkv, orig)
    return _clone(x_in, r_res, r_x), r_attn


def _top_relevance(rec: RelevanceRecord, y, orig: bool) -> jax.Array:
    """From the seed through the head and the class-token pooling (the final norm is an identity) → (N, C)."""
    features = rec["aux"]["features"]
    r = _linear(features[0], rec["head_kernel"], _seed(y, rec["output"]), orig)
    return _lrp0(lambda f: f[0], (features,), r)[0]


def _relevance(rec: RelevanceRecord, y, orig: bool):
    """The whole pass: (R (N, C) at the token embeddings h₀ — norm_pre is an identity — R_A (L, H, N, N))."""
    r = _top_relevance(rec, y, orig)
    blocks = jax.tree.map(lambda *t: jnp.stack(t), *rec["blocks"])
    # A scan traces and compiles one block body, whatever the depth.
    return jax.lax.scan(lambda r, b: _block_relevance(b, r, orig), r, blocks, reverse=True)


def _check(model, method: str) -> None:
    requirements.check(model, method, REQUIREMENTS[method])


def relevance(model, params, x: jax.Array, y, rules: Rules, orig: bool = False) -> tuple[jax.Array, jax.Array]:
    """The relevance pass for one example x (H, W, C) and class y.

    orig=False: the rules of Chefer's method (`layers_ours.py`), which conserve ΣR = 1 per block;
    True: the LRP baselines' rules (`layers_lrp.py`). Returns (R (N, C) at the token embeddings,
    R_A (L, H, N, N): the relevance of each block's post-softmax attention).
    """
    _check(model, "transformer_attribution")
    return _relevance(model.relevance_record(params, x, rules), y, orig)


def transformer_attribution(
    model, params, x: jax.Array, y, rules: Rules, target: Target, start_layer: int = 1
) -> jax.Array:
    """Chefer CVPR'21: row 0 of Π_{l ≥ start_layer} (I + mean_h ReLU(∂f/∂A_l ⊙ R_A,l)), no row normalisation.

    start_layer=1 is the official evaluation setting (0 the notebooks'). Returns (N,).
    """
    _check(model, "transformer_attribution")
    depth = model.capabilities.depth
    if not 0 <= start_layer < depth:
        raise ValueError(f"start_layer must be in [0, {depth}); got {start_layer}")
    rec, grads = _attention_gradients(model, x, y, target, _recorded(model, params, x, rules))
    _, r_attn = _relevance(rec, y, orig=False)
    logits = rec["output"]
    eye = jnp.eye(r_attn.shape[-1], dtype=logits.dtype)
    joint = eye
    for layer in range(start_layer, depth):
        joint = (jax.nn.relu(grads[layer] * r_attn[layer]).mean(-3) + eye) @ joint
    return joint[0]


def partial_lrp(model, params, x: jax.Array, y, rules: Rules, target: Target) -> jax.Array:
    """Partial LRP (Voita et al. as Chefer evaluates it): row 0 of mean_h ReLU(R^orig_A) of the last block.

    Relevance only (orig rules): `rules` and `target` do not change the map. Returns (N,).
    """
    _check(model, "partial_lrp")
    rec = model.relevance_record(params, x, rules)
    r = _top_relevance(rec, y, orig=True)
    _, r_attn = _block_relevance(rec["blocks"][-1], r, orig=True)
    return jax.nn.relu(r_attn).mean(-3)[0]


def _patches(image: jax.Array, patch: tuple[int, int]) -> jax.Array:
    """(H, W, C) → (num_patches, ph·pw·C), row-major patches, features ordered like the conv kernel."""
    (ph, pw), (h, w, c) = patch, image.shape
    t = image.reshape(h // ph, ph, w // pw, pw, c).transpose(0, 2, 1, 3, 4)
    return t.reshape(-1, ph * pw * c)


def full_lrp_pixels(model, params, x: jax.Array, y, rules: Rules) -> tuple[jax.Array, jax.Array]:
    """Full LRP with the orig rules down to the pixels (the official `method="full"`).

    Below the blocks: plain LRP-0 through the position-embedding add (the embedding's branch is
    dropped), then the z^B rule through the patch convolution (bounds: min / max of x over all
    pixels and channels; bias ignored; plain +1e-9 stabiliser).
    Returns (pixel relevance (H, W), summed over channels; prefix-token relevance (npt,)).
    """
    _check(model, "full_lrp")
    rec = model.relevance_record(params, x, rules)
    r, _ = _relevance(rec, y, orig=True)
    npt = rec["prefix"].shape[0]
    tokens = jnp.concatenate([rec["prefix"], rec["patches"]]).astype(x.dtype)
    if rec["pos"] is not None:
        r = _add(tokens, rec["pos"].astype(x.dtype), r, orig=True)[0]
    kernel = rec["patch_kernel"].astype(x.dtype)
    patch = kernel.shape[:2]
    w, wp, wn = (t.reshape(-1, t.shape[-1]) for t in (kernel, jnp.maximum(kernel, 0), jnp.minimum(kernel, 0)))

    def conv(image, lo, hi):
        return _patches(image, patch) @ w - _patches(lo, patch) @ wp - _patches(hi, patch) @ wn

    bounds = (x, jnp.full_like(x, x.min()), jnp.full_like(x, x.max()))
    pixels = sum(_lrp0(conv, bounds, r[npt:], divide=lambda a, b: a / (b + EPS)))
    return pixels.sum(-1), r[:npt].sum(-1)


def full_lrp(model, params, x: jax.Array, y, rules: Rules, target: Target) -> jax.Array:
    """Full LRP as a token map: each patch's pixel relevance summed (`full_lrp_pixels` has the pixel map).

    Prefix entries hold the relevance their token embeddings receive (the official code drops it).
    Relevance only: `rules` and `target` do not change the map. Returns (N,).
    """
    pixels, prefix = full_lrp_pixels(model, params, x, y, rules)
    patch = pixels.shape[0] // model.layout.grid[0], pixels.shape[1] // model.layout.grid[1]
    return jnp.concatenate([prefix, _patches(pixels[..., None], patch).sum(-1)])


def attn_gradcam(model, params, x: jax.Array, y, rules: Rules, target: Target) -> jax.Array:
    """Chefer's attention GradCAM: ReLU(mean_h α_h·A_{L-1}[h, 0, :]), α_h = mean over patch keys of ∂f/∂A[h, 0, :].

    The official function also min-max normalises; this map is the raw (display-free) one. Returns (N,).
    """
    _check(model, "attn_gradcam")
    aux, grads = _attention_gradients(
        model, x, y, target, lambda p: model.apply({"params": params, PROBES: p}, x, rules)
    )
    weights = grads[-1][:, 0, model.layout.num_prefix :].mean(-1)
    return jax.nn.relu((weights[:, None] * aux["blocks"][-1]["attn"][:, 0]).mean(0))


MULTI_PASS = {
    "transformer_attribution": transformer_attribution,
    "full_lrp": full_lrp,
    "partial_lrp": partial_lrp,
    "attn_gradcam": attn_gradcam,
}
"""Chefer's method and its LRP baselines: name → fn(model, params, x, y, rules, target, **options)."""

REQUIREMENTS = {
    name: (requirements.attention(name), requirements.class_token_row(name))
    + (() if name == "attn_gradcam" else (requirements.relevance_pass(name),))
    for name in MULTI_PASS
}
"""name → requirements (methods/requirements.py): attention, a class token, the relevance pass (not attn_gradcam)."""
