"""Multi-pass gradient methods in token-embedding space: Integrated Gradients and SmoothGrad.

Each evaluates the network from the token embeddings h₀ (the space every token map lives in)
at several points, batched over steps/samples (`internal_batch_size` chunks them to bound
memory). Per example; `libra_jax.attribution` vmaps over the batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from libra_jax.methods.core import Target, to_float32
from libra_jax.rules import Rules


def _token_gradients(model, params, x, h_points, y, rules: Rules, target: Target, internal_batch_size):
    """∂f/∂h at each of the points h_points (S, N, C) → (S, N, C); x is the example (for its padding mask)."""
    mask = model.token_mask(x)

    def output(t):
        return model.apply({"params": params}, t, rules, mask=mask, method="forward_tokens")[0]

    def grad_at(h):
        return jax.grad(lambda t: target(output(t), y))(h)

    # stored in the compute dtype, averaged over the steps in float32
    return to_float32(jax.lax.map(grad_at, h_points, batch_size=internal_batch_size))


def _ig_alphas(steps: int, dtype) -> jax.Array:
    """α_k = k/m, k = 1..m (right Riemann sum, as in the IG paper's approximation)."""
    return (jnp.arange(1, steps + 1, dtype=dtype)) / steps


def ig(model, params, x, y, rules: Rules, target: Target, steps: int = 50, internal_batch_size: int | None = None):
    """Integrated Gradients with a zero token-embedding baseline (textbook form).

    IG[t] = Σ_c h₀[t,c] · (1/m) Σ_k ∂f/∂h(α_k h₀)[t,c], α_k = k/m. Σ_t IG ≈ f(h₀) − f(0).
    """
    h0 = model.apply({"params": params}, x, method="embed")
    alphas = _ig_alphas(steps, h0.dtype)
    grads = _token_gradients(model, params, x, alphas[:, None, None] * h0, y, rules, target, internal_batch_size)
    return (h0 * grads.mean(0)).sum(-1)


def ig_tokenspace_paper(
    model, params, x, y, rules: Rules, target: Target, steps: int = 50, internal_batch_size: int | None = None
):
    """The official LibraGrad code's IG variant: (1/m) Σ_k Σ_c (α_k h₀) ⊙ ∂f/∂h(α_k h₀), α_k = k/m.

    Not textbook IG (each step's input×gradient is weighted by α_k); provided for parity.
    """
    h0 = model.apply({"params": params}, x, method="embed")
    alphas = _ig_alphas(steps, h0.dtype)
    grads = _token_gradients(model, params, x, alphas[:, None, None] * h0, y, rules, target, internal_batch_size)
    return (alphas[:, None] * (h0 * grads).sum(-1)).mean(0)


def smoothgrad(
    model,
    params,
    x,
    y,
    rules: Rules,
    target: Target,
    samples: int = 50,
    noise_level: float = 0.15,
    reduce: str = "ixg",
    seed: int = 0,
    internal_batch_size: int | None = None,
):
    """SmoothGrad in token space: gradients averaged over h₀ + N(0, σ²), σ = noise_level·(max h₀ − min h₀) over the
    real tokens.

    reduce="ixg": Σ_c h₀ ⊙ mean gradient (SmoothGrad × input); "grad": Σ_c mean gradient.
    The noise draw depends only on `seed` and each token's rank among the real tokens, so a batch gives the same
    maps as single calls and a padded sequence those of the unpadded one (padding is never perturbed).
    """
    if reduce not in ("ixg", "grad"):
        raise ValueError(f"smoothgrad reduce must be 'ixg' or 'grad'; got {reduce!r}")
    h0 = model.apply({"params": params}, x, method="embed")
    mask = model.token_mask(x)
    real = jnp.ones(h0.shape[:-1], bool) if mask is None else mask
    sigma = noise_level * (jnp.where(real[:, None], h0, -jnp.inf).max() - jnp.where(real[:, None], h0, jnp.inf).min())
    # Token t's noise is drawn from its rank among the real tokens and is 0 on padding, so padding neither
    # shifts nor receives it: a padded sequence gets the draws of the unpadded one.
    rank = jnp.cumsum(real) - 1
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.PRNGKey(seed), rank)
    noise = jax.vmap(lambda k: jax.random.normal(k, (samples, h0.shape[-1]), h0.dtype), out_axes=1)(keys)
    noise = jnp.where(real[:, None], noise, 0.0)
    grads = _token_gradients(model, params, x, h0 + sigma * noise, y, rules, target, internal_batch_size).mean(0)
    return (h0 * grads).sum(-1) if reduce == "ixg" else grads.sum(-1)


MULTI_PASS = {"ig": ig, "ig_tokenspace_paper": ig_tokenspace_paper, "smoothgrad": smoothgrad}
"""Methods that need their own passes: name → fn(model, params, x, y, rules, target, **options)."""
