"""Dev script: generate `libra_jax/models/timm_registry.json` from the installed timm.

    python convert/gen_registry.py [-o libra_jax/models/timm_registry.json]

For every registered timm architecture of the supported families (ViT-like: `VisionTransformer`;
MLP-Mixer / gMixer: `MlpMixer`) it captures the keyword arguments the architecture's entry point
passes to timm's model builder, constructs that model on the meta device (no memory, no weights)
and reads the built modules back into the family's config (`ViTConfig` / `MixerConfig`). Each
entry is checked before it is written: every module must be one our Flax model implements, and
every timm parameter must map onto a Flax parameter of the same shape. Architectures that fail a
check are skipped with the reason printed.

Per architecture the JSON holds:
  family     'vit' or 'mixer': which config class / Flax model the entry builds;
  config     all config fields of the architecture as its entry point builds it, before any
             pretrained-cfg defaults (tuples as lists);
  explicit   which of num_classes / global_pool / in_chans / img_size the entry point sets itself
             (timm lets a pretrained cfg fill in only the ones it does not);
  resample   (interpolation, antialias) timm's checkpoint filter uses for pos/patch embed resizing;
  default_tag, tags   each pretrained tag's preprocessing and head (a timm `pretrained_cfg`
             subset); weights live in the HF repo `timm/<arch>.<tag>` unless the tag names
             another `hf_hub_id`.

Needs torch and timm; the runtime reading the JSON needs neither.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import timm
import torch
from timm import layers as tl
from timm.models import _builder, deit, get_pretrained_cfg, mlp_mixer, vision_transformer

from libra_jax.checkpoint import flatten, timm_key_to_flax
from libra_jax.models import build_model
from libra_jax.models.config import DataConfig, MixerConfig, ModelConfig, ViTConfig

VIT_NAMES = re.compile(
    r"^(deit3?_"  # DeiT, DeiT-3 (LayerScale), DeiT distilled
    r"|flexivit_"
    r"|vit_.*_(clip|siglip)_"  # CLIP towers (incl. quickgelu), SigLIP MAP / GAP
    r"|vit_.*_reg\d"  # register tokens (incl. DINOv2-reg)
    r"|vit_.*_dinov2$"
    r"|vit_[a-z]+_patch\d+_\d+$)"  # plain ViT sizes
)
MIXER_NAMES = re.compile(r"^g?mixer_")  # MLP-Mixer, gMixer (not ResMLP / gMLP: other blocks)

# Other modules (eva, beit, ...) build different classes even for vit_* names.
BUILDER_MODULES = (vision_transformer, deit, mlp_mixer)
MODULES = tuple(m.__name__.rsplit(".", 1)[-1] for m in BUILDER_MODULES)
PRETRAINED_KEYS = ("input_size", "fixed_input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")
DERIVABLE = ("num_classes", "global_pool", "in_chans", "img_size")

# Leaf modules both families are built from (timm layers and the torch modules they wrap).
COMMON_MODULES = (
    tl.PatchEmbed,
    tl.Mlp,
    tl.GluMlp,
    torch.nn.Conv2d,
    torch.nn.Linear,
    torch.nn.LayerNorm,
    torch.nn.Identity,
    torch.nn.Dropout,
    torch.nn.Sequential,
    torch.nn.GELU,
    torch.nn.SiLU,
    tl.GELU,
)
SUPPORTED_VIT_MODULES = (
    vision_transformer.VisionTransformer,
    vision_transformer.Block,
    tl.Attention,
    tl.SwiGLU,
    tl.LayerScale,
    tl.AttentionPoolLatent,
    tl.GELUTanh,
    tl.QuickGELU,
    *COMMON_MODULES,
)
SUPPORTED_MIXER_MODULES = (mlp_mixer.MlpMixer, mlp_mixer.MixerBlock, *COMMON_MODULES)


class _Captured(Exception):
    def __init__(self, model_cls, model_kwargs: dict, filter_fn):
        super().__init__()
        self.model_cls, self.model_kwargs, self.filter_fn = model_cls, model_kwargs, filter_fn


def capture_build_args(arch: str) -> _Captured:
    """Call timm's entry point for `arch` and intercept what it hands to `build_model_with_cfg`."""
    builder_params = set(inspect.signature(_builder.build_model_with_cfg).parameters)

    def fake_build(model_cls, variant, pretrained, **kwargs):
        model_kwargs = {k: v for k, v in kwargs.items() if k not in builder_params}
        raise _Captured(model_cls, model_kwargs, kwargs.get("pretrained_filter_fn"))

    saved = [m.build_model_with_cfg for m in BUILDER_MODULES]
    for m in BUILDER_MODULES:
        m.build_model_with_cfg = fake_build
    try:
        timm.models.model_entrypoint(arch)(pretrained=False)
    except _Captured as c:
        return c
    finally:
        for m, builder in zip(BUILDER_MODULES, saved, strict=True):
            m.build_model_with_cfg = builder
    raise ValueError(f"{arch} did not call build_model_with_cfg")


