"""Image–text targets: the explained scalar of an image embedding given a text embedding.

    target = similarity_target(rules, scale=100.0)
    fn = libra_jax.attribution(model, "fullgrad", rules, target=target)
    maps = fn(params, x, text)   # text (B, E) unit text embeddings, or (B, T, E) for T prompts per image

f(e, t) = scale·⟨n(e), t⟩ + bias, with n the unit normalisation under the rules' N2U rule
(`Rules.unit_norm`: ‖e‖ constant under the Libra presets) and t a constant (the official code
computes text features under `no_grad`). The official CLIP target is 100·⟨n(img), n(txt)⟩; SigLIP's
logit is exp(logit_scale)·cos + logit_bias, optionally explained through its sigmoid.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from libra_jax import ops
from libra_jax.rules import Rules, get_rules


@dataclasses.dataclass(frozen=True)
class SimilarityTarget:
    """f(image embedding (E,), text embedding (E,)) → scalar; see the module docstring.

    `y_ndim` tells `libra_jax.attribution` the rank of one target (a (E,) vector), so a (B, T, E)
    y is read as T prompts per image: one image forward, the backward vmapped over the prompts.
    """

    y_ndim: ClassVar[int] = 1

    unit_norm: str = "plain"
    scale: float = 100.0
    bias: float = 0.0
    sigmoid: bool = False

    def __call__(self, embedding: jax.Array, text: jax.Array) -> jax.Array:
        t = jax.lax.stop_gradient(text).astype(embedding.dtype)
        logit = self.scale * jnp.dot(ops.unit_norm(embedding, rule=self.unit_norm), t) + self.bias
        return jax.nn.sigmoid(logit) if self.sigmoid else logit


def similarity_target(
    rules: str | Rules, *, scale: float = 100.0, bias: float = 0.0, sigmoid: bool = False
) -> SimilarityTarget:
    """The image–text target under `rules` (their `unit_norm` rule; `rules.target` does not apply).

    Args:
      rules: the preset / Rules the attribution runs under.
      scale: logit scale (CLIP's official target: 100; a model's own: `exp(params['logit_scale'])`).
      bias: logit bias (SigLIP: `params['logit_bias']`).
      sigmoid: explain sigmoid(logit) (SigLIP's probability) instead of the logit.
    """
    return SimilarityTarget(get_rules(rules).unit_norm, float(scale), float(bias), sigmoid)


def model_target(params: dict, rules: str | Rules, *, sigmoid: bool = False) -> SimilarityTarget:
    """`similarity_target` with the model's own exp(logit_scale) and logit_bias (0 when it has none)."""
    bias = params.get("logit_bias", 0.0)
    return similarity_target(rules, scale=float(jnp.exp(params["logit_scale"])), bias=float(bias), sigmoid=sigmoid)


def text_embeddings(model, params: dict, tokens: jax.Array) -> jax.Array:
    """Unit text embeddings (..., E) of token ids (..., L): the constants the targets compare with."""
    emb = model.apply({"params": params}, tokens, method="encode_text")
    return ops.unit_norm(emb)
