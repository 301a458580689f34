"""LeGrad for classifiers: per-layer attention gradients of per-layer scores, each computed locally.

The official algorithm (`WalBouss/LeGrad`, Bousselham et al.), with the classification head in place
of CLIP's text similarity:

  for every block l from `layer_index` on (default −2: the last two blocks; 0: all):
    s_l = f(classifier(h_{l+1}))        the explained scalar of the layer's own output h_{l+1}
    E_l = mean over query rows of mean_h ReLU(∂s_l/∂A_l), prefix keys dropped
  map = min-max(mean_l E_l) over the patch tokens

The classifier of a layer's tokens depends on `pool`:
  "mean" (official CLIP path): mean over ALL tokens, prefix included → final norm → head;
  "cls":  the class token (and the distillation token for `head_dist`) → final norm → head;
  "map":  the model's attention-pool (MAP) head on the normed tokens; A is then the pool's own
          attention (H, 1, N − prefix) when pooling h_{l+1}, read at its single query (SigLIP path).

Locality: s_l depends on A_l only through block l's tail (A·v → proj → residual → MLP →
h_{l+1}), so ∂s_l/∂A_l is a `jax.vjp` of block l alone, run from the block input with a zero
probe on A_l. One sweep over the blocks does it: each block's forward is the one the model does
anyway, and each backward stops at A_l (v and the residual input are held constant). All layers
together cost one forward plus less than one backward — never L full backward passes, and never
the gradient of Σ_l s_l (which would add ∂s_{l'}/∂A_l for l' > l).

Image–text models (`ImageTextModel`, CLIP / SigLIP): the per-layer score is the text target of
the layer's image embedding (the pooled feature through the image projection), e.g.
`similarity_target("vanilla", scale=1.0)` = ⟨t, normalize(e_l)⟩, the official `compute_legrad_clip`
score; y is the unit text embedding (several prompts per image: y (T, E), one map each). The
SigLIP correction of the official `compute_legrad` is the `empty` option: with E∅_l the layer maps
of the "empty prompt" embedding, patches where min-max(Σ_l E∅_l) > 0.8 are zeroed before the final
min-max.

Differences from the official code: min-max runs on the patch grid (the CLIP path upsamples
first, reproduced by `upsampled`; the SigLIP path does the same as here); the MAP path keeps the
final norm before the pool, as the model's forward does, unless `pool_norm=False` (the official
SigLIP path skips `trunk.norm`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from libra_jax.methods.core import Target
from libra_jax.models.image_text import ImageTextModel
from libra_jax.models.layers import PROBES
from libra_jax.models.vit import VisionTransformer
from libra_jax.rules import Rules
from libra_jax.weights.resize import resize

POOLS = ("mean", "cls", "map")
EMPTY_THRESHOLD = 0.8
"""Official SigLIP correction: patches where the min-maxed empty-prompt map exceeds this are zeroed."""


def resolve(model, pool: str | None, layer_index: int) -> tuple[str, int]:
    """Check the model and options; returns (pool, first layer). Raises ValueError on bad combos.

    pool=None picks "map" for attention-pool models and "mean" otherwise.
    """
    if not isinstance(model, VisionTransformer):
        raise ValueError(f"legrad supports VisionTransformer models; got {type(model).__name__}")
    cfg = model.config
    if cfg.num_classes <= 0 and not isinstance(model, ImageTextModel):
        raise ValueError("legrad explains a classification head; this model has none (num_classes=0)")
    has_map = cfg.global_pool == "map"
    pool = ("map" if has_map else "mean") if pool is None else pool
    if pool not in POOLS:
        raise ValueError(f"legrad pool must be one of {POOLS} (or None for the model's default); got {pool!r}")
    if pool == "map" and not has_map:
        raise ValueError("legrad pool='map' needs an attention-pool (MAP) head; use pool='mean' or 'cls'")
    if pool != "map" and has_map:
        raise ValueError(f"this model's head is an attention pool (MAP): use pool='map', not {pool!r}")
    if pool == "cls" and not cfg.class_token:
        raise ValueError("legrad pool='cls' needs a class token; this model has none (use pool='mean')")
    if not -cfg.depth <= layer_index < cfg.depth:
        raise ValueError(f"legrad layer_index must be in [{-cfg.depth}, {cfg.depth - 1}]; got {layer_index}")
    return pool, layer_index % cfg.depth


def _block_input(m: VisionTransformer, image: jax.Array, rules: Rules) -> jax.Array:
    """Input of block 0: token embeddings (N, C), through norm_pre when the model has one."""
    tokens = m.embed(image)
    return tokens if m.norm_pre is None else m.norm_pre(tokens, rules)


def _block(m: VisionTransformer, h: jax.Array, index: int, rules: Rules) -> jax.Array:
    """Block `index` alone: its input (N, C) → its output (N, C) (with the model's rel-pos bias / RoPE)."""
    return m.blocks[index](h, rules, *m.block_context(h))[0]


def _layer_logits(m: VisionTransformer, h: jax.Array, index: int, rules: Rules, pool: str, pool_norm: bool = True):
    """Block `index` on its input h, then the classifier on its output: (output (N, C), logits (K,)).

    For an `ImageTextModel` the "logits" are the layer's image embedding (E,)."""
    out = _block(m, h, index, rules)
    norm = (lambda v: v) if m.norm is None or not pool_norm else (lambda v: m.norm(v, rules))
    if pool == "mean":
        pooled = dist = norm(out.mean(-2))  # the token mean goes through the final norm (official ln_post order)
    else:
        tokens = norm(out)
        npt = m.config.num_prefix_tokens
        pooled = tokens[0] if pool == "cls" else m.attn_pool(tokens[npt:], rules)[0]
        dist = tokens[1] if m.head_dist is not None else None
    if m.fc_norm is not None:
        pooled = m.fc_norm(pooled, rules)
    if isinstance(m, ImageTextModel):
        return out, m.project(pooled)
    logits = m.head(pooled)
    if m.head_dist is not None:  # DeiT-distilled: the two heads averaged, as in the forward pass
        logits = 0.5 * (logits + m.head_dist(dist))
    return out, logits


def layer_gradients(
    model: VisionTransformer,
    params,
    x: jax.Array,
    y,
    rules: Rules,
    target: Target,
    pool: str,
    start: int,
    pool_norm: bool = True,
) -> list[jax.Array]:
    """[∂s_l/∂A_l for l = start..L−1], each by a local VJP of block l's tail (see the module docstring).

    Args:
      model, params: a VisionTransformer with a head, and its params.
      x: (H, W, C) normalised image.
      y: class index or class weights (K,), passed to `target`.
      rules: backward rules, applied inside every local backward pass.
      target: f(logits (K,), y) → scalar.
      pool: "mean", "cls" or "map" (already validated by `resolve`).
      start: first layer, 0 ≤ start < L.
      pool_norm: apply the final norm before the pool (False: the official SigLIP path).
    Returns:
      per layer: (H, N, N) for "mean"/"cls" (the block's attention); (H, 1, N − prefix) for "map"
      (the attention pool's attention when it pools that layer's tokens).
    """
    cfg = model.config
    variables = {"params": params}
    h = model.apply(variables, x, rules, method=_block_input)
    n = h.shape[-2]
    grads = []
    for index in range(cfg.depth):
        if index < start:
            h = model.apply(variables, h, index, rules, method=_block)
            continue
        if pool == "map":
            shape = (cfg.num_heads, 1, n - cfg.num_prefix_tokens)
        else:
            shape = (cfg.num_heads, n, n)

        def score(probe, h=h, index=index):
            # the probe (A + 0) is the only differentiated input: h (hence v and the residual) stays constant
            probes = {"attn_pool": {"attn": probe}} if pool == "map" else {f"blocks_{index}": {"attn": {"attn": probe}}}
            out, logits = model.apply(
                {**variables, PROBES: probes}, h, index, rules, pool, pool_norm, method=_layer_logits
            )
            return target(logits, y), out

        s, pullback, h = jax.vjp(score, jnp.zeros(shape, h.dtype), has_aux=True)
        grads.append(pullback(jnp.ones_like(s))[0])
    return grads


def layer_maps(
    model: VisionTransformer,
    params,
    x: jax.Array,
    y,
    rules: Rules,
    target: Target,
    layer_index: int = -2,
    pool: str | None = None,
    pool_norm: bool = True,
) -> jax.Array:
    """Per-layer LeGrad maps E_l (L_used, N) for one example, prefix entries 0 (official `F.interpolate` input).

    E_l = mean over query rows of mean_h ReLU(∂s_l/∂A_l), prefix keys dropped. Arguments as `legrad`.
    """
    pool, start = resolve(model, pool, layer_index)
    npt = model.config.num_prefix_tokens
    per_layer = []
    for grad in layer_gradients(model, params, x, y, rules, target, pool, start, pool_norm):
        e = jax.nn.relu(grad).mean(-3).mean(-2)  # ReLU → mean over heads → mean over query rows
        keys = e if pool == "map" else e[npt:]  # drop prefix keys (the MAP pool never sees them)
        per_layer.append(jnp.pad(keys, (npt, 0)))
    return jnp.stack(per_layer)


def _minmax(a: jax.Array) -> jax.Array:
    lo, hi = a.min(), a.max()
    return (a - lo) / jnp.maximum(hi - lo, jnp.finfo(a.dtype).tiny)  # a constant map → 0


def upsampled(maps: jax.Array, size: tuple[int, int]) -> jax.Array:
    """The official CLIP post-processing: min-max(Σ_l bilinear-upsample(E_l)) over the pixels.

    Args:
      maps: per-layer patch maps (..., L, gh, gw) (`layer_maps` without prefix entries, on the grid).
      size: output (H, W) (torch `F.interpolate(mode='bilinear', align_corners=False)`, exact).
    Returns:
      (..., H, W) maps in [0, 1].
    """
    total = resize(maps, size, "bilinear").sum(-3)
    return jax.vmap(_minmax)(total.reshape(-1, *size)).reshape(total.shape)


def legrad(
    model: VisionTransformer,
    params,
    x: jax.Array,
    y,
    rules: Rules,
    target: Target,
    layer_index: int = -2,
    pool: str | None = None,
    normalize: bool = True,
    pool_norm: bool = True,
    empty: jax.Array | None = None,
) -> jax.Array:
    """LeGrad token map (N,) for one example; prefix entries are 0.

    Runs its own pass (one forward with local backward passes), also when requested with other
    methods in one `attribution` call. Every rule preset applies inside the local backward passes.

    Args:
      model, params, x (H, W, C), y, rules, target: as in `layer_gradients`.
      layer_index: first explained block; negative counts from the end (official default −2: the
        last two blocks); 0 = all layers.
      pool: the per-layer classifier: "mean" (token mean, official; default), "cls" (class
        token), "map" (attention-pool head; the default for MAP models). See the module docstring.
      normalize: min-max normalise the patch entries (official); False returns the layer mean of E_l.
      pool_norm: apply the final norm before the MAP pool (False: the official SigLIP path).
      empty: image–text models: the "empty prompt" target (official SigLIP correction, see the module
        docstring); None: no correction.
    """
    npt = model.config.num_prefix_tokens
    run = functools.partial(
        layer_maps,
        model,
        params,
        x,
        rules=rules,
        target=target,
        layer_index=layer_index,
        pool=pool,
        pool_norm=pool_norm,
    )
    relevance = run(y).mean(0)
    if empty is not None:
        null = _minmax(run(empty).mean(0)[npt:])
        relevance = relevance.at[npt:].set(jnp.where(null > EMPTY_THRESHOLD, 0.0, relevance[npt:]))
    if not normalize:
        return relevance
    return jnp.pad(_minmax(relevance[npt:]), (npt, 0))


MULTI_PASS = {"legrad": legrad}
"""name → fn(model, params, x, y, rules, target, **options), merged into the attribution registry."""

REQUIREMENTS = {"legrad": lambda model: resolve(model, None, -1)}
"""name → check(model): raises ValueError naming what the model lacks (default pool and layer)."""