def act_name(act: torch.nn.Module) -> str:
    """Our activation name for a timm MLP activation module."""
    if isinstance(act, tl.QuickGELU):
        return "quick_gelu"
    if isinstance(act, tl.GELUTanh) or (isinstance(act, torch.nn.GELU) and act.approximate == "tanh"):
        return "gelu_tanh"
    if isinstance(act, (tl.GELU, torch.nn.GELU)):
        return "gelu"
    if isinstance(act, torch.nn.SiLU):
        return "silu"
    raise ValueError(f"unsupported activation {type(act).__name__}")


def check_norms(model: torch.nn.Module) -> None:
    """Raise ValueError for a LayerNorm without affine weight and bias (ours always have both)."""
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.LayerNorm) and (not m.elementwise_affine or m.bias is None):
            raise ValueError(f"{name} is a LayerNorm without affine weight and bias")


def check_vit_modules(model: torch.nn.Module) -> None:
    """Raise ValueError naming the first module our Flax ViT cannot reproduce."""
    check_norms(model)
    for name, m in model.named_modules():
        if type(m) not in SUPPORTED_VIT_MODULES and not (
            type(m).__name__ == "VisionTransformerDistilled" or isinstance(m, torch.nn.LayerNorm)
        ):
            raise ValueError(f"module {name or '<root>'} is a {type(m).__name__}")
    if getattr(model, "pool_include_prefix", False):
        raise ValueError("pool_include_prefix=True")
    if not isinstance(model.patch_embed.norm, torch.nn.Identity) or not model.patch_embed.flatten:
        raise ValueError("patch_embed has a norm or keeps the spatial layout")
    pool = model.attn_pool
    if pool is not None and (pool.latent_len != 1 or pool.pos_embed is not None or pool.pool != "token"):
        raise ValueError("attention pool with several latents / pos embed / non-token pooling")


def check_mixer_modules(model: torch.nn.Module) -> None:
    """Raise ValueError naming the first module our Flax MlpMixer cannot reproduce."""
    check_norms(model)
    for name, m in model.named_modules():
        if type(m) not in SUPPORTED_MIXER_MODULES:
            raise ValueError(f"module {name or '<root>'} is a {type(m).__name__}")
        if isinstance(m, tl.GluMlp) and not m.gate_last:
            raise ValueError(f"{name} is a GluMlp with the gate in the first half (gate_last=False)")
    if not isinstance(model.stem.norm, torch.nn.Identity) or not model.stem.flatten:
        raise ValueError("stem has a norm or keeps the spatial layout")


