"""Explained scalars of a decoder LM, as `target` callables f(logits (N, V), y) for `libra_jax.attribution`,
`core.single_pass` / `core.target_function` (per example).

    f = next_token_target("log_prob")   # y = (position, token): log p(token | prefix up to position)
    f = contrast_target()               # y = (position, a, b): logit a − logit b at position
    f = continuation_target()           # y = (n, 2) (position, token) pairs: Σ log p, teacher-forced

The logits at position t predict token t+1, so "the next token after the prompt" is position N−1. Each
target states `y_ndim`, the rank of one example's y, so that `attribution` reads a y with one more axis as
several targets per example (one forward, the backward vmapped over the targets).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

KINDS = ("logit", "log_prob", "prob")


@dataclasses.dataclass(frozen=True)
class NextTokenTarget:
    """f(logits (N, V), y (2,) int = (position, token)): the token's logit, log-probability or probability."""

    y_ndim: ClassVar[int] = 1

    kind: str = "logit"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"next-token target kind {self.kind!r}; expected one of {KINDS}")

    def __call__(self, logits: jax.Array, y: jax.Array) -> jax.Array:
        row = logits[y[0]]
        if self.kind == "log_prob":
            row = jax.nn.log_softmax(row)
        elif self.kind == "prob":
            row = jax.nn.softmax(row)
        return row[y[1]]


@dataclasses.dataclass(frozen=True)
class ContrastTarget:
    """f(logits (N, V), y (3,) int = (position, a, b)) = logit a − logit b at the position."""

    y_ndim: ClassVar[int] = 1

    def __call__(self, logits: jax.Array, y: jax.Array) -> jax.Array:
        return logits[y[0], y[1]] - logits[y[0], y[2]]


@dataclasses.dataclass(frozen=True)
class ContinuationTarget:
    """f(logits (N, V), y (n, 2) int) = Σ_i log p(y[i, 1] | prefix up to y[i, 0]): a teacher-forced
    continuation's log-likelihood as one scalar (`continuation_y` builds y)."""

    y_ndim: ClassVar[int] = 2

    def __call__(self, logits: jax.Array, y: jax.Array) -> jax.Array:
        rows = jax.nn.log_softmax(logits[y[:, 0]], axis=-1)  # (n, V)
        return jnp.take_along_axis(rows, y[:, 1:2], axis=-1).sum()


def next_token_target(kind: str = "logit") -> NextTokenTarget:
    """The logit, log-probability or probability of a token at a position (y = (position, token))."""
    return NextTokenTarget(kind)


def contrast_target() -> ContrastTarget:
    """Logit a − logit b at a position (y = (position, a, b))."""
    return ContrastTarget()


def continuation_target() -> ContinuationTarget:
    """Σ log p of a teacher-forced continuation (y = `continuation_y(...)`, (n, 2))."""
    return ContinuationTarget()


def target_at(position, token, other=None) -> jax.Array:
    """The y of `next_token_target` ((position, token)) or of `contrast_target` ((position, token, other))."""
    parts = (position, token) if other is None else (position, token, other)
    return jnp.asarray(parts, jnp.int32)


def continuation_y(prompt_length: int, continuation) -> jax.Array:
    """The (position, token) pairs of a continuation that follows a prompt of `prompt_length` positions:
    continuation (..., n) int → (..., n, 2); token i sits at prompt_length + i and is predicted at the
    position before it. The y of `continuation_target`, or n targets of `next_token_target`."""
    tokens = jnp.asarray(continuation, jnp.int32)
    positions = prompt_length - 1 + jnp.arange(tokens.shape[-1], dtype=jnp.int32)
    return jnp.stack([jnp.broadcast_to(positions, tokens.shape), tokens], axis=-1)
