"""`attribution(model, method, rules, ...)` → a pure, jittable `fn(params, x, y)`."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

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


def attribution(
    model,
    method: str | Sequence[str],
    rules: str | Rules = "libra",
    target: str | Callable | None = None,
    return_tokens: bool = False,
    check_inputs: bool = True,
    chunk_size: int | None = None,
    return_logits: bool = False,
    **options,
) -> Callable:
    """Build a pure attribution function `fn(params, x, y)`.

    Args:
      model: a libra-jax model (from `libra_jax.load`; any model implementing models/contract.py).
      method: a method name (see `METHODS`) or a list of them. All single-pass methods in a
        list share ONE forward and ONE backward pass; IG / SmoothGrad add their own passes.
      rules: a preset name (`libra_jax.rules.PRESETS`) or a `Rules`.
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
      **options: method options, routed by name (e.g. `steps=` for IG, `start_layer=` for
        rollout/genatt, `head_bias=` for FullGrad, `internal_batch_size=` for IG/SmoothGrad).
    Returns:
      fn(params, x, y): x a batch of inputs ((B, H, W, C) normalised NHWC float images for vision models, a
        `TextInputs` (B, N) for text models); y int (B,) class indices (for a decoder with
        target=`text.next_token.next_token_target()`: (B, 2) (position, token) pairs), or
      (B, K) class weights, or (B, T) / (B, T, K) for T targets per image (one forward, the
      backward vmapped over targets; maps then get a T axis after B). Returns a (B, gh, gw) or
      (B, N) map (or a dict of them for a list of methods), float32 whatever the model's compute dtype.
      Works under `jax.jit` and `jax.vmap`.
    """
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None; got {chunk_size}")
    names = [method] if isinstance(method, str) else list(method)
    if not names:
        raise ValueError("no method requested")
    for name in names:
        if name not in METHODS:
            base, preset = resolve_method(name)  # raises for names that mean nothing
            raise ValueError(
                f"{name!r} is method {base!r} under the {preset!r} rules: call "
                f"attribution(model, {base!r}, rules={preset!r}) or libra_jax.methods.{name}(model)"
            )
    rules = get_rules(rules)
    target_fn = core.target_function(rules, target)
    layout, num_classes = model.layout, model.capabilities.num_classes
    for name in names:
        check_model(model, name)

    single = [n for n in names if n in maps.SINGLE_PASS]
    multi_pass = [n for n in names if n in MULTI_PASS]
    opts = {n: _method_options(maps.SINGLE_PASS[n], 2) for n in single}
    multi_fns = {n: multi_pass_function(model, n) for n in multi_pass}
    opts |= {n: _method_options(multi_fns[n], 6) for n in multi_pass}
    unused = set(options) - set().union(*opts.values())
    if unused:
        raise TypeError(f"options {sorted(unused)} are not accepted by methods {names}")
    kwargs = {n: {k: v for k, v in options.items() if k in opts[n]} for n in names}

    def read_maps(rec):
        return {n: maps.SINGLE_PASS[n](rec, model, **kwargs[n]) for n in single}

    def per_example(params, x, y, multi):
        out = {}
        if single:
            rec = core.single_pass(model, params, x, y, rules, target_fn, multi=multi)
            logits = rec["logits"]
            if multi:
                parts = {k: rec[k] for k in _TARGET_DEPENDENT if k in rec}  # g_words: text models only
                out |= jax.vmap(lambda p: read_maps({**rec, **p}))(parts)
            else:
                out |= read_maps(rec)
        for n in multi_pass:
            run = functools.partial(multi_fns[n], model, params, x, rules=rules, target=target_fn, **kwargs[n])
            out[n] = jax.vmap(run)(y) if multi else run(y)
        if not return_logits:
            return out, None
        return out, logits if single else model.apply({"params": params}, x, rules)[0]

    def fn(params, x, y):
        validate.require_targets(y)
        x = jax.tree.map(jnp.asarray, x)
        y = jnp.asarray(y)
        if check_inputs:
            model.check_inputs(x)
            if not callable(target):
                validate.check_targets(y, num_classes, jax.tree.leaves(x)[0].shape[0])
        multi = y.ndim == 2 + target_rank(target, y)
        if chunk_size is None:
            out, logits = jax.vmap(per_example, in_axes=(None, 0, 0, None))(params, x, y, multi)
        else:  # vmapped within a chunk, sequential over chunks (a remainder chunk is vmapped on its own)
            out, logits = jax.lax.map(lambda xy: per_example(params, *xy, multi), (x, y), batch_size=chunk_size)
        out = jax.tree.map(core.to_float32, out)
        if not return_tokens:
            out = {k: layout.to_map(v) for k, v in out.items()}
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