def vit_config(model: torch.nn.Module, kwargs: dict) -> ViTConfig:
    """Read the built timm ViT back into a ViTConfig."""
    b0 = model.blocks[0]
    not_id = lambda m: not isinstance(m, torch.nn.Identity)  # noqa: E731
    mlp_ratio = float(kwargs.get("mlp_ratio", 4.0))
    mlp_layer, fc1 = {tl.Mlp: ("mlp", "fc1"), tl.GluMlp: ("glu", "fc1"), tl.SwiGLU: ("swiglu", "fc1_g")}[type(b0.mlp)]
    if mlp_layer == "glu" and b0.mlp.gate_last:
        raise ValueError("GluMlp with the gate in the second half (gate_last=True)")
    hidden = getattr(b0.mlp, fc1).out_features
    if int(model.embed_dim * mlp_ratio) != hidden:
        raise ValueError(f"mlp hidden {hidden} != int(embed_dim * {mlp_ratio})")
    if not_id(b0.ls1) and kwargs.get("init_values") is None:
        raise ValueError("LayerScale without init_values")
    return ViTConfig(
        img_size=tuple(model.patch_embed.img_size),
        patch_size=tuple(model.patch_embed.patch_size),
        in_chans=model.patch_embed.proj.in_channels,
        num_classes=model.num_classes,
        embed_dim=model.embed_dim,
        depth=len(model.blocks),
        num_heads=b0.attn.num_heads,
        mlp_ratio=mlp_ratio,
        qkv_bias=b0.attn.qkv.bias is not None,
        qk_norm=not_id(b0.attn.q_norm),
        proj_bias=b0.attn.proj.bias is not None,
        scale_attn_norm=not_id(b0.attn.norm),
        scale_mlp_norm=not_id(b0.mlp.norm),
        init_values=kwargs.get("init_values") if not_id(b0.ls1) else None,
        class_token=model.cls_token is not None,
        reg_tokens=model.num_reg_tokens,
        dist_token=getattr(model, "dist_token", None) is not None,
        no_embed_class=model.no_embed_class,
        pos_embed=model.pos_embed is not None,
        pre_norm=not_id(model.norm_pre),
        final_norm=bool(kwargs.get("final_norm", True)),
        fc_norm=kwargs.get("fc_norm"),  # None = timm's automatic choice from global_pool
        global_pool=model.global_pool,
        act=act_name(b0.mlp.act),
        mlp_layer=mlp_layer,
        norm_eps=float(b0.norm1.eps),
    )


def mixer_config(model: torch.nn.Module, kwargs: dict) -> MixerConfig:
    """Read the built timm MlpMixer back into a MixerConfig."""
    b0 = model.blocks[0]
    mlp_layer = {tl.Mlp: "mlp", tl.GluMlp: "glu"}[type(b0.mlp_tokens)]
    default_ratio = inspect.signature(type(model)).parameters["mlp_ratio"].default
    config = MixerConfig(
        img_size=tuple(model.stem.img_size),
        patch_size=tuple(model.stem.patch_size),
        in_chans=model.stem.proj.in_channels,
        num_classes=model.num_classes,
        num_blocks=len(model.blocks),
        embed_dim=model.embed_dim,
        mlp_ratio=kwargs.get("mlp_ratio", default_ratio),
        mlp_layer=mlp_layer,
        act=act_name(b0.mlp_tokens.act),
        norm_eps=float(b0.norm1.eps),
        global_pool=model.global_pool,
    )
    hidden = (b0.mlp_tokens.fc1.out_features, b0.mlp_channels.fc1.out_features)
    if config.mlp_hidden != hidden:
        raise ValueError(f"mlp hidden widths {hidden} != int(embed_dim * {config.mlp_ratio})")
    return config


@dataclasses.dataclass(frozen=True)
class Family:
    """How to recognise, check and read one timm model family."""

    names: re.Pattern
    check: Callable[[torch.nn.Module], None]  # raises ValueError for what our Flax model lacks
    read: Callable[[torch.nn.Module, dict], ModelConfig]  # built timm model + its kwargs → config
    shallow: dict  # kwargs (= config fields) of a 2-block build, for the parameter-shape check


FAMILIES = {
    "vit": Family(VIT_NAMES, check_vit_modules, vit_config, {"depth": 2}),
    "mixer": Family(MIXER_NAMES, check_mixer_modules, mixer_config, {"num_blocks": 2}),
}


