"""Multi-pass gradient methods: Integrated Gradients and SmoothGrad, in token-embedding or pixel space, and
input × gradient at the pixels.

Each evaluates the network at several points of its input space, batched over steps/samples
(`internal_batch_size` chunks them to bound memory). The space is `space="tokens"` (the token embeddings h₀ (N, C),
where every token map lives) or `space="pixels"` (the normalised image (H, W, C) itself, Captum's
`InputXGradient` / `IntegratedGradients` / `NoiseTunnel` on the image tensor; image models only). Maps are summed
over channels, or kept per channel with `per_channel=True`. Per example; `libra_jax.attribution` vmaps over the
batch.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from libra_jax.methods.core import Target, to_float32
from libra_jax.rules import Rules

SPACES = ("tokens", "pixels")
PIXEL_METHODS = ("ixg", "ig", "smoothgrad")
"""The methods `space="pixels"` applies to."""
BASELINES = ("zero", "black", "blur")
BLUR_SIGMA = 5.0
"""σ in pixels of the Gaussian blur behind `baseline="blur"` (kernel radius ⌈3σ⌉, reflected borders)."""
BATCHED_OPTIONS = {"baseline": 3}
"""Options that may hold one value per example: name → rank of one example's value (a (B, H, W, C) baseline
is mapped with the batch, one (H, W, C) image is shared)."""


def check_space(model, space: str) -> None:
    """Raise ValueError unless `space` is one of `SPACES` and defined for `model`."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}; got {space!r}")
    if space == "pixels" and model.capabilities.kind != "image":
        raise ValueError("space='pixels' needs a model whose input is an image; this one's is not: use space='tokens'")


def _explained(model, params, x, rules: Rules, space: str) -> tuple[jax.Array, Callable]:
    """(u, output): the point the gradients are taken at — h₀ (N, C) or the image x (H, W, C) — and u ↦ output."""
    if space == "pixels":
        return x, lambda u: model.apply({"params": params}, u, rules)[0]
    mask = model.token_mask(x)

    def output(t):
        return model.apply({"params": params}, t, rules, mask=mask, method="forward_tokens")[0]

    return model.apply({"params": params}, x, method="embed"), output


def _gradients(output: Callable, points: jax.Array, y, target: Target, internal_batch_size) -> jax.Array:
    """∂f/∂u at each of the points (S, ...) → (S, ...), f = target(output(u), y)."""

    def grad_at(u):
        return jax.grad(lambda t: target(output(t), y))(u)

    # stored in the compute dtype, averaged over the steps in float32
    return to_float32(jax.lax.map(grad_at, points, batch_size=internal_batch_size))


def _channels(a: jax.Array, per_channel: bool) -> jax.Array:
    return a if per_channel else a.sum(-1)


def blur(image: jax.Array, sigma: float = BLUR_SIGMA) -> jax.Array:
    """Gaussian blur of images (..., H, W, C) over H and W: kernel exp(−k²/2σ²) normalised, radius ⌈3σ⌉, borders
    reflected (torchvision `GaussianBlur`'s padding). The weights sum to 1 everywhere, so blurring a normalised
    image equals normalising the blurred pixels."""
    radius = int(np.ceil(3 * sigma))
    k = np.arange(-radius, radius + 1)
    w = np.exp(-(k**2) / (2 * sigma**2))
    w = jnp.asarray(w / w.sum(), image.dtype)
    for axis in (-3, -2):
        if image.shape[axis] <= radius:
            raise ValueError(f"blur σ={sigma} needs images wider than {radius} pixels; got {image.shape[-3:-1]}")
        pad = [(0, 0)] * image.ndim
        pad[axis] = (radius, radius)
        padded = jnp.pad(image, pad, mode="reflect")
        n = image.shape[axis]
        image = sum(w[i] * jax.lax.slice_in_dim(padded, i, i + n, axis=axis % image.ndim) for i in range(len(k)))
    return image


def baseline_image(model, x: jax.Array, baseline) -> jax.Array | None:
    """The baseline image (H, W, C) of `baseline` for one normalised image x; None for "zero" (the zero point of
    the space the method works in).

    "black": the image of black pixels in the model's normalisation (−mean/std per channel); "blur": x blurred
    (`blur`, σ = `BLUR_SIGMA` pixels); an array: that normalised image (the shape of x).
    """
    if isinstance(baseline, str):
        if baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES} or an image array; got {baseline!r}")
        if baseline == "zero":
            return None
    if model.capabilities.kind != "image":
        raise ValueError(f"baseline={baseline!r} is an image; this model's input is not: use baseline='zero'")
    if isinstance(baseline, str):
        if baseline == "blur":
            return blur(x)
        dc = model.data_config
        black = -np.asarray(dc.mean, np.float64) / np.asarray(dc.std, np.float64)
        return jnp.broadcast_to(jnp.asarray(black, x.dtype), x.shape)
    baseline = jnp.asarray(baseline, x.dtype)
    if baseline.shape != x.shape:
        raise ValueError(
            f"a baseline array is one normalised image {x.shape} or one per example; got shape {baseline.shape}"
        )
    return baseline


def _ig_alphas(steps: int, dtype) -> jax.Array:
    """α_k = k/m, k = 1..m (right Riemann sum, as in the IG paper's approximation)."""
    return (jnp.arange(1, steps + 1, dtype=dtype)) / steps


