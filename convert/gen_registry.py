"""Dev script: generate `libra_jax/weights/timm_registry.json` from the installed timm.

    python convert/gen_registry.py [-o libra_jax/weights/timm_registry.json]

For every registered timm architecture of the supported families (ViT-like: `VisionTransformer`;
BEiT / BEiTv2: `Beit`; EVA / EVA-02: `Eva`; MLP-Mixer / gMixer: `MlpMixer`) it captures the keyword
arguments the architecture's entry point passes to timm's model builder, constructs that model on the
meta device (no memory, no weights) and reads the built modules back into the family's config
(`ViTConfig` / `BeitConfig` / `EvaConfig` / `MixerConfig`). Each
entry is checked before it is written: every module must be one our Flax model implements, and
every timm parameter must map onto a Flax parameter of the same shape. Architectures that fail a
check are skipped with the reason printed.

Per architecture the JSON holds:
  family     'vit', 'beit', 'eva' or 'mixer': which config class / Flax model the entry builds;
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
from timm.layers import pos_embed_sincos
from timm.models import _builder, beit, deit, eva, get_pretrained_cfg, mlp_mixer, vision_transformer

from libra_jax.models import build_model
from libra_jax.models.config import BeitConfig, DataConfig, EvaConfig, MixerConfig, ModelConfig, ViTConfig
from libra_jax.weights.keymap import flatten, timm_key_to_flax

VIT_NAMES = re.compile(
    r"^(deit3?_"  # DeiT, DeiT-3 (LayerScale), DeiT distilled
    r"|flexivit_"
    r"|vit_.*_(clip|siglip)_"  # CLIP towers (incl. quickgelu), SigLIP MAP / GAP
    r"|vit_.*_reg\d"  # register tokens (incl. DINOv2-reg)
    r"|vit_.*_dinov2$"
    r"|vit_[a-z]+_patch\d+_\d+$)"  # plain ViT sizes
)
MIXER_NAMES = re.compile(r"^g?mixer_")  # MLP-Mixer, gMixer (not ResMLP / gMLP: other blocks)
BEIT_NAMES = re.compile(r"^beit")  # BEiT, BEiTv2
EVA_NAMES = re.compile(r"^eva")  # EVA, EVA-02 (the eva module's vit_*_rope / PE models are other blocks)

BUILDER_MODULES = (vision_transformer, deit, mlp_mixer, beit, eva)
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
    torch.nn.ModuleList,
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
SUPPORTED_BEIT_MODULES = (beit.Beit, beit.Block, beit.Attention, beit.RelativePositionBias, tl.SwiGLU, *COMMON_MODULES)
SUPPORTED_EVA_MODULES = (
    eva.Eva,
    eva.EvaBlock,
    eva.EvaAttention,
    pos_embed_sincos.RotaryEmbeddingCat,
    tl.SwiGLU,
    *COMMON_MODULES,
)


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


def check_module_types(model: torch.nn.Module, supported: tuple[type, ...]) -> None:
    """Raise ValueError naming the first module (LayerNorm subclasses aside) whose type is not `supported`."""
    check_norms(model)
    for name, m in model.named_modules():
        if type(m) not in supported and not isinstance(m, torch.nn.LayerNorm):
            raise ValueError(f"module {name or '<root>'} is a {type(m).__name__}")


def check_patch_embed(patch_embed: torch.nn.Module) -> None:
    if not isinstance(patch_embed.norm, torch.nn.Identity) or not patch_embed.flatten:
        raise ValueError("patch_embed has a norm or keeps the spatial layout")


def check_vit_modules(model: torch.nn.Module) -> None:
    """Raise ValueError naming the first module our Flax ViT cannot reproduce."""
    distilled = type(model).__name__ == "VisionTransformerDistilled"
    check_module_types(model, SUPPORTED_VIT_MODULES + ((type(model),) if distilled else ()))
    if getattr(model, "pool_include_prefix", False):
        raise ValueError("pool_include_prefix=True")
    check_patch_embed(model.patch_embed)
    pool = model.attn_pool
    if pool is not None and (pool.latent_len != 1 or pool.pos_embed is not None or pool.pool != "token"):
        raise ValueError("attention pool with several latents / pos embed / non-token pooling")


def check_mixer_modules(model: torch.nn.Module) -> None:
    """Raise ValueError naming the first module our Flax MlpMixer cannot reproduce."""
    check_module_types(model, SUPPORTED_MIXER_MODULES)
    for name, m in model.named_modules():
        if isinstance(m, tl.GluMlp) and not m.gate_last:
            raise ValueError(f"{name} is a GluMlp with the gate in the first half (gate_last=False)")
    check_patch_embed(model.stem)


def check_head_dim(attn: torch.nn.Module, embed_dim: int) -> None:
    """Raise ValueError when the attention width is not embed_dim (timm's attn_head_dim option)."""
    if attn.proj.in_features != embed_dim:
        raise ValueError("attention width differs from embed_dim (attn_head_dim)")


def check_beit_modules(model: torch.nn.Module) -> None:
    """Raise ValueError naming the first module our Flax BEiT cannot reproduce."""
    check_module_types(model, SUPPORTED_BEIT_MODULES)
    check_patch_embed(model.patch_embed)
    for block in model.blocks:
        check_head_dim(block.attn, model.embed_dim)


def check_eva_modules(model: torch.nn.Module) -> None:
    """Raise ValueError naming the first module or option our Flax EVA cannot reproduce."""
    check_module_types(model, SUPPORTED_EVA_MODULES)
    check_patch_embed(model.patch_embed)
    if model.attn_pool is not None:
        raise ValueError("attention-pool head")
    if not isinstance(model.norm, torch.nn.Identity) and not isinstance(model.fc_norm, torch.nn.Identity):
        raise ValueError("both a final norm and an fc_norm")
    rope = model.rope
    if rope is not None and (rope.in_pixels or rope.rotate_half or rope.grid_type != "index" or rope.aug_active):
        raise ValueError("RoPE other than EVA-02's (pixel bands, half rotation, non-index grid or coordinate jitter)")
    for name, m in model.named_modules():
        if isinstance(m, tl.GluMlp) and m.gate_last:
            raise ValueError(f"{name} is a GluMlp with the gate in the second half (gate_last=True)")
    for block in model.blocks:
        attn = block.attn
        check_head_dim(attn, model.embed_dim)
        if attn.gate is not None or (attn.k_proj is not None and attn.k_proj.bias is not None):
            raise ValueError("gated attention or a k bias")
        if (block.gamma_1 is None) != (block.gamma_2 is None):
            raise ValueError("LayerScale on one branch only")


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
        **geometry(model, kwargs) | {"mlp_ratio": mlp_ratio},
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


def mlp_kind(mlp: torch.nn.Module) -> tuple[str, int]:
    """(our mlp_layer, fc1 width of one half) of a timm MLP module."""
    if isinstance(mlp, tl.SwiGLU):
        return "swiglu", mlp.fc1_g.out_features
    if isinstance(mlp, tl.GluMlp):
        return "glu", mlp.fc1.out_features // 2
    return "mlp", mlp.fc1.out_features


def geometry(model: torch.nn.Module, kwargs: dict) -> dict:
    """The size fields every family's config reads the same way off a built timm model."""
    return dict(
        img_size=tuple(model.patch_embed.img_size),
        patch_size=tuple(model.patch_embed.patch_size),
        in_chans=model.patch_embed.proj.in_channels,
        num_classes=model.num_classes,
        embed_dim=model.embed_dim,
        depth=len(model.blocks),
        num_heads=model.blocks[0].attn.num_heads,
        mlp_ratio=float(kwargs.get("mlp_ratio", 4.0)),
    )


def beit_config(model: torch.nn.Module, kwargs: dict) -> BeitConfig:
    """Read the built timm Beit back into a BeitConfig."""
    b0 = model.blocks[0]
    mlp_layer, hidden = mlp_kind(b0.mlp)
    config = BeitConfig(
        **geometry(model, kwargs),
        qkv_bias=b0.attn.q_bias is not None,
        scale_mlp_norm=not isinstance(b0.mlp.norm, torch.nn.Identity),
        init_values=kwargs.get("init_values") if b0.gamma_1 is not None else None,
        pos_embed=model.pos_embed is not None,
        fc_norm=kwargs.get("use_fc_norm"),
        global_pool=model.global_pool,
        act=act_name(b0.mlp.act),
        mlp_layer=mlp_layer,
        norm_eps=float(b0.norm1.eps),
        use_rel_pos_bias=b0.attn.relative_position_bias_table is not None,
        use_shared_rel_pos_bias=model.rel_pos_bias is not None,
    )
    if config.mlp_hidden != hidden:
        raise ValueError(f"mlp hidden {hidden} != int(embed_dim * {config.mlp_ratio})")
    return config


def eva_config(model: torch.nn.Module, kwargs: dict) -> EvaConfig:
    """Read the built timm Eva back into an EvaConfig."""
    b0 = model.blocks[0]
    not_id = lambda m: not isinstance(m, torch.nn.Identity)  # noqa: E731
    mlp_layer, hidden = mlp_kind(b0.mlp)
    attn, rope = b0.attn, model.rope
    config = EvaConfig(
        **geometry(model, kwargs),
        qkv_bias=attn.q_bias is not None or (attn.q_proj is not None and attn.q_proj.bias is not None),
        qk_norm=not_id(attn.q_norm),
        scale_attn_norm=not_id(attn.norm),
        scale_mlp_norm=not_id(b0.mlp.norm),
        init_values=kwargs.get("init_values") if b0.gamma_1 is not None else None,
        class_token=model.cls_token is not None,
        reg_tokens=0 if model.reg_token is None else model.reg_token.shape[1],
        no_embed_class=model.no_embed_class,
        pos_embed=model.pos_embed is not None,
        pre_norm=not_id(model.norm_pre),
        final_norm=not_id(model.norm) or not_id(model.fc_norm),
        fc_norm=kwargs.get("use_fc_norm"),  # None = timm's automatic choice from global_pool
        global_pool=model.global_pool,
        act=act_name(b0.mlp.act),
        mlp_layer=mlp_layer,
        norm_eps=float(b0.norm1.eps),
        qkv_fused=attn.qkv is not None,
        use_rot_pos_emb=rope is not None,
        ref_feat_shape=None if rope is None or rope.ref_feat_shape is None else tuple(rope.ref_feat_shape),
        rope_temperature=10000.0 if rope is None else float(rope.temperature),
        rope_grid_offset=0.0 if rope is None else float(rope.grid_offset),
        rope_grid_indexing="ij" if rope is None else rope.grid_indexing,
    )
    if int(config.embed_dim * config.mlp_ratio) != hidden:
        raise ValueError(f"mlp hidden {hidden} != int(embed_dim * {config.mlp_ratio})")
    norms = (config.use_fc_norm, config.final_norm and not config.use_fc_norm)
    if norms != (not_id(model.fc_norm), not_id(model.norm)):
        raise ValueError("final norm / fc_norm choice differs from ViTConfig's")
    return config


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
    modules: tuple[str, ...]  # timm model modules whose architectures may belong to the family
    check: Callable[[torch.nn.Module], None]  # raises ValueError for what our Flax model lacks
    read: Callable[[torch.nn.Module, dict], ModelConfig]  # built timm model + its kwargs → config
    shallow: dict  # kwargs (= config fields) of a 2-block build, for the parameter-shape check


FAMILIES = {
    "vit": Family(VIT_NAMES, ("vision_transformer", "deit"), check_vit_modules, vit_config, {"depth": 2}),
    "beit": Family(BEIT_NAMES, ("beit",), check_beit_modules, beit_config, {"depth": 2}),
    "eva": Family(EVA_NAMES, ("eva",), check_eva_modules, eva_config, {"depth": 2}),
    "mixer": Family(MIXER_NAMES, ("mlp_mixer",), check_mixer_modules, mixer_config, {"num_blocks": 2}),
}


@functools.cache
def module_models(modules: tuple[str, ...]) -> frozenset[str]:
    return frozenset(timm.list_models(module=list(modules)))


def family_of(arch: str) -> str | None:
    """The family whose name pattern matches `arch` among the architectures of its timm modules."""
    return next(
        (name for name, fam in FAMILIES.items() if fam.names.match(arch) and arch in module_models(fam.modules)), None
    )


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
    out_default = Path(__file__).resolve().parents[1] / "libra_jax" / "weights" / "timm_registry.json"
    parser.add_argument("-o", "--output", type=Path, default=out_default)
    args = parser.parse_args(argv)

    models, skipped = {}, {}
    for arch in sorted(a for a in timm.list_models() if family_of(a)):
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
