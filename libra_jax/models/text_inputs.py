"""`TextInputs`: a small typed batch of token ids, attention mask and token types, with input checks. The text
models' input type (re-exported by `libra_jax.text`, whose tokenizers make it).

    inputs = text_inputs(ids, attention_mask)            # token types default to 0
    check_text_inputs(inputs, model.config)              # clear errors for bad input

A `flax.struct` dataclass, so it is a pytree: `jax.vmap` maps over its arrays and `jit` traces them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from libra_jax.validate import runtime_check


@struct.dataclass
class TextInputs:
    """ids (..., N) int32 token ids; attention_mask (..., N) int32, 1 = real token, 0 = padding;
    token_type_ids (..., N) int32 segment ids (0 where the model has none)."""

    ids: jax.Array
    attention_mask: jax.Array
    token_type_ids: jax.Array


def text_inputs(ids, attention_mask=None, token_type_ids=None) -> TextInputs:
    """A `TextInputs` from array-likes; the mask defaults to all ones, the token types to zeros.

    Raises ValueError when the shapes disagree or the ids are not integers (e.g. an image).
    """
    ids_dtype = np.asarray(ids).dtype if not isinstance(ids, jax.Array) else ids.dtype
    if not jnp.issubdtype(ids_dtype, jnp.integer):
        raise ValueError(
            f"token ids must be integers; got dtype {ids_dtype} with shape {np.shape(ids)}"
            " (an image? text models take token ids: tokenize the text with libra_jax.text.load_text_tokenizer)"
        )
    ids = jnp.asarray(ids, jnp.int32)
    parts = {"attention_mask": attention_mask, "token_type_ids": token_type_ids}
    for name, value in parts.items():
        if value is not None and tuple(np.shape(value)) != tuple(ids.shape):
            raise ValueError(
                f"{name} has shape {tuple(np.shape(value))} but the ids have {tuple(ids.shape)}; pass one per id"
            )
    mask = jnp.ones_like(ids) if attention_mask is None else jnp.asarray(attention_mask, jnp.int32)
    types = jnp.zeros_like(ids) if token_type_ids is None else jnp.asarray(token_type_ids, jnp.int32)
    return TextInputs(ids, mask, types)


def check_text_inputs(inputs, config, *, batched: bool = True) -> None:
    """Checks of a `TextInputs` against a text model's config (`BertConfig` or `DecoderConfig`: vocab_size,
    max_length, type_vocab_size); static shape checks, value checks also under jit.

    Raises ValueError for: not a `TextInputs` (e.g. an image array), a wrong rank, an empty sequence or one
    with no real token, a sequence longer than the position table, ids outside [0, vocab_size), token types
    outside the type table, mask values other than 0/1.
    """
    if not isinstance(inputs, TextInputs):
        raise ValueError(
            f"a text model takes a TextInputs batch (libra_jax.text.text_inputs(ids, attention_mask), or a tokenizer"
            f" from libra_jax.text.load_text_tokenizer); got {type(inputs).__name__} with shape {np.shape(inputs)}"
        )
    rank = 2 if batched else 1
    shape = tuple(inputs.ids.shape)
    if len(shape) != rank:
        raise ValueError(f"token ids must have shape {'(B, N)' if batched else '(N,)'}; got {shape}")
    for name in ("attention_mask", "token_type_ids"):
        if tuple(getattr(inputs, name).shape) != shape:
            raise ValueError(f"{name} has shape {tuple(getattr(inputs, name).shape)} but the ids have {shape}")
    n = shape[-1]
    if n == 0:
        raise ValueError("empty text: the sequence has no tokens (tokenize a non-empty string)")
    if n > config.max_length:
        raise ValueError(
            f"{n} tokens exceed the model's {config.max_length} positions; truncate the text"
            " (load_text_tokenizer(..., max_length=...)) or split it"
        )
    ids, mask, types = inputs.ids, inputs.attention_mask, inputs.token_type_ids
    runtime_check(
        ((ids < 0) | (ids >= config.vocab_size)).any(),
        f"token ids must lie in [0, {config.vocab_size}) (the model's vocabulary); was the text tokenized with"
        " another model's tokenizer?",
    )
    runtime_check(((mask != 0) & (mask != 1)).any(), "attention_mask must hold only 0 (padding) and 1 (token)")
    runtime_check((mask.sum(-1) == 0).any(), "a sequence has no real token (its attention_mask is all 0): empty text")
    n_types = max(config.type_vocab_size, 1)
    runtime_check(
        ((types < 0) | (types >= n_types)).any(),
        f"token_type_ids must lie in [0, {n_types}) for this model",
    )
