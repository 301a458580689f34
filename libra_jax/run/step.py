"""The computation shared by `libra-jax explain` and `libra-jax run`: one forward gives the prediction and the maps.

Single-pass methods under the same rule preset share one forward + backward pass, and the model
output (the logits) is read from that same forward: the class explained by default, each example's
top-1, is picked inside it, with no forward of its own. Each further preset adds one pass.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from libra_jax.methods import attribution, maps
from libra_jax.methods.core import target_function
from libra_jax.methods.names import MethodTable, by_preset
from libra_jax.rules import get_rules

TARGETS = ("top1", "label")
"""Named target modes of a run; an int is a fixed class index."""


def _top1(target: Callable) -> Callable:
    """The explained scalar of an example's own top-1 class, `target(logits, argmax(logits))` (y unused)."""
    return lambda logits, _: target(logits, jnp.argmax(logits))


def predict_and_attribute(model, methods: MethodTable, target_for: Callable[[str], Callable] | None = None) -> Callable:
    """Pure `fn(params, x, y) -> (output (B, K), {name: (B, gh, gw)})` for every entry of `methods`; x images
    (B, H, W, C) or a `TextInputs` (B, N) (maps (B, N)).

    y: None explains each example's top-1 class, picked from the forward its maps come from; else what
    `libra_jax.methods.attribution` takes (class indices (B,), several per image (B, T), or an image–text
    target's y). output: the model's (logits; an image–text model's image embedding) from the forward of
    the first preset with a single-pass method. `target_for(preset)`: each preset's explained scalar when
    it depends on the rules (an image–text target's N2U rule); None: each preset's own. Inputs are not
    validated on device (no host callback): the caller checks them on the host. Raises ValueError for a
    method the model cannot run.
    """
    wanted = by_preset(methods)
    lead = next((p for p, ms in wanted.items() if set(ms) & set(maps.SINGLE_PASS)), next(iter(wanted)))
    single = [m for m in wanted[lead] if m in maps.SINGLE_PASS]

    def build(preset: str, names: list[str], *, output: bool = False, top1: bool = False) -> Callable:
        target = None if target_for is None else target_for(preset)
        target = _top1(target_function(get_rules(preset), target)) if top1 else target
        return attribution(model, names, preset, target, return_logits=output, check_inputs=False)

    # y given: one pass per preset, the lead's forward gives the output
    given = {p: build(p, ms, output=p == lead) for p, ms in wanted.items()}
    # y None: the lead's single-pass methods explain the top-1 of their own forward, every other method then that class
    top1 = build(lead, single, output=True, top1=True) if single else None
    rest = {p: [m for m in ms if p != lead or m not in single] for p, ms in wanted.items()}
    after = {p: build(p, ms) for p, ms in rest.items() if ms}

    def fn(params, x, y):
        computed: dict[str, dict] = {p: {} for p in wanted}
        if y is None:
            if top1 is None:
                output = model.apply({"params": params}, x)[0]
            else:
                computed[lead], output = top1(params, x, jnp.zeros(jax.tree.leaves(x)[0].shape[0], jnp.int32))
            y = jnp.argmax(output, -1).astype(jnp.int32)
            passes = after
        else:
            computed[lead], output = given[lead](params, x, y)
            passes = {p: f for p, f in given.items() if p != lead}
        for preset, f in passes.items():
            computed[preset] |= f(params, x, y)
        return output, {name: computed[preset][method] for name, (method, preset) in methods.items()}

    return fn


def check_target(target: str | int, num_classes: int) -> None:
    """ValueError unless `target` is 'top1', 'label' or a class index of the model."""
    if isinstance(target, str):
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}; expected one of {TARGETS} or a class index")
    elif not 0 <= target < num_classes:
        raise ValueError(f"target class {target} is out of range: the model has {num_classes} classes")


def make_step(model, methods: MethodTable, target: str | int = "top1") -> Callable:
    """Pure `step(params, x, labels) -> {pred, target, score, maps}` for one batch of a run.

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
    explain = predict_and_attribute(model, dict(methods))

    def step(params, x, labels):
        if target == "top1":
            y = None
        elif target == "label":
            y = labels.astype(jnp.int32)
        else:
            y = jnp.full(x.shape[0], target, jnp.int32)
        logits, maps = explain(params, x, y)
        pred = jnp.argmax(logits, -1).astype(jnp.int32)
        y = pred if y is None else y
        score = jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]
        return {"pred": pred, "target": y, "score": score, "maps": maps}

    return step
