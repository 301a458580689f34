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
first, reproduced by `upsampled` and `postprocess="official"`; the SigLIP path does the same as
here); the MAP path keeps the final norm before the pool, as the model's forward does, unless
`pool_norm=False` (the official SigLIP path skips `trunk.norm`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax.traverse_util import unflatten_dict

from libra_jax.methods import requirements
from libra_jax.methods.core import Target, probe_template
from libra_jax.models.contract import PROBES, probe_at, probe_path
from libra_jax.rules import Rules
from libra_jax.weights.resize import resize

POOLS = ("mean", "cls", "map")
EMPTY_THRESHOLD = 0.8
"""Official SigLIP correction: patches where the min-maxed empty-prompt map exceeds this are zeroed."""


def resolve(model, pool: str | None, layer_index: int) -> tuple[str, int]:
    """Check the model and options; returns (pool, first layer). Raises ValueError on bad combos.

    pool=None picks "map" for attention-pool models and "mean" otherwise.
    """
    requirements.check(model, "legrad", REQUIREMENTS["legrad"])
    caps = model.capabilities
    pool = ("map" if caps.attention_pool else "mean") if pool is None else pool
    if pool not in POOLS:
        raise ValueError(f"legrad pool must be one of {POOLS} (or None for the model's default); got {pool!r}")
    if pool == "map" and not caps.attention_pool:
        raise ValueError("legrad pool='map' needs an attention-pool (MAP) head; use pool='mean' or 'cls'")
    if pool != "map" and caps.attention_pool:
        raise ValueError(f"this model's head is an attention pool (MAP): use pool='map', not {pool!r}")
    if pool == "cls" and not caps.class_token:
        raise ValueError("legrad pool='cls' needs a class token; this model has none (use pool='mean')")
    if not -caps.depth <= layer_index < caps.depth:
        raise ValueError(f"legrad layer_index must be in [{-caps.depth}, {caps.depth - 1}]; got {layer_index}")
    return pool, layer_index % caps.depth


def _block_input(m, inputs, rules: Rules) -> jax.Array:
    """Input of block 0 (N, C)."""
    return m.enter_blocks(m.embed(inputs), rules)


def _block(m, h: jax.Array, index: int, rules: Rules) -> jax.Array:
    """Block `index` alone: its input (N, C) → its output (N, C)."""
    return m.forward_block(h, index, rules)[0]


def _layer_logits(m, h: jax.Array, index: int, rules: Rules, pool: str, pool_norm: bool = True):
    """Block `index` on its input h, then the model's head on its output: (output (N, C), head output (K,))."""
    out = _block(m, h, index, rules)
    norm = (lambda v: m.final_norm(v, rules)) if pool_norm else (lambda v: v)
    if pool == "mean":
        pooled = dist = norm(out.mean(-2))  # the token mean goes through the final norm (official ln_post order)
    else:
        tokens = norm(out)
        pooled = tokens[0] if pool == "cls" else m.attention_pool(tokens, rules)[0]
        dist = tokens[1] if tokens.shape[-2] > 1 else None  # read by two-head (DeiT-distilled) models only
    return out, m.forward_head(pooled, rules, dist)


def layer_gradients(
    model,
    params,
    x,
    y,
    rules: Rules,
    target: Target,
    pool: str,
    start: int,
    pool_norm: bool = True,
) -> list[jax.Array]:
    """[∂s_l/∂A_l for l = start..L−1], each by a local VJP of block l's tail (see the module docstring).

    Args:
      model, params: a blockwise model with a head (`resolve`), and its params.
      x: one example's input ((H, W, C) normalised image).
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
    variables = {"params": params}
    template = probe_template(model, x)
    h = model.apply(variables, x, rules, method=_block_input)
    grads = []
    for index in range(model.capabilities.depth):
        if index < start:
            h = model.apply(variables, h, index, rules, method=_block)
            continue
        kind = ("pool_attn", None) if pool == "map" else ("attn", index)

        def score(probe, h=h, index=index, kind=kind):
            # the probe (A + 0) is the only differentiated input: h (hence v and the residual) stays constant
            probes = unflatten_dict({probe_path(*kind): probe})
            out, logits = model.apply(
                {**variables, PROBES: probes}, h, index, rules, pool, pool_norm, method=_layer_logits
            )
            return target(logits, y), out

        s, pullback, h = jax.vjp(score, jnp.zeros_like(probe_at(template, *kind)), has_aux=True)
        grads.append(pullback(jnp.ones_like(s))[0])
    return grads


def layer_maps(
    model,
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
    npt = model.layout.num_prefix
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
    model,
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
    postprocess: str = "grid",
) -> jax.Array:
    """LeGrad token map (N,) for one example, prefix entries 0; a pixel map (H, W) with postprocess="official".

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
      postprocess: "grid" (default): min-max over the patch tokens; "official": the official CLIP path's
        min-max(Σ_l bilinear-upsample(E_l)) over the pixels (`upsampled`), returning (H, W). Same ranking of the
        patches; values differ by the interpolation. Not for the MAP path, which the official code min-maxes on
        the grid as the default does (then upsamples: `libra_jax.viz.to_pixels(maps, size, "bilinear")`).
    """
    if postprocess not in ("grid", "official"):
        raise ValueError(f"legrad postprocess must be 'grid' or 'official'; got {postprocess!r}")
    if postprocess == "official" and (not normalize or empty is not None or model.capabilities.attention_pool):
        raise ValueError(
            "legrad postprocess='official' is the CLIP path's upsample-then-min-max: it normalises (normalize=True)"
            " and has no empty-prompt correction or MAP pool; the official MAP path min-maxes on the grid, as"
            " postprocess='grid' does"
        )
    npt = model.layout.num_prefix
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
    if postprocess == "official":
        return upsampled(model.layout.to_map(run(y)), x.shape[-3:-1])
    relevance = run(y).mean(0)
    if empty is not None:
        null = _minmax(run(empty).mean(0)[npt:])
        relevance = relevance.at[npt:].set(jnp.where(null > EMPTY_THRESHOLD, 0.0, relevance[npt:]))
    if not normalize:
        return relevance
    return jnp.pad(_minmax(relevance[npt:]), (npt, 0))


MULTI_PASS = {"legrad": legrad}
"""name → fn(model, params, x, y, rules, target, **options), merged into the attribution registry."""

REQUIREMENTS = {
    "legrad": (requirements.attention("legrad"), requirements.blockwise("legrad"), requirements.head("legrad"))
}
"""name → requirements (methods/requirements.py); `resolve` checks them and the options."""