def family_of(arch: str) -> str | None:
    return next((name for name, fam in FAMILIES.items() if fam.names.match(arch)), None)


def check_shapes(model_cls, kwargs: dict, config: ModelConfig, shallow: dict) -> None:
    """Every timm parameter of a 2-block build maps onto a Flax parameter of the same shape."""
    with torch.device("meta"):
        small = model_cls(**{**kwargs, **shallow})
    cfg = config.replace(**shallow)
    model = build_model(cfg, DataConfig())
    image = jax.ShapeDtypeStruct((*cfg.img_size, cfg.in_chans), np.float32)
    params = jax.eval_shape(model.init, jax.random.key(0), image)["params"]
    want = {k: tuple(v.shape) for k, v in flatten(params).items()}
    got = {}
    for key, t in small.state_dict().items():
        path, fn = timm_key_to_flax(key, t.ndim)
        got[path] = fn(np.broadcast_to(np.float32(0), tuple(t.shape))).shape
    if got != want:
        diff = sorted(set(got.items()) ^ set(want.items()))
        raise ValueError(f"parameter layout differs: {diff[:6]}")


def pretrained_entry(cfg: dict) -> dict:
    entry = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items() if k in PRETRAINED_KEYS}
    entry["num_classes"] = cfg.get("num_classes")
    if cfg.get("global_pool") is not None:
        entry["global_pool"] = cfg["global_pool"]
    return entry


def config_json(config: ModelConfig) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def registry_entry(arch: str) -> dict:
    family = family_of(arch)
    fam = FAMILIES[family]
    captured = capture_build_args(arch)
    with torch.device("meta"):
        model = captured.model_cls(**captured.model_kwargs)
    fam.check(model)
    config = fam.read(model, captured.model_kwargs)
    check_shapes(captured.model_cls, captured.model_kwargs, config, fam.shallow)
    filt = captured.filter_fn
    filt_kw = filt.keywords if isinstance(filt, functools.partial) else {}
    tags = {}
    for name in timm.list_pretrained(f"{arch}.*"):
        cfg = get_pretrained_cfg(name).to_dict()
        hub = cfg.get("hf_hub_id") or ""
        if not hub.startswith("timm/") or cfg.get("hf_hub_filename"):
            raise ValueError(f"{name}: weights are not a timm HF repo ({hub})")
        tags[name.partition(".")[2]] = pretrained_entry(cfg)
        if hub != f"timm/{name}":  # e.g. quickgelu tags share the plain CLIP tower's repo
            tags[name.partition(".")[2]]["hf_hub_id"] = hub
    default = get_pretrained_cfg(arch)
    default_tag = default.tag if default is not None and tags else None
    return {
        "family": family,
        "config": config_json(config),
        "explicit": [k for k in DERIVABLE if k in captured.model_kwargs],
        "resample": [filt_kw.get("interpolation", "bicubic"), filt_kw.get("antialias", True)],
        "default_tag": default_tag,
        "tags": tags,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    out_default = Path(__file__).resolve().parents[1] / "libra_jax" / "models" / "timm_registry.json"
    parser.add_argument("-o", "--output", type=Path, default=out_default)
    args = parser.parse_args(argv)

    models, skipped = {}, {}
    for arch in sorted(a for a in timm.list_models(module=MODULES) if family_of(a)):
        try:
            models[arch] = registry_entry(arch)
        except ValueError as e:
            skipped[arch] = str(e)
    for arch, why in skipped.items():
        print(f"skipped {arch}: {why}", file=sys.stderr)
    # One architecture per line: small, and diffs stay readable when timm changes.
    lines = [f"  {json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in models.items()]
    head = ["{", f' "timm_version": {json.dumps(timm.__version__)},', ' "models": {']
    text = "\n".join([*head, ",\n".join(lines), " }", "}", ""])
    args.output.write_text(text)
    print(f"wrote {len(models)} architectures ({len(skipped)} skipped) to {args.output}")


if __name__ == "__main__":
    main()
