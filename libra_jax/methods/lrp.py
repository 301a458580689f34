"""Chefer et al. (CVPR'21) LRP relevance: transformer_attribution, full_lrp, partial_lrp, attn_gradcam.

The relevance pass of `hila-chefer/Transformer-Explainability` (its ViT_LRP model and LRP layers),
rule for rule, as an explicit backward sweep over the activations of ONE recorded forward pass
(Flax `capture_intermediates`; no second forward). Every rule is LRP-0 through a small function,
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

from libra_jax import ops
from libra_jax.methods.core import Target
from libra_jax.models.config import ViTConfig
from libra_jax.models.layers import PROBES, merge_heads, split_heads
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


def _out(tree: dict, *path: str) -> jax.Array:
    """The captured `__call__` output of the module at `path`."""
    for name in path:
        tree = tree[name]
    return tree["__call__"][0]


def check_supported(config, method: str, relevance: bool = True) -> None:
    """Raise ValueError naming the feature when `method` is not defined for this architecture.

    Chefer's methods read the class-token row; the relevance pass (`relevance=True`) also needs the
    plain timm block (standard qkv attention, Linear-GELU-Linear MLP) and class-token pooling.
    """
    if not isinstance(config, ViTConfig):
        raise ValueError(f"method {method!r} (Chefer et al.) needs a Vision Transformer; got {type(config).__name__}")
    problems = {
        "no class token": not config.class_token,
        f"global_pool={config.global_pool!r} (the LRP pass starts at class-token pooling)": relevance
        and config.global_pool != "token",
        "a distillation token (two heads)": relevance and config.dist_token,
        f"a gated MLP (mlp_layer={config.mlp_layer!r})": relevance and config.mlp_layer != "mlp",
        "q/k norms": relevance and config.qk_norm,
        f"{config.family} attention (q/v biases, relative-position bias or RoPE)": relevance and config.family != "vit",
        "inner attention / MLP norms": relevance and (config.scale_attn_norm or config.scale_mlp_norm),
        "an fc_norm head": relevance and config.use_fc_norm,
        "no classifier head (num_classes=0)": relevance and config.num_classes <= 0,
    }
    found = [name for name, bad in problems.items() if bad]
    if found:
        raise ValueError(
            f"method {method!r} (Chefer et al. CVPR'21) is not defined for this model: it has {', '.join(found)}"
        )


def _forward(model, params, x: jax.Array, rules: Rules, probes: dict | None = None):
    """One forward recording every module output: (logits (K,), (aux, intermediates))."""
    variables = {"params": params} if probes is None else {"params": params, PROBES: probes}
    (logits, aux), state = model.apply(variables, x, rules, capture_intermediates=True, mutable=["intermediates"])
    return logits, (aux, state["intermediates"])


def _forward_backward(model, params, x: jax.Array, y, rules: Rules, target: Target):
    """The recorded forward plus ∂f/∂A_l for every block (zero probes on the attention only)."""
    cfg = model.config
    shape = (cfg.num_heads, cfg.num_tokens, cfg.num_tokens)
    probes = {f"blocks_{i}": {"attn": {"attn": jnp.zeros(shape, x.dtype)}} for i in range(cfg.depth)}
    logits, vjp_fn, (aux, inter) = jax.vjp(lambda p: _forward(model, params, x, rules, p), probes, has_aux=True)
    (grads,) = vjp_fn(jax.grad(target)(logits, y).astype(logits.dtype))
    return logits, aux, inter, [grads[f"blocks_{i}"]["attn"]["attn"] for i in range(cfg.depth)]


def _seed(y, logits: jax.Array) -> jax.Array:
    """The relevance at the logits: one-hot of a class index, or a (K,) class-weight vector as is."""
    y = jnp.asarray(y)
    if jnp.issubdtype(y.dtype, jnp.integer) and y.ndim == 0:
        return jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype)
    if y.shape == logits.shape:
        return y.astype(logits.dtype)
    raise ValueError(f"the LRP relevance seed needs a class index or {logits.shape} class weights; got {y.shape}")


def _blocks(model, params, aux: dict, inter: dict) -> list[tuple]:
    """Per block: (its params, its captured module outputs, its aux {'attn', 'post_attn', 'out'}, its input)."""
    cfg = model.config
    inputs = [_out(inter, "norm_pre") if cfg.pre_norm else aux["tokens"], *(b["out"] for b in aux["blocks"][:-1])]
    return [(params[f"blocks_{i}"], inter[f"blocks_{i}"], aux["blocks"][i], inputs[i]) for i in range(cfg.depth)]


def _block_relevance(block: tuple, r: jax.Array, config, rules: Rules, orig: bool) -> tuple[jax.Array, jax.Array]:
    """Relevance through one block, R (N, C) at its output → (R at its input, R_A (H, N, N))."""
    p, cap, aux, x_in = block
    scaled = config.init_values is not None
    t_mid = aux["post_attn"]
    r_res, r_mlp = _add(t_mid, _out(cap, "ls2") if scaled else _out(cap, "mlp"), r, orig)
    hidden = ops.activation(_out(cap, "mlp", "fc1"), config.act, rules.activation)
    r_mlp = _linear(hidden, p["mlp"]["fc2"]["kernel"], r_mlp, orig)
    r_mlp = _linear(_out(cap, "norm2"), p["mlp"]["fc1"]["kernel"], r_mlp, orig)
    r = _clone(t_mid, r_res, r_mlp)

    r_res, r_att = _add(x_in, _out(cap, "ls1") if scaled else _out(cap, "attn")[0], r, orig)
    heads = config.num_heads
    q, k, v = (split_heads(t, heads) for t in jnp.split(_out(cap, "attn", "qkv"), 3, axis=-1))
    attn = aux["attn"]
    r_o = split_heads(_linear(merge_heads(attn @ v), p["attn"]["proj"]["kernel"], r_att, orig), heads)
    r_attn, r_v = _halved_matmul(attn, v, r_o)
    r_q, r_kt = _halved_matmul(q, jnp.swapaxes(k, -1, -2), r_attn)  # unscaled q·kᵀ, as the official matmul1
    r_qkv = jnp.concatenate([merge_heads(t) for t in (r_q, jnp.swapaxes(r_kt, -1, -2), r_v)], axis=-1)
    r_x = _linear(_out(cap, "norm1"), p["attn"]["qkv"]["kernel"], r_qkv, orig)
    return _clone(x_in, r_res, r_x), r_attn


def _top_relevance(params, y, logits: jax.Array, features: jax.Array, orig: bool) -> jax.Array:
    """From the seed through the head and the class-token pooling (the final norm is an identity) → (N, C)."""
    r = _linear(features[0], params["head"]["kernel"], _seed(y, logits), orig)
    return _lrp0(lambda f: f[0], (features,), r)[0]


def _relevance(model, params, y, logits: jax.Array, aux: dict, inter: dict, rules: Rules, orig: bool):
    """The whole pass: (R (N, C) at the token embeddings h₀ — norm_pre is an identity — R_A (L, H, N, N))."""
    r = _top_relevance(params, y, logits, aux["features"], orig)
    blocks = jax.tree.map(lambda *t: jnp.stack(t), *_blocks(model, params, aux, inter))
    # A scan traces and compiles one block body, whatever the depth.
    return jax.lax.scan(lambda r, b: _block_relevance(b, r, model.config, rules, orig), r, blocks, reverse=True)


def relevance(model, params, x: jax.Array, y, rules: Rules, orig: bool = False) -> tuple[jax.Array, jax.Array]:
    """The relevance pass for one example x (H, W, C) and class y.

    orig=False: the rules of Chefer's method (`layers_ours.py`), which conserve ΣR = 1 per block;
    True: the LRP baselines' rules (`layers_lrp.py`). Returns (R (N, C) at the token embeddings,
    R_A (L, H, N, N): the relevance of each block's post-softmax attention).
    """
    check_supported(model.config, "relevance")
    logits, (aux, inter) = _forward(model, params, x, rules)
    return _relevance(model, params, y, logits, aux, inter, rules, orig)


def transformer_attribution(
    model, params, x: jax.Array, y, rules: Rules, target: Target, start_layer: int = 1
) -> jax.Array:
    """Chefer CVPR'21: row 0 of Π_{l ≥ start_layer} (I + mean_h ReLU(∂f/∂A_l ⊙ R_A,l)), no row normalisation.

    start_layer=1 is the official evaluation setting (0 the notebooks'). Returns (N,).
    """
    cfg = model.config
    check_supported(cfg, "transformer_attribution")
    if not 0 <= start_layer < cfg.depth:
        raise ValueError(f"start_layer must be in [0, {cfg.depth}); got {start_layer}")
    logits, aux, inter, grads = _forward_backward(model, params, x, y, rules, target)
    _, r_attn = _relevance(model, params, y, logits, aux, inter, rules, orig=False)
    eye = jnp.eye(cfg.num_tokens, dtype=logits.dtype)
    joint = eye
    for layer in range(start_layer, cfg.depth):
        joint = (jax.nn.relu(grads[layer] * r_attn[layer]).mean(-3) + eye) @ joint
    return joint[0]


def partial_lrp(model, params, x: jax.Array, y, rules: Rules, target: Target) -> jax.Array:
    """Partial LRP (Voita et al. as Chefer evaluates it): row 0 of mean_h ReLU(R^orig_A) of the last block.

    Relevance only (orig rules): `rules` and `target` do not change the map. Returns (N,).
    """
    check_supported(model.config, "partial_lrp")
    logits, (aux, inter) = _forward(model, params, x, rules)
    r = _top_relevance(params, y, logits, aux["features"], orig=True)
    _, r_attn = _block_relevance(_blocks(model, params, aux, inter)[-1], r, model.config, rules, orig=True)
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
    cfg = model.config
    check_supported(cfg, "full_lrp")
    logits, (aux, inter) = _forward(model, params, x, rules)
    r, _ = _relevance(model, params, y, logits, aux, inter, rules, orig=True)
    npt = cfg.num_prefix_tokens
    prefix = [params[n][0] for n in ("cls_token", "reg_token") if n in params]
    tokens = jnp.concatenate([*prefix, _out(inter, "patch_embed").reshape(cfg.num_patches, -1)]).astype(x.dtype)
    if cfg.pos_embed:
        pos = params["pos_embed"][0].astype(x.dtype)
        pos = jnp.pad(pos, ((npt, 0), (0, 0))) if cfg.no_embed_class else pos  # prefix tokens get no position
        r = _add(tokens, pos, r, orig=True)[0]
    kernel = params["patch_embed"]["kernel"].astype(x.dtype)
    w, wp, wn = (t.reshape(-1, t.shape[-1]) for t in (kernel, jnp.maximum(kernel, 0), jnp.minimum(kernel, 0)))

    def conv(image, lo, hi):
        patch = cfg.patch_size
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
    return jnp.concatenate([prefix, _patches(pixels[..., None], model.config.patch_size).sum(-1)])


def attn_gradcam(model, params, x: jax.Array, y, rules: Rules, target: Target) -> jax.Array:
    """Chefer's attention GradCAM: ReLU(mean_h α_h·A_{L-1}[h, 0, :]), α_h = mean over patch keys of ∂f/∂A[h, 0, :].

    The official function also min-max normalises; this map is the raw (display-free) one. Returns (N,).
    """
    cfg = model.config
    check_supported(cfg, "attn_gradcam", relevance=False)
    _, aux, _, grads = _forward_backward(model, params, x, y, rules, target)
    weights = grads[-1][:, 0, cfg.num_prefix_tokens :].mean(-1)
    return jax.nn.relu((weights[:, None] * aux["blocks"][-1]["attn"][:, 0]).mean(0))


MULTI_PASS = {
    "transformer_attribution": transformer_attribution,
    "full_lrp": full_lrp,
    "partial_lrp": partial_lrp,
    "attn_gradcam": attn_gradcam,
}
"""Chefer's method and its LRP baselines: name → fn(model, params, x, y, rules, target, **options)."""

REQUIREMENTS = {
    name: (lambda model, name=name: check_supported(model.config, name, relevance=name != "attn_gradcam"))
    for name in MULTI_PASS
}
"""name → check(model): raises ValueError naming what the model lacks for the method."""
