"""Explained scalars of a decoder LM, as `target` callables f(logits (N, V), y) for `core.single_pass` /
`core.target_function` (per example; stack several y for the multi-target backward).

    f = next_token_target("log_prob")   # y = (position, token): log p(token | prefix up to position)
    f = contrast_target()               # y = (position, a, b): logit a − logit b at position

The logits at position t predict token t+1, so "the next token after the prompt" is position N−1.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

KINDS = ("logit", "log_prob", "prob")


def next_token_target(kind: str = "logit") -> Callable[[jax.Array, jax.Array], jax.Array]:
    """f(logits (N, V), y (2,) int = (position, token)): the token's logit, log-probability or probability."""
    if kind not in KINDS:
        raise ValueError(f"next-token target kind {kind!r}; expected one of {KINDS}")

    def f(logits, y):
        row = logits[y[0]]
        if kind == "log_prob":
            row = jax.nn.log_softmax(row)
        elif kind == "prob":
            row = jax.nn.softmax(row)
        return row[y[1]]

    return f


def contrast_target() -> Callable[[jax.Array, jax.Array], jax.Array]:
    """f(logits (N, V), y (3,) int = (position, a, b)) = logit a − logit b at the position."""

    def f(logits, y):
        return logits[y[0], y[1]] - logits[y[0], y[2]]

    return f


def target_at(position, token, other=None) -> jax.Array:
    """The y of `next_token_target` ((position, token)) or of `contrast_target` ((position, token, other))."""
    parts = (position, token) if other is None else (position, token, other)
    return jnp.asarray(parts, jnp.int32)
