"""Text helpers: word-level maps from token maps and rendering them (terminal, HTML)."""

from libra_jax.text.render import render_html, render_terminal
from libra_jax.text.words import (
    covered_words,
    encoding_words,
    merge_words,
    token_words,
    whitespace_words,
    word_to_token_mask,
)

__all__ = [
    "covered_words",
    "encoding_words",
    "merge_words",
    "render_html",
    "render_terminal",
    "token_words",
    "whitespace_words",
    "word_to_token_mask",
]
