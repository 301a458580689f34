"""The computation of a dataset run: user method names → one function computing every map of a batch.

Single-pass methods under the same rule preset share one forward + backward pass; each further
preset adds its own pass (`libra_jax.methods.attribution` per preset).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

import jax.numpy as jnp

from libra_jax.methods import attribution, resolve_method

MethodTable = Mapping[str, tuple[str, str]]
"""Output name → (method, preset), e.g. {'libra_fullgrad_plus': ('fullgrad_plus', 'libra')}."""

TARGETS = ("top1", "label")
"""Named target modes; an int is a fixed class index."""


def resolve_methods(names: Sequence[str], rules: str | None = None) -> dict[str, tuple[str, str]]:
    """User-facing method names ('libra_fullgrad_plus', 'gradcam', 'attnlrp') → MethodTable, duplicates dropped.

    `rules` overrides the preset of plain names ('gradcam'); a name implying another preset
    ('libra_gradcam', 'attnlrp') conflicts with it (ValueError).
    """
    out = {}
    for name in dict.fromkeys(names):
        method, preset = resolve_method(name)
        if rules is not None:
            if preset not in ("vanilla", rules):
                raise ValueError(f"method {name!r} implies the {preset!r} rules, which conflicts with --rules {rules}")
            preset = rules
        out[name] = (method, preset)
    return out


def combined_attribution(
    model, methods: MethodTable, target_for: Callable[[str], Callable] | None = None, **options
) -> Callable:
    """Pure `fn(params, x (B, H, W, C), y (B,)) -> {name: (B, gh, gw)}` for every entry of `methods`.

    `target_for(preset)` gives each preset's explained scalar when it depends on the rules (an
    image–text target's N2U rule); None: each preset's own. `options` go to every `attribution` call
    (e.g. check_inputs=False). Raises ValueError for a method the model cannot run (an attention-row
    method on a model without a class token).
    """
    by_preset: dict[str, dict[str, str]] = {}
    for name, (method, preset) in methods.items():
        by_preset.setdefault(preset, {})[name] = method
    targets = {preset: None if target_for is None else target_for(preset) for preset in by_preset}
    fns = {
        preset: attribution(model, list(dict.fromkeys(names.values())), preset, targets[preset], **options)
        for preset, names in by_preset.items()
    }

    def fn(params, x, y):
        out = {}
        for preset, names in by_preset.items():
            maps = fns[preset](params, x, y)
            out |= {name: maps[method] for name, method in names.items()}
        return out

    return fn


def check_target(target: str | int, num_classes: int) -> None:
    """ValueError unless `target` is 'top1', 'label' or a class index of the model."""
    if isinstance(target, str):
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}; expected one of {TARGETS} or a class index")
    elif not 0 <= target < num_classes:
        raise ValueError(f"target class {target} is out of range: the model has {num_classes} classes")


def make_step(model, methods: MethodTable, target: str | int = "top1") -> Callable:
    """Pure `step(params, x, labels) -> {pred, target, score, maps}` for one batch.

    Args (of step): x normalised float (B, H, W, C); labels int32 (B,) (read only when target='label').
    Returns: pred int32 (B,) top-1 class; target int32 (B,) the class explained ('top1': pred,
      'label': labels, int: that class); score float (B,) its logit; maps {name: (B, gh, gw)}.
    Inputs are not validated on device (no host callback): the caller checks labels on the host.
    Equal arguments give the same function object, so jitting it again reuses the compilation.
    """
    check_target(target, model.config.num_classes)
    return _step(model, tuple(methods.items()), target)


@functools.lru_cache(maxsize=8)
def _step(model, methods: tuple[tuple[str, tuple[str, str]], ...], target: str | int) -> Callable:
    explain = combined_attribution(model, dict(methods), check_inputs=False)

    def step(params, x, labels):
        logits = model.apply({"params": params}, x)[0]
        pred = jnp.argmax(logits, -1).astype(jnp.int32)
        if target == "top1":
            y = pred
        elif target == "label":
            y = labels.astype(jnp.int32)
        else:
            y = jnp.full_like(pred, target)
        score = jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]
        return {"pred": pred, "target": y, "score": score, "maps": explain(params, x, y)}

    return step
