"""Text models' inputs, loading and tokenization; decoder targets and `explain_generation`; word-level maps from
token maps and rendering them."""

from libra_jax.models.text_inputs import TextInputs, check_text_inputs, text_inputs
from libra_jax.text.decoder_loading import load_decoder
from libra_jax.text.explain_generation import GenerationExplanation, explain_generation
from libra_jax.text.loading import load_text_classifier
from libra_jax.text.next_token import (
    continuation_target,
    continuation_y,
    contrast_target,
    next_token_target,
    target_at,
)
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
    "GenerationExplanation",
    "TextInputs",
    "TextTokenizer",
    "check_text_inputs",
    "continuation_target",
    "continuation_y",
    "contrast_target",
    "covered_words",
    "encoding_words",
    "explain_generation",
    "load_decoder",
    "load_text_classifier",
    "load_text_tokenizer",
    "merge_words",
    "next_token_target",
    "render_html",
    "render_terminal",
    "target_at",
    "text_inputs",
    "token_words",
    "whitespace_words",
    "word_to_token_mask",
]
