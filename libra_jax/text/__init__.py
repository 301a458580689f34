"""Text inputs, loading and tokenization for BERT-family classifiers (SPEC §7)."""

from libra_jax.text.inputs import TextInputs, check_text_inputs, text_inputs
from libra_jax.text.loading import load_text_classifier
from libra_jax.text.tokenizer import TextTokenizer, load_text_tokenizer

__all__ = [
    "TextInputs",
    "TextTokenizer",
    "check_text_inputs",
    "load_text_classifier",
    "load_text_tokenizer",
    "text_inputs",
]
