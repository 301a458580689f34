"""Image–text (CLIP / SigLIP) models: loaders, tokenizers and text-prompted targets.

model, params = libra_jax.load_image_text("hf-hub:timm/vit_base_patch16_clip_224.openai")
tokenizer = libra_jax.image_text.load_tokenizer("hf-hub:timm/vit_base_patch16_clip_224.openai")
text = text_embeddings(model, params, tokenizer(["a photo of a zebra"]))       # (1, E)
fn = libra_jax.attribution(model, "fullgrad_plus", "libra", target=similarity_target("libra"))
maps = fn(params, x, text[None])                                                  # (B, gh, gw)
"""

from libra_jax.image_text.loading import load_image_text
from libra_jax.image_text.targets import SimilarityTarget, model_target, similarity_target, text_embeddings
from libra_jax.image_text.tokenizer import Tokenizer, load_tokenizer

__all__ = [
    "SimilarityTarget",
    "Tokenizer",
    "load_image_text",
    "load_tokenizer",
    "model_target",
    "similarity_target",
    "text_embeddings",
]
