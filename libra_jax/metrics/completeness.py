"""Completeness: do the attributions sum to the explained scalar, Σ_t map[t] = f?"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from libra_jax.methods import api, core
from libra_jax.rules import Rules, get_rules


def completeness_residuals(token_maps: jax.Array, f: jax.Array) -> jax.Array:
    """Σ_t map[t] − f per image: token_maps (B, N) (prefix tokens included), f (B,) → (B,)."""
    return token_maps.sum(-1) - f


def completeness_error(
    model,
    params,
    x: jax.Array,
    y: jax.Array | None = None,
    method: str = "fullgrad",
    rules: str | Rules = "libra_logit",
) -> dict[str, jax.Array]:
    """Completeness error of `method` under `rules` (default: the logit of the top-1 class).

    Args:
      model, params: the model.
      x: (B, H, W, C) normalised images.
      y: (B,) classes to explain; default the top-1 prediction (as the LibraGrad protocol).
      method: a single-pass or IG method name. For "fullgrad" the biases no token holds (MLP-Mixer
        token-MLP fc1) count too (`fullgrad(..., unassigned_bias=True)`).
      rules: backward rules; their `target` decides the explained scalar f.
    Returns:
      {'residual': (B,) Σ_t map − f, 'target': (B,) f, 'error': mean |residual| (scalar)}.
    """
    rules = get_rules(rules)
    logits, _ = model.apply({"params": params}, x, rules)
    if y is None:
        y = jnp.argmax(logits, -1)
    f = jax.vmap(core.target_function(rules, None))(logits, y)
    options = {"unassigned_bias": True} if method == "fullgrad" else {}
    maps = api.attribution(model, method, rules=rules, return_tokens=True, **options)(params, x, y)
    residual = completeness_residuals(maps, f)
    return {"residual": residual, "target": f, "error": jnp.abs(residual).mean()}