def ig(
    model,
    params,
    x,
    y,
    rules: Rules,
    target: Target,
    steps: int = 50,
    internal_batch_size: int | None = None,
    baseline="zero",
    space: str = "tokens",
    per_channel: bool = False,
):
    """Integrated Gradients (textbook form) from a baseline u′ to the input u (h₀ or the image, per `space`).

    IG[t] = Σ_c (u − u′)[t,c] · (1/m) Σ_k ∂f/∂u(u′ + α_k (u − u′))[t,c], α_k = k/m. Σ_t IG ≈ f(u) − f(u′).
    `baseline`: "zero" (the zero token embedding, or the zero normalised image), "black", "blur" or a normalised
    image (`baseline_image`); in token space an image baseline enters as its embedding. Returns (N,) or (H, W),
    with a trailing channel axis when `per_channel`.
    """
    u, output = _explained(model, params, x, rules, space)
    image = baseline_image(model, x, baseline)
    if image is None:
        base = jnp.zeros_like(u)
    else:
        base = image if space == "pixels" else model.apply({"params": params}, image, method="embed")
    alphas = _ig_alphas(steps, u.dtype).reshape(-1, *([1] * u.ndim))
    grads = _gradients(output, base + alphas * (u - base), y, target, internal_batch_size)
    return _channels((u - base) * grads.mean(0), per_channel)


def ig_tokenspace_paper(
    model, params, x, y, rules: Rules, target: Target, steps: int = 50, internal_batch_size: int | None = None
):
    """The official LibraGrad code's IG variant: (1/m) Σ_k Σ_c (α_k h₀) ⊙ ∂f/∂h(α_k h₀), α_k = k/m.

    Not textbook IG (each step's input×gradient is weighted by α_k); provided for parity.
    """
    h0, output = _explained(model, params, x, rules, "tokens")
    alphas = _ig_alphas(steps, h0.dtype)
    grads = _gradients(output, alphas[:, None, None] * h0, y, target, internal_batch_size)
    return (alphas[:, None] * (h0 * grads).sum(-1)).mean(0)


def _token_noise(key, h0: jax.Array, real: jax.Array, samples: int) -> jax.Array:
    """Standard normal noise (samples, N, C) on the real tokens, 0 on padding.

    Token t's noise is drawn from its rank among the real tokens, so padding neither shifts nor receives it:
    a padded sequence gets the draws of the unpadded one.
    """
    rank = jnp.cumsum(real) - 1
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, rank)
    noise = jax.vmap(lambda k: jax.random.normal(k, (samples, h0.shape[-1]), h0.dtype), out_axes=1)(keys)
    return jnp.where(real[:, None], noise, 0.0)


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
    noise_key: jax.Array | None = None,
    sigma: float | None = None,
    space: str = "tokens",
    per_channel: bool = False,
):
    """SmoothGrad: gradients averaged over u + N(0, σ²), u = h₀ or the image (per `space`).

    σ = `sigma` when given (absolute, in the units of u: embedding units, or normalised pixel units), else
    noise_level·(max u − min u) over the real tokens / the image (the SmoothGrad paper's σ/(x_max − x_min)).
    reduce="ixg": u ⊙ mean gradient (SmoothGrad × input); "grad": the mean gradient. Summed over channels unless
    `per_channel`. The noise comes from `noise_key` (a jax PRNG key, may be traced), else `PRNGKey(seed)`; in token
    space it depends only on the key and each token's rank among the real tokens, so a batch gives the same maps
    as single calls and a padded sequence those of the unpadded one (padding is never perturbed).

    Raises ValueError for reduce="grad" summed over channels in token space on a model with `centred_tokens`
    (Σ_c ∂f/∂h₀[t,c] is exactly 0 there, the map would be rounding noise).
    """
    if reduce not in ("ixg", "grad"):
        raise ValueError(f"smoothgrad reduce must be 'ixg' or 'grad'; got {reduce!r}")
    if reduce == "grad" and space == "tokens" and not per_channel and model.capabilities.centred_tokens:
        raise ValueError(
            "smoothgrad reduce='grad' sums the gradient over channels, and this model's token stream is"
            " mean-centred by its LayerNorms, so that sum is exactly 0 (the map would be rounding noise):"
            " use reduce='ixg' (SmoothGrad × input), per_channel=True, or space='pixels'"
        )
    u, output = _explained(model, params, x, rules, space)
    key = jax.random.PRNGKey(seed) if noise_key is None else noise_key
    if space == "pixels":
        real = jnp.ones(u.shape[:-1], bool)
        noise = jax.random.normal(key, (samples, *u.shape), u.dtype)
    else:
        mask = model.token_mask(x)
        real = jnp.ones(u.shape[:-1], bool) if mask is None else mask
        noise = _token_noise(key, u, real, samples)
    if sigma is None:
        sigma = noise_level * (
            jnp.where(real[..., None], u, -jnp.inf).max() - jnp.where(real[..., None], u, jnp.inf).min()
        )
    grads = _gradients(output, u + sigma * noise, y, target, internal_batch_size).mean(0)
    return _channels(u * grads if reduce == "ixg" else grads, per_channel)


def pixel_ixg(model, params, x, y, rules: Rules, target: Target, per_channel: bool = False):
    """Input × gradient at the normalised image (Captum `InputXGradient` on the image tensor): x ⊙ ∂f/∂x, (H, W)
    or (H, W, C) with `per_channel`. `attribution(model, "ixg", space="pixels")` runs it."""
    _, output = _explained(model, params, x, rules, "pixels")
    grads = _gradients(output, x[None], y, target, None)[0]
    return _channels(x * grads, per_channel)


MULTI_PASS = {"ig": ig, "ig_tokenspace_paper": ig_tokenspace_paper, "smoothgrad": smoothgrad}
"""Methods that need their own passes: name → fn(model, params, x, y, rules, target, **options)."""
