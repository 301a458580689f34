"""Word-level maps from token maps: which word each token belongs to, and merging the pieces' scores.

Words are the whitespace-separated words of the text (`text.split()`), the unit of ERASER rationales
and of Chefer's token-F1. A token belongs to the word that holds its first non-space character; a token
made only of spaces (a lone BPE "Ġ" or SentencePiece "▁") belongs to the word after it. This works from
the character offsets any `tokenizers` tokenizer reports, so WordPiece ("##" continuations) and
byte-level BPE ("Ġ" = leading space, offsets with or without the space) are handled alike; special
tokens ([CLS], [SEP], BOS, padding) belong to no word (index −1).

A word's score merges its pieces' scores: "max" (Chefer's `scores_per_word_from_scores_per_token`: the
max over a word's characters, i.e. over its wordpieces) or "sum" (keeps the total, so completeness
carries over to words).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

_WORD = re.compile(r"\S+")


def whitespace_words(text: str) -> list[str]:
    """The words of `text`: maximal runs of non-whitespace characters (`str.split()`)."""
    return text.split()


def token_words(text: str, offsets: Sequence[tuple[int, int]], special: Sequence[int] | None = None) -> np.ndarray:
    """Word index of every token of `text`: (N,) int32, −1 for special tokens.

    Args:
      text: the text the tokenizer encoded.
      offsets: (N,) (start, end) character spans of the tokens (`Encoding.offsets`).
      special: (N,) flags of the tokens the tokenizer added (`Encoding.special_tokens_mask`). Without
        it, empty spans (start == end) mark them; with it, an unflagged empty span (a lone "Ġ" after
        offset trimming) belongs to the word at or after its position.
    Returns:
      int32 (N,): index into `whitespace_words(text)`, or −1.
    """
    ends = np.array([m.end() for m in _WORD.finditer(text)], np.int64)
    flags = np.array([s >= e for s, e in offsets], bool) if special is None else np.asarray(special, bool)
    if flags.shape != (len(offsets),):
        raise ValueError(
            f"special has shape {flags.shape} but there are {len(offsets)} offsets; pass one flag per token"
        )
    out = np.full(len(offsets), -1, np.int32)
    for t, (start, end) in enumerate(offsets):
        if flags[t] or len(ends) == 0:
            continue
        if end > len(text):
            raise ValueError(f"token {t} spans characters {start}..{end} beyond the text ({len(text)} characters)")
        chars = text[start:end]
        first = start + (len(chars) - len(chars.lstrip()))  # end of the span if it is all spaces
        # The first word that ends after `first`: the word holding it, or the next word after spaces.
        out[t] = min(int(np.searchsorted(ends, first, side="right")), len(ends) - 1)
    return out


def encoding_words(text: str, encoding) -> tuple[list[str], np.ndarray]:
    """(words, token→word (N,) int32) of a `tokenizers` Encoding whose first sequence is `text`.

    Added tokens and, for a text pair, the second sequence's tokens belong to no word (−1).
    """
    other = [bool(m) or s != 0 for m, s in zip(encoding.special_tokens_mask, encoding.sequence_ids, strict=True)]
    return whitespace_words(text), token_words(text, encoding.offsets, other)


def covered_words(word_index, num_words: int) -> jax.Array:
    """Which words have at least one token: word_index (..., N) int (−1 = none) → (..., W) bool.

    Words cut off by truncation are not covered; pass this as `valid` to the word-level metrics, as
    Chefer's benchmark only ranks the words the model saw.
    """
    index = jnp.asarray(word_index)
    return (index[..., :, None] == jnp.arange(num_words)).any(-2)


def word_to_token_mask(word_mask, word_index) -> jax.Array:
    """A word-level mask (e.g. a rationale) on the tokens: word_mask (..., W) bool, word_index (..., N) → (..., N).

    A token is in the mask when its word is; special tokens (index −1) never are.
    """
    word_mask, index = jnp.asarray(word_mask, bool), jnp.asarray(word_index)
    picked = jnp.take_along_axis(word_mask, jnp.maximum(index, 0), axis=-1)
    return picked & (index >= 0)


def merge_words(
    token_scores: jax.Array,
    word_index: jax.Array,
    num_words: int,
    reduce: Literal["max", "sum"] = "max",
    fill: float = 0.0,
) -> jax.Array:
    """Merge token scores into word scores.

    Args:
      token_scores: (..., N) float token map.
      word_index: (..., N) int word of each token, −1 for none (see `token_words`); padded with −1.
      num_words: W, words per row (static).
      reduce: "max" over a word's pieces (Chefer) or "sum".
      fill: the score of a word no token belongs to (e.g. cut off by truncation).
    Returns:
      (..., W) word scores.
    """
    if reduce not in ("max", "sum"):
        raise ValueError(f"unknown reduce {reduce!r}; expected 'max' or 'sum'")
    scores, index = jnp.asarray(token_scores), jnp.asarray(word_index)
    if scores.shape != index.shape:
        raise ValueError(f"token_scores {scores.shape} and word_index {index.shape} must have the same shape")
    segment = jax.ops.segment_max if reduce == "max" else jax.ops.segment_sum

    def one(s, i):
        # Tokens of no word go to an extra segment W, dropped after.
        return segment(s, jnp.where(i < 0, num_words, i), num_segments=num_words + 1)[:num_words]

    merged = one
    for _ in range(scores.ndim - 1):
        merged = jax.vmap(merged)
    return jnp.where(covered_words(index, num_words), merged(scores, index), fill)
