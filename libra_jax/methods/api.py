"""`attribution(model, method, rules, ...)` → a pure, jittable `fn(params, x, y)`."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from libra_jax import validate
from libra_jax.methods import core, integrated, legrad, lrp, lrp_text, maps, requirements
from libra_jax.rules import PRESETS, Rules, get_rules

MULTI_PASS = {**integrated.MULTI_PASS, **lrp.MULTI_PASS, **legrad.MULTI_PASS}
"""Methods that run their own passes: fn(model, params, x, y, rules, target, **options) per example."""

METHODS = (*maps.SINGLE_PASS, *MULTI_PASS)
"""Every method name `attribution` accepts."""

REQUIREMENTS = {**maps.REQUIREMENTS, **lrp.REQUIREMENTS, **legrad.REQUIREMENTS}
"""Methods defined for some architectures only: name → the capabilities they need (methods/requirements.py)."""

LRP_PRESETS = ("attnlrp", "cp_lrp", "decompx")
"""Methods that are IxG under their own backward preset (README, "Methods")."""

_TARGET_DEPENDENT = ("target", "g", "attn_grad", "bias", "g_words")


def multi_pass_function(model, name: str) -> Callable:
    """The per-example function of multi-pass method `name` for `model`: Chefer's methods run the relevance pass
    that the model's record feeds (`Capabilities.relevance_kind`: methods/lrp.py or, for BERT, lrp_text.py)."""
    if name in lrp.MULTI_PASS and model.capabilities.relevance_kind == "bert":
        return lrp_text.MULTI_PASS[name]
    return MULTI_PASS[name]


def resolve_method(name: str) -> tuple[str, str]:
    """A user-facing name ('libra_fullgrad_plus', 'gradcam', 'attnlrp') → (method, preset)."""
    if name in LRP_PRESETS:
        return "ixg", name
    if name.startswith("libra_") and name[len("libra_") :] in METHODS:
        return name[len("libra_") :], "libra"
    if name in METHODS:
        return name, "vanilla"
    known = sorted({*METHODS, *(f"libra_{m}" for m in METHODS), *LRP_PRESETS})
    raise ValueError(f"unknown method {name!r}; known methods: {known}")


def _method_options(fn: Callable, skip: int) -> set[str]:
    return set(list(inspect.signature(fn).parameters)[skip:])


def _names_and_rules(names: list[str], rules: str | Rules | None) -> tuple[dict[str, str], Rules]:
    """{name: method} and the one pass's rules. A name that implies a preset ('attnlrp', 'libra_gradcam') is
    accepted when `rules` is None (the preset is then the pass's) or names the same rules."""
    bases, implied = {}, {}
    for name in names:
        base, preset = resolve_method(name)  # raises for names that mean nothing
        bases[name] = base
        if name != base:
            implied[name] = preset
    presets = set(implied.values())
    if len(presets) > 1:
        raise ValueError(
            f"methods {sorted(implied)} imply different rule presets {sorted(presets)}, and one attribution call"
            " runs one backward pass under one set of rules: make one call per preset"
        )
    if not presets:
        return bases, get_rules("libra" if rules is None else rules)
    (preset,) = presets
    if rules is None:
        return bases, get_rules(preset)
    given = get_rules(rules)
    if given.replace(name=preset) != PRESETS[preset]:
        name = next(iter(implied))
        raise ValueError(
            f"{name!r} is method {bases[name]!r} under the {preset!r} rules, but rules={given.name!r} was given:"
            f" leave rules out (or pass rules={preset!r}), or call attribution(model, {bases[name]!r}, rules=...)"
        )
    return bases, given


def _pixel_output(name: str, kwargs: dict, space: str) -> bool:
    """Whether method `name` with options `kwargs` returns pixel maps (H, W) instead of token maps."""
    return space == "pixels" or (name == "legrad" and kwargs.get("postprocess") == "official")


