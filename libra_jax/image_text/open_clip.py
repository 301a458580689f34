"""open_clip checkpoints: `open_clip_config.json` → `Architecture`, state dict → `ImageTextModel` keys.

Covers the OpenAI-style `CLIP` (vision `visual.conv1/ln_pre/transformer/ln_post/proj`, text
`token_embedding/positional_embedding/transformer/ln_final/text_projection` at the top level) and
`CustomTextCLIP` (text under `text.*`, optionally a timm vision trunk `visual.trunk.*`, e.g. SigLIP).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from libra_jax.image_text.architecture import OPENAI_MEAN, OPENAI_STD, Architecture, check_keys
from libra_jax.image_text.keys import Table, as_tokens, blocks, rename, transpose
from libra_jax.models.config import DataConfig, ViTConfig, pair
from libra_jax.models.text import TextConfig
from libra_jax.weights import registry

CONFIG_FILE = "open_clip_config.json"
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")

_VISION_KEYS = {"image_size", "layers", "width", "head_width", "patch_size", "mlp_ratio", "ls_init_value"}
_TIMM_KEYS = {"image_size", "timm_model_name", "timm_model_pretrained", "timm_pool", "timm_proj", "timm_proj_bias"}
_TEXT_KEYS = {
    "context_length",
    "vocab_size",
    "width",
    "heads",
    "layers",
    "mlp_ratio",
    "no_causal_mask",
    "pool_type",
    "proj_bias",
    "norm_kwargs",
    "hf_tokenizer_name",
    "tokenizer_kwargs",
}
_MODEL_KEYS = {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg", "custom_text", "init_logit_bias"}
_TEXT_POOLS = {"argmax": "eot", "last": "last"}


def model_config(cfg: Mapping) -> tuple[dict, dict]:
    """(model cfg, preprocess cfg) of an open_clip config file (HF repos nest them; the bare form is a model cfg)."""
    if "model_cfg" in cfg:
        return dict(cfg["model_cfg"]), dict(cfg.get("preprocess_cfg") or {})
    return dict(cfg), {}


def _vision(vcfg: Mapping, act: str, vision: ViTConfig | None) -> tuple[ViTConfig, bool]:
    """(image tower, image_proj) of an open_clip vision_cfg; `vision` overrides a timm trunk's architecture."""
    size = pair(vcfg.get("image_size", 224))
    if "timm_model_name" not in vcfg:
        if vcfg.get("pool_type", "tok") != "tok":
            raise ValueError(f"open_clip vision pool_type {vcfg['pool_type']!r} is not supported; expected 'tok'")
        check_keys({k: v for k, v in vcfg.items() if k != "pool_type"}, _VISION_KEYS, "open_clip vision_cfg")
        width = vcfg.get("width", 768)
        config = ViTConfig(
            img_size=size,
            patch_size=vcfg.get("patch_size", 16),
            embed_dim=width,
            depth=vcfg.get("layers", 12),
            num_heads=width // vcfg.get("head_width", 64),
            mlp_ratio=vcfg.get("mlp_ratio", 4.0),
            init_values=vcfg.get("ls_init_value"),
            pre_norm=True,
            patch_bias=False,
            num_classes=0,
            act=act,
            norm_eps=1e-5,
        )
        return config, True
    check_keys(vcfg, _TIMM_KEYS, "open_clip vision_cfg (timm trunk)")
    proj = vcfg.get("timm_proj", "linear")
    if proj not in ("none", "linear") or vcfg.get("timm_proj_bias"):
        raise ValueError(f"open_clip timm_proj={proj!r} (bias {vcfg.get('timm_proj_bias')}) is not supported")
    if vision is None:
        name = vcfg["timm_model_name"]
        try:
            spec = registry.resolve(name, img_size=size, num_classes=0, global_pool=vcfg.get("timm_pool", "avg"))
        except registry.UnknownModelError as e:
            raise ValueError(f"timm trunk {name!r}: {e}; pass vision=ViTConfig(...) for a custom trunk") from e
        vision = spec.config
    return vision, proj == "linear"


