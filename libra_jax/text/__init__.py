"""Text models' inputs, loading and tokenization; word-level maps from token maps and rendering them."""

from libra_jax.models.text_inputs import TextInputs, check_text_inputs, text_inputs
from libra_jax.text.loading import load_text_classifier
from libra_jax.text.render import render_html, render_terminal
from libra_jax.text.tokenizer import TextTokenizer, load_text_tokenizer
from libra_jax.text.words import (
    covered_words,
    encoding_words,
    merge_words,
    token_words,
    whitespace_words,
    word_to_token_mask,
)

__all__ = [
    "TextInputs",
    "TextTokenizer",
    "check_text_inputs",
    "covered_words",
    "encoding_words",
    "load_text_classifier",
    "load_text_tokenizer",
    "merge_words",
    "render_html",
    "render_terminal",
    "text_inputs",
    "token_words",
    "whitespace_words",
    "word_to_token_mask",
]