def attribution(
    model,
    method: str | Sequence[str],
    rules: str | Rules | None = None,
    target: str | Callable | None = None,
    return_tokens: bool = False,
    check_inputs: bool = True,
    chunk_size: int | None = None,
    return_logits: bool = False,
    space: str = "tokens",
    **options,
) -> Callable:
    """Build a pure attribution function `fn(params, x, y)`.

    Args:
      model: a libra-jax model (from `libra_jax.load`; any model implementing models/contract.py).
      method: a method name (see `METHODS`) or a list of them. All single-pass methods in a
        list share ONE forward and ONE backward pass; IG / SmoothGrad add their own passes. The names that imply
        a preset (`resolve_method`: 'attnlrp', 'cp_lrp', 'decompx' = IxG under that preset; 'libra_<method>')
        are accepted when `rules` is left out (every method of the call then runs under that preset) or names
        the same rules.
      rules: a preset name (`libra_jax.rules.PRESETS`) or a `Rules`; None: the preset the method names imply,
        else "libra".
      target: "prob" (softmax probability, S1), "logit" (S0), or a callable
        `f(logits (K,), y) -> scalar` for one example (an attribute `y_ndim`, the rank of one
        example's y, enables several targets per image, e.g. `libra_jax.image_text.similarity_target`);
        default: the preset's.
      return_tokens: return (B, N) token maps including prefix tokens instead of the layout's maps
        ((B, gh, gw) on a patch grid, (B, N) for a sequence).
      check_inputs: validate the inputs (`model.check_inputs`: for images shape, NaN/inf and the pixel range
        `preprocess` produces) and class indices (a host callback under jit: `libra_jax.validate.jit` raises
        its errors like an eager call).
      chunk_size: evaluate the batch `chunk_size` examples at a time (`jax.lax.map`), so peak
        memory is that of one chunk; the maps are the same as unchunked. None: the whole batch at once.
      return_logits: also return the model output (B, K) of the forward the single-pass methods
        read (a plain forward when only multi-pass methods are asked for): fn returns (maps, logits),
        so a prediction and its explanation come out of one forward.
      space: where `ixg`, `ig` and `smoothgrad` take their gradients: "tokens" (the token embeddings h₀, default)
        or "pixels" (the normalised input image, as Captum's InputXGradient / IntegratedGradients / NoiseTunnel
        on the image tensor; image models only, and only these three methods in the call): maps (B, H, W).
      **options: method options, routed by name (e.g. `steps=` for IG, `start_layer=` for
        rollout/genatt, `head_bias=` for FullGrad, `internal_batch_size=` for IG/SmoothGrad). For `ixg`, `ig`
        and `smoothgrad`: `per_channel=True` keeps the channel axis (token maps (B, gh, gw, C) or (B, N, C) with
        return_tokens, pixel maps (B, H, W, C)); their channel sums are the default maps. `ig`: `baseline=`
        "zero" (default: the zero token embedding / zero normalised image), "black" (black pixels in the model's
        normalisation), "blur" (the input blurred, σ = `integrated.BLUR_SIGMA` pixels) or a normalised image
        array (H, W, C), or (B, H, W, C) one per example; in token space an image baseline enters as its
        embedding. `smoothgrad`: `noise_key=` (a jax PRNG key; build `attribution` inside a jitted function to
        pass a new key per batch without recompiling), `sigma=` (absolute noise σ in the units of the space;
        default `noise_level`·(max − min) of the input). `legrad`: `postprocess="official"` (pixel maps
        (B, H, W), upsampled before the min-max as the official CLIP code).
    Returns:
      fn(params, x, y): x a batch of inputs ((B, H, W, C) normalised NHWC float images for vision models, a
        `TextInputs` (B, N) for text models); y int (B,) class indices (for a decoder with
        target=`text.next_token.next_token_target()`: (B, 2) (position, token) pairs), or
      (B, K) class weights, or (B, T) / (B, T, K) for T targets per image (one forward, the
      backward vmapped over targets; maps then get a T axis after B). Returns a (B, gh, gw) or
      (B, N) map (or a dict of them, keyed by the given names, for a list of methods), float32 whatever the
      model's compute dtype. Works under `jax.jit` and `jax.vmap`.
    """
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None; got {chunk_size}")
    names = [method] if isinstance(method, str) else list(method)
    if not names:
        raise ValueError("no method requested")
    bases, rules = _names_and_rules(names, rules)
    target_fn = core.target_function(rules, target)
    layout, num_classes = model.layout, model.capabilities.num_classes
    for name in names:
        check_model(model, bases[name])
    integrated.check_space(model, space)
    if space == "pixels":
        others = [n for n in names if bases[n] not in integrated.PIXEL_METHODS]
        if others:
            raise ValueError(
                f"space='pixels' applies to {list(integrated.PIXEL_METHODS)} only; request {others} in a separate"
                " attribution call (their maps live on the tokens)"
            )

    def function(name: str) -> Callable:
        """The method's function: a record reader (single pass) or fn(model, params, x, y, rules, target, ...)."""
        base = bases[name]
        if space == "pixels" and base == "ixg":
            return integrated.pixel_ixg
        return maps.SINGLE_PASS[base] if base in maps.SINGLE_PASS else multi_pass_function(model, base)

    single = [] if space == "pixels" else [n for n in names if bases[n] in maps.SINGLE_PASS]
    multi_pass = [n for n in names if n not in single]
    opts = {n: _method_options(function(n), 2 if n in single else 6) for n in names}
    unused = set(options) - set().union(*opts.values())
    if unused:
        raise TypeError(f"options {sorted(unused)} are not accepted by methods {names}")
    kwargs = {n: {k: v for k, v in options.items() if k in opts[n]} for n in names}
    for n in names:
        if "space" in opts[n]:
            kwargs[n]["space"] = space
    pixel = {n: _pixel_output(bases[n], kwargs[n], space) for n in names}
    if return_tokens and any(pixel.values()):
        raise ValueError(
            f"return_tokens=True asks for token maps, but {[n for n in names if pixel[n]]} give pixel maps"
        )
    batched_options = integrated.BATCHED_OPTIONS
    per_example_options = {
        k: v for k, v in options.items() if k in batched_options and np.ndim(v) == batched_options[k] + 1
    }
    reads = {n: maps.probes_read(bases[n], kwargs[n]) for n in single}
    for n in single:
        requirements.check(model, bases[n], tuple(requirements.optional_probe(bases[n], k) for k in reads[n]))
    probes = tuple(sorted(set().union(*reads.values())))
    target_dependent = (*_TARGET_DEPENDENT, *(f"{k}_grad" for k in probes))

    def read_maps(rec):
        return {n: function(n)(rec, model, **kwargs[n]) for n in single}

    def per_example(params, x, y, batched, multi):
        out = {}
        if single:
            rec = core.single_pass(model, params, x, y, rules, target_fn, multi=multi, probes=probes)
            logits = rec["logits"]
            if multi:
                parts = {k: rec[k] for k in target_dependent if k in rec}  # g_words: text models only
                out |= jax.vmap(lambda p: read_maps({**rec, **p}))(parts)
            else:
                out |= read_maps(rec)
        for n in multi_pass:
            mine = kwargs[n] | {k: v for k, v in batched.items() if k in opts[n]}
            run = functools.partial(function(n), model, params, x, rules=rules, target=target_fn, **mine)
            out[n] = jax.vmap(run)(y) if multi else run(y)
        if not return_logits:
            return out, None
        return out, logits if single else model.apply({"params": params}, x, rules)[0]

    def shown(name: str, maps_: jax.Array) -> jax.Array:
        """Token maps (B, [T,] N[, C]) → the layout's maps; pixel maps and return_tokens as they are."""
        if pixel[name] or return_tokens:
            return maps_
        if kwargs[name].get("per_channel", False):
            return jnp.moveaxis(layout.to_map(jnp.moveaxis(maps_, -1, 0)), 0, -1)
        return layout.to_map(maps_)

    def fn(params, x, y):
        validate.require_targets(y)
        x = jax.tree.map(jnp.asarray, x)
        y = jnp.asarray(y)
        batch = jax.tree.leaves(x)[0].shape[0]
        if check_inputs:
            model.check_inputs(x)
            if not callable(target):
                validate.check_targets(y, num_classes, batch)
        for k, v in per_example_options.items():
            if jnp.shape(v)[0] != batch:
                raise ValueError(
                    f"{k} holds {jnp.shape(v)[0]} examples' values but the batch has {batch}: pass one value for"
                    " every example, or one shared by all (without the batch axis)"
                )
        multi = y.ndim == 2 + target_rank(target, y)
        if chunk_size is None:
            out, logits = jax.vmap(per_example, in_axes=(None, 0, 0, 0, None))(params, x, y, per_example_options, multi)
        else:  # vmapped within a chunk, sequential over chunks (a remainder chunk is vmapped on its own)
            out, logits = jax.lax.map(
                lambda xyb: per_example(params, *xyb, multi), (x, y, per_example_options), batch_size=chunk_size
            )
        out = {n: shown(n, core.to_float32(v)) for n, v in out.items()}
        out = out[names[0]] if isinstance(method, str) else out
        return (out, logits) if return_logits else out

    fn.__name__ = "_".join(names) if len(names) < 4 else "attribution"
    fn.__doc__ = f"{names} under rules {rules.name!r}: fn(params, x, y) -> maps."
    return fn