def _text(tcfg: Mapping, act: str, embed_dim: int) -> TextConfig:
    check_keys(tcfg, _TEXT_KEYS, "open_clip text_cfg")
    pool = tcfg.get("pool_type", "argmax")
    if pool not in _TEXT_POOLS:
        raise ValueError(f"open_clip text pool_type {pool!r} is not supported; expected one of {sorted(_TEXT_POOLS)}")
    width = tcfg.get("width", 512)
    return TextConfig(
        vocab_size=tcfg.get("vocab_size", 49408),
        context_length=tcfg.get("context_length", 77),
        width=width,
        heads=tcfg.get("heads", 8),
        layers=tcfg.get("layers", 12),
        mlp_hidden=int(width * tcfg.get("mlp_ratio", 4.0)),
        act=act,
        norm_eps=(tcfg.get("norm_kwargs") or {}).get("eps", 1e-5),
        embed_dim=embed_dim,
        causal=not tcfg.get("no_causal_mask", False),
        pool=_TEXT_POOLS[pool],
        proj_bias=bool(tcfg.get("proj_bias", False)),
    )


def architecture(cfg: Mapping, *, quick_gelu: bool | None = None, vision: ViTConfig | None = None) -> Architecture:
    """The model an open_clip config describes.

    Args:
      cfg: the parsed `open_clip_config.json` (or a bare open_clip model config).
      quick_gelu: override the config's `quick_gelu` (open_clip's '-quickgelu' model names).
      vision: the image tower of a timm trunk that the registry does not know.
    """
    mcfg, pcfg = model_config(cfg)
    check_keys(
        mcfg, {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg", "custom_text", "init_logit_bias"}, "open_clip"
    )
    use_quick = mcfg.get("quick_gelu", False) if quick_gelu is None else quick_gelu
    act = "quick_gelu" if use_quick else "gelu"
    vcfg = dict(mcfg["vision_cfg"])
    config, image_proj = _vision(vcfg, act, vision)
    data = DataConfig(
        mean=pcfg.get("mean", OPENAI_MEAN),
        std=pcfg.get("std", OPENAI_STD),
        input_size=config.img_size,
        crop_pct=1.0,
        interpolation=pcfg.get("interpolation", "bicubic"),
    )
    text = _text(dict(mcfg["text_cfg"]), act, mcfg["embed_dim"])
    logit_bias = mcfg.get("init_logit_bias") is not None
    return Architecture(config, text, image_proj, logit_bias, data, pair(vcfg.get("image_size", 224)))


def _text_table(prefix: str) -> Table:
    p = re.escape(prefix)
    return (
        (rf"{p}token_embedding\.weight", "text.token_embedding.embedding", None),
        (rf"{p}positional_embedding", "text.positional_embedding", None),
        (rf"{p}ln_final\.(weight|bias)", r"text.ln_final.\1", None),
        (rf"{p}text_projection", "text.text_projection.weight", transpose),  # a matrix, applied as x @ P
        (rf"{p}text_projection\.(weight|bias)", r"text.text_projection.\1", None),  # an nn.Linear
        *blocks(f"{prefix}transformer.resblocks", "text.blocks"),
    )


OPENAI_VISUAL: Table = (
    (r"visual\.class_embedding", "cls_token", as_tokens),
    (r"visual\.positional_embedding", "pos_embed", as_tokens),
    (r"visual\.conv1\.weight", "patch_embed.proj.weight", None),
    (r"visual\.ln_pre\.(weight|bias)", r"norm_pre.\1", None),
    (r"visual\.ln_post\.(weight|bias)", r"norm.\1", None),
    (r"visual\.proj", "proj.weight", transpose),
    *blocks("visual.transformer.resblocks", "blocks"),
)
TIMM_VISUAL: Table = (
    (r"visual\.trunk\.(.*)", r"\1", None),
    (r"visual\.head\.proj\.weight", "proj.weight", None),
)
SCALARS: Table = ((r"logit_scale", "logit_scale", None), (r"logit_bias", "logit_bias", None))


def convert(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """open_clip state dict → `ImageTextModel` keys (torch layout); unknown keys pass through unchanged."""
    custom_text = any(k.startswith("text.") for k in state)
    visual = TIMM_VISUAL if any(k.startswith("visual.trunk.") for k in state) else OPENAI_VISUAL
    return rename(state, (*visual, *_text_table("text." if custom_text else ""), *SCALARS))
