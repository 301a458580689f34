"""Hugging Face `CLIPModel` / `SiglipModel` checkpoints: `config.json` → `Architecture`, keys → ours.

CLIP: `vision_model.*` (class token, pre-norm 'pre_layrnorm', bias-free patch conv), `visual_projection`,
`text_model.*` (causal), `text_projection` (no bias), `logit_scale`. SigLIP: no class token, patch-conv
bias, MAP head `vision_model.head.*` (an `nn.MultiheadAttention`), no image projection, bidirectional
text pooled at the last token with a biased `text_model.head`, `logit_scale` and `logit_bias`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from libra_jax.image_text.architecture import OPENAI_MEAN, OPENAI_STD, Architecture
from libra_jax.image_text.keys import Table, as_tokens, blocks, fuse_qkv, rename, scalar, split_in_proj
from libra_jax.models.config import DataConfig, ViTConfig, pair
from libra_jax.models.text import TextConfig
from libra_jax.weights import hub

CONFIG_FILE = "config.json"
WEIGHT_FILES = hub.WEIGHT_FILES  # the same files as a timm repo
ACTIVATIONS = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh"}
MODEL_TYPES = ("clip", "siglip")


def _act(name: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported hidden_act {name!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def architecture(cfg: Mapping) -> Architecture:
    """The model an HF `CLIPModel` / `SiglipModel` config.json describes."""
    kind = cfg.get("model_type")
    if kind not in MODEL_TYPES:
        raise ValueError(f"HF model_type {kind!r} is not supported; expected one of {MODEL_TYPES}")
    siglip = kind == "siglip"
    v, t = dict(cfg.get("vision_config") or {}), dict(cfg.get("text_config") or {})
    width = v.get("hidden_size", 768)
    size = pair(v.get("image_size", 224))
    vision = ViTConfig(
        img_size=size,
        patch_size=v.get("patch_size", 32 if not siglip else 16),
        embed_dim=width,
        depth=v.get("num_hidden_layers", 12),
        num_heads=v.get("num_attention_heads", 12),
        mlp_ratio=v.get("intermediate_size", 3072) / width,
        class_token=not siglip,
        global_pool="map" if siglip else "token",
        pre_norm=not siglip,
        patch_bias=siglip,
        num_classes=0,
        act=_act(v.get("hidden_act", "gelu_pytorch_tanh" if siglip else "quick_gelu")),
        norm_eps=v.get("layer_norm_eps", 1e-6 if siglip else 1e-5),
    )
    if int(vision.embed_dim * vision.mlp_ratio) != v.get("intermediate_size", 3072):
        raise ValueError(f"vision intermediate_size {v.get('intermediate_size')} is not a multiple of {width}")
    if siglip and not v.get("vision_use_head", True):
        raise ValueError("SigLIP without the MAP head (vision_use_head=false) is not supported")
    eos = t.get("eos_token_id", 2)
    embed_dim = cfg.get("projection_dim", t.get("projection_size", t.get("hidden_size", 512)))
    text = TextConfig(
        vocab_size=t.get("vocab_size", 32000 if siglip else 49408),
        context_length=t.get("max_position_embeddings", 64 if siglip else 77),
        width=t.get("hidden_size", 768 if siglip else 512),
        heads=t.get("num_attention_heads", 12 if siglip else 8),
        layers=t.get("num_hidden_layers", 12),
        mlp_hidden=t.get("intermediate_size", 3072 if siglip else 2048),
        act=_act(t.get("hidden_act", "gelu_pytorch_tanh" if siglip else "quick_gelu")),
        norm_eps=t.get("layer_norm_eps", 1e-6 if siglip else 1e-5),
        embed_dim=embed_dim,
        causal=not siglip,
        # HF CLIP: eos_token_id 2 marks legacy configs, pooled at argmax(ids) like OpenAI CLIP.
        pool="last" if siglip else ("eot" if eos == 2 else "eos_id"),
        eos_token_id=None if siglip or eos == 2 else eos,
        proj_bias=siglip,
    )
    mean, std = ((0.5,) * 3, (0.5,) * 3) if siglip else (OPENAI_MEAN, OPENAI_STD)
    data = DataConfig(mean=mean, std=std, input_size=size, crop_pct=1.0, interpolation="bicubic")
    return Architecture(vision, text, not siglip, siglip, data, size)


_VISION: Table = (
    (r"vision_model\.embeddings\.class_embedding", "cls_token", as_tokens),
    (r"vision_model\.embeddings\.position_embedding\.weight", "pos_embed", as_tokens),
    (r"vision_model\.embeddings\.patch_embedding\.(weight|bias)", r"patch_embed.proj.\1", None),
    (r"vision_model\.pre_layrnorm\.(weight|bias)", r"norm_pre.\1", None),
    (r"vision_model\.post_layernorm\.(weight|bias)", r"norm.\1", None),
    (r"vision_model\.head\.probe", "attn_pool.latent", None),
    (r"vision_model\.head\.attention\.out_proj\.(weight|bias)", r"attn_pool.proj.\1", None),
    (r"vision_model\.head\.layernorm\.(weight|bias)", r"attn_pool.norm.\1", None),
    (r"vision_model\.head\.mlp\.(fc[12])\.(weight|bias)", r"attn_pool.mlp.\1.\2", None),
    (r"visual_projection\.weight", "proj.weight", None),
    *blocks("vision_model.encoder.layers", "blocks"),
)
_TEXT: Table = (
    (r"text_model\.embeddings\.token_embedding\.weight", "text.token_embedding.embedding", None),
    (r"text_model\.embeddings\.position_embedding\.weight", "text.positional_embedding", None),
    (r"text_model\.final_layer_norm\.(weight|bias)", r"text.ln_final.\1", None),
    (r"text_projection\.weight", "text.text_projection.weight", None),
    (r"text_model\.head\.(weight|bias)", r"text.text_projection.\1", None),
    *blocks("text_model.encoder.layers", "text.blocks"),
)
_SCALARS: Table = ((r"logit_scale", "logit_scale", scalar), (r"logit_bias", "logit_bias", scalar))
_BUFFERS = ("vision_model.embeddings.position_ids", "text_model.embeddings.position_ids")


def convert(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """HF CLIPModel / SiglipModel state dict → `ImageTextModel` keys (torch layout); unknown keys pass through."""
    state = {k: v for k, v in state.items() if k not in _BUFFERS}  # non-learned index buffers of older files
    state = split_in_proj(fuse_qkv(state), "vision_model.head.attention", "attn_pool")
    return rename(state, (*_VISION, *_TEXT, *_SCALARS))
