"""Greedy continuation of a prompt with a decoder LM, one compiled step for all n tokens.

The prompt and its continuation live in one fixed buffer of length N + n; the causal mask makes the
logits at position t independent of the slots after t, so each step runs the full buffer (no KV cache:
meant for the short continuations that are then explained, not for long generation).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from libra_jax.models.text_inputs import TextInputs, text_inputs


def greedy_continuation(model, params, inputs: TextInputs, num_tokens: int) -> jax.Array:
    """The `num_tokens` argmax tokens after one example's prompt: inputs (N,) (left padding allowed) →
    (num_tokens,) int32, as transformers' `generate(do_sample=False)` without an EOS stop."""
    n = inputs.ids.shape[-1]
    ids = jnp.concatenate([inputs.ids, jnp.zeros((num_tokens,), jnp.int32)])
    mask = jnp.concatenate([inputs.attention_mask, jnp.ones((num_tokens,), jnp.int32)])

    def step(i, ids):
        logits, _ = model.apply({"params": params}, text_inputs(ids, mask))
        return ids.at[n + i].set(jnp.argmax(logits[n + i - 1]).astype(jnp.int32))

    return jax.lax.fori_loop(0, num_tokens, step, ids)[n:]