def check_model(model, method: str) -> None:
    """Raise ValueError naming what `model` lacks for `method` (e.g. a class token, attention, the relevance pass)."""
    requirements.check(model, method, REQUIREMENTS.get(method, ()))


def supports(model, method: str) -> bool:
    """Whether `method` is defined for `model`'s architecture (`check_model` passes)."""
    try:
        check_model(model, method)
    except ValueError:
        return False
    return True


def target_rank(target, y: jax.Array) -> int:
    """Rank of one example's target: a callable's `y_ndim` (e.g. 1 for a text embedding; the rank of
    y minus the batch axis when it states none), else 0 for a class index and 1 for class weights.
    y with one more axis holds several targets per image."""
    if callable(target):
        return getattr(target, "y_ndim", y.ndim - 1)
    return 0 if jnp.issubdtype(y.dtype, jnp.integer) else 1


def to_grid(token_maps: jax.Array, model) -> jax.Array:
    """(..., N) token maps → the maps `model`'s layout shows: (..., gh, gw) (prefix dropped) or (..., N)."""
    return model.layout.to_map(token_maps)


def named(method: str, preset: str) -> Callable:
    """A convenience constructor `name(model, **kw)` = attribution(model, method, preset, **kw)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}")

    def make(model, **kwargs):
        return attribution(model, method, rules=preset, **kwargs)

    make.__doc__ = f"`{method}` under the `{preset}` rules: returns fn(params, x, y) (see `attribution`)."
    return make
