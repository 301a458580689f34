"""timm model names → model config (`ViTConfig` / `BeitConfig` / `EvaConfig` / `MixerConfig`) + `DataConfig`, like
`timm.create_model`.

The table `timm_registry.json` (next to this module) is generated from timm by `convert/gen_registry.py` (this
module needs neither torch nor timm). A name is `<architecture>[.<pretrained tag>]`, e.g.
'vit_base_patch16_224.augreg2_in21k_ft_in1k'; the architecture selects the entry, the tag (or the
architecture's default tag) its pretrained cfg: preprocessing, and — as in timm — defaults for
num_classes / global_pool / in_chans / img_size that the architecture does not fix itself.

Precedence, highest first (timm's): explicit kwargs > a checkpoint's saved `model_args` >
arguments the architecture's entry point sets > pretrained-cfg defaults > class defaults.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import json
from collections.abc import Mapping
from pathlib import Path

from libra_jax.models.config import CONFIG_CLASSES, DataConfig, ModelConfig, ViTConfig

REGISTRY_FILE = Path(__file__).parent / "timm_registry.json"

# timm constructor kwargs with no effect on an eval-mode forward at the configured size.
IGNORED_TIMM_KWARGS = frozenset(
    {
        "drop_rate",
        "pos_drop_rate",
        "patch_drop_rate",
        "proj_drop_rate",
        "attn_drop_rate",
        "drop_path_rate",
        "weight_init",
        "fix_init",
        # A dynamic-size timm model resamples pos_embed per input; at img_size that is the identity.
        "dynamic_img_size",
        "nlhb",  # MLP-Mixer head-bias init
    }
)

# timm constructor kwargs whose config field has another name (BEiT / EVA spellings) → the field.
TIMM_ALIASES = {
    "use_abs_pos_emb": "pos_embed",
    "use_fc_norm": "fc_norm",
    "scale_attn_inner": "scale_attn_norm",
    "scale_mlp": "scale_mlp_norm",
}

# timm act_layer names (timm.layers.get_act_layer) → ours.
ACT_NAMES = {"gelu": "gelu", "gelu_tanh": "gelu_tanh", "quick_gelu": "quick_gelu", "silu": "silu", "swish": "silu"}


class UnknownModelError(ValueError):
    """The name is not a registered architecture / pretrained tag."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A resolved model name.

    Attributes:
      arch: timm architecture name.
      tag: pretrained tag (None for architectures without pretrained weights).
      config: the model to build (kwargs applied); its class names the family.
      source_config: the architecture as its pretrained weights were saved (kwargs not applied),
        used to recognise the checkpoint's position-embedding grid.
      data_config: preprocessing of the pretrained weights, input_size = config.img_size.
      hf_hub_id: HF repo holding the tag's timm weights (None without a tag).
      resample: (interpolation, antialias) timm uses to resize pos / patch embeddings on load.
    """

    arch: str
    tag: str | None
    config: ModelConfig
    source_config: ModelConfig
    data_config: DataConfig
    hf_hub_id: str | None
    resample: tuple[str, bool]


@functools.lru_cache(maxsize=1)
def _registry() -> dict:
    return json.loads(REGISTRY_FILE.read_text())["models"]


def list_models(pattern: str = "*") -> list[str]:
    """Registered architecture names matching a shell-style pattern."""
    return [a for a in _registry() if fnmatch.fnmatchcase(a, pattern)]


def list_pretrained(pattern: str = "*") -> list[str]:
    """'<arch>.<tag>' names with pretrained weights matching a shell-style pattern."""
    names = [f"{a}.{t}" for a, e in _registry().items() for t in e["tags"]]
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def split_model_name(name: str) -> tuple[str, str | None]:
    """'arch.tag' → ('arch', 'tag'); 'arch' → ('arch', None)."""
    arch, _, tag = name.partition(".")
    return arch, tag or None


def _entry(arch: str) -> dict:
    try:
        return _registry()[arch]
    except KeyError:
        close = difflib.get_close_matches(arch, list(_registry()), n=5, cutoff=0.6)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        raise UnknownModelError(
            f"unknown model architecture {arch!r}.{hint} libra-jax covers timm's ViT, DeiT/DeiT-3, FlexiViT, CLIP,"
            " SigLIP, register, DINOv2, BEiT/BEiTv2, EVA/EVA-02 and MLP-Mixer / gMixer families;"
            " libra_jax.weights.registry.list_models() lists them all."
        ) from None


def timm_kwargs_to_config(kwargs: Mapping, config_cls: type[ModelConfig] = ViTConfig) -> dict:
    """Translate timm model kwargs (or config field names) to fields of `config_cls`.

    Raises ValueError for kwargs libra-jax cannot honour (e.g. a custom norm_layer or block_fn).
    """
    fields = {f.name for f in dataclasses.fields(config_cls)}
    out = {}
    for key, value in kwargs.items():
        if key in IGNORED_TIMM_KWARGS:
            continue
        field = key if key in fields else TIMM_ALIASES.get(key, key)
        if key == "act_layer":
            if value not in ACT_NAMES:
                raise ValueError(f"unsupported act_layer {value!r}; supported: {sorted(ACT_NAMES)}")
            out["act"] = ACT_NAMES[value]
        elif key == "pos_embed" and isinstance(value, str):
            out["pos_embed"] = value == "learn"  # timm: 'learn' | 'none' | ''
        elif field in fields:
            out[field] = value
        else:
            raise ValueError(
                f"unsupported model kwarg {key!r}; libra-jax accepts the {config_cls.__name__} fields {sorted(fields)},"
                f" act_layer and the timm spellings {sorted(TIMM_ALIASES)}, and ignores {sorted(IGNORED_TIMM_KWARGS)}"
            )
    return out


def pretrained_defaults(pretrained_cfg: Mapping) -> dict:
    """The model kwargs timm derives from a pretrained cfg (`_update_default_model_kwargs`)."""
    out = {}
    size = pretrained_cfg.get("input_size")
    if pretrained_cfg.get("num_classes") is not None and pretrained_cfg["num_classes"] >= 0:
        out["num_classes"] = int(pretrained_cfg["num_classes"])
    if pretrained_cfg.get("global_pool") is not None:
        out["global_pool"] = pretrained_cfg["global_pool"]
    if size:
        out["in_chans"] = int(size[0])
        if pretrained_cfg.get("fixed_input_size"):
            out["img_size"] = tuple(size[-2:])
    return out


def resolve(
    name: str,
    *,
    pretrained_cfg: Mapping | None = None,
    model_args: Mapping | None = None,
    **kwargs,
) -> ModelSpec:
    """Resolve a timm model name and kwargs to the model to build.

    Args:
      name: '<arch>[.<tag>]'.
      pretrained_cfg: a timm pretrained cfg (e.g. from an HF `config.json`) to use instead of the
        registered tag's; lets tags newer than the registry load.
      model_args: a checkpoint's saved timm `model_args` (HF `config.json`).
      **kwargs: model overrides, timm style (depth=4, num_classes=10, img_size=112, act_layer=...).
    Raises:
      UnknownModelError: unknown architecture or tag (the message lists close matches / tags).
      ValueError: a kwarg libra-jax cannot honour, or an invalid resulting config.
    """
    arch, tag = split_model_name(name)
    entry = _entry(arch)
    if pretrained_cfg is None:
        tag = tag or entry["default_tag"]
        if tag is not None and tag not in entry["tags"]:
            close = difflib.get_close_matches(tag, list(entry["tags"]), n=5, cutoff=0.5) or list(entry["tags"])
            raise UnknownModelError(f"unknown pretrained tag {tag!r} for {arch}; available: {', '.join(close)}")
        pretrained_cfg = entry["tags"].get(tag, {}) if tag else {}
    config_cls = CONFIG_CLASSES[entry["family"]]
    defaults = {k: v for k, v in pretrained_defaults(pretrained_cfg).items() if k not in entry["explicit"]}
    source = {**entry["config"], **defaults, **timm_kwargs_to_config(model_args or {}, config_cls)}
    source_config = config_cls(**source)
    config = config_cls(**{**source, **timm_kwargs_to_config(kwargs, config_cls)})
    data_config = dataclasses.replace(
        DataConfig.from_pretrained_cfg(dict(pretrained_cfg), config.img_size), input_size=config.img_size
    )
    hub = (entry["tags"].get(tag, {}).get("hf_hub_id") or f"timm/{arch}.{tag}") if tag else None
    interpolation, antialias = entry["resample"]
    return ModelSpec(arch, tag, config, source_config, data_config, hub, (interpolation, bool(antialias)))
