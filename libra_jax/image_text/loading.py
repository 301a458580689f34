"""`load_image_text`: an open_clip / HF CLIP / HF SigLIP checkpoint → (ImageTextModel, params).

    model, params = load_image_text("hf-hub:timm/vit_base_patch16_clip_224.openai")    # open_clip files
    model, params = load_image_text("hf-hub:openai/clip-vit-base-patch32")             # HF CLIPModel
    model, params = load_image_text("weights.safetensors", config="open_clip_config.json")

A repo or directory is open_clip when it holds `open_clip_config.json`, Hugging Face when its
`config.json` has `vision_config` / `text_config`. Every path ends the same way: rename the upstream
keys by a table (`open_clip.convert` / `hf.convert`), resample the position embedding to the
requested image size (`libra_jax.weights.adapt`), and map them onto the model's params with the strict,
diffing `timm_to_params` (missing / unexpected keys raise `CheckpointMismatchError`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from libra_jax.image_text import hf, open_clip
from libra_jax.image_text.architecture import Architecture
from libra_jax.models.config import ViTConfig, pair
from libra_jax.models.image_text import ImageTextModel
from libra_jax.weights import hub
from libra_jax.weights.adapt import adapt_state_dict
from libra_jax.weights.formats import read_state_dict
from libra_jax.weights.keymap import timm_to_params


@dataclasses.dataclass(frozen=True)
class _Format:
    """One checkpoint layout: its config file, weight files, and how to read them."""

    config_file: str
    weight_files: tuple[str, ...]
    architecture: Callable[..., Architecture]
    convert: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


OPEN_CLIP = _Format(open_clip.CONFIG_FILE, open_clip.WEIGHT_FILES, open_clip.architecture, open_clip.convert)
HF = _Format(hf.CONFIG_FILE, hf.WEIGHT_FILES, hf.architecture, hf.convert)


def _format_of(cfg: Mapping, where: str) -> _Format:
    if "vision_config" in cfg or "text_config" in cfg:
        return HF
    if "vision_cfg" in cfg or "model_cfg" in cfg:
        return OPEN_CLIP
    raise ValueError(f"{where} is neither an open_clip config (vision_cfg/text_cfg) nor an HF CLIP/SigLIP config")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the model config {path}: {e}") from e


def _from_hub(ref: hub.HubRef, cache_dir) -> tuple[dict, Path, str]:
    """(config, weights path, format name) of an HF repo: open_clip files first, then an HF config.json."""
    failures = []
    for fmt in (OPEN_CLIP, HF):
        try:
            cfg = hub.fetch_config(ref, cache_dir, filename=fmt.config_file)
        except hub.HubError as e:
            failures.append(str(e))
            continue
        if fmt is HF and "vision_config" not in cfg:  # e.g. a timm repo's own config.json
            failures.append(f"its {fmt.config_file} is not an HF CLIP / SigLIP config (no vision_config)")
            break
        try:
            return cfg, hub.fetch_weights(ref, cache_dir, fmt.weight_files), fmt.config_file
        except hub.HubError as e:
            failures.append(str(e))
        break
    raise hub.HubError(f"HF repo {ref.repo_id} has no usable image–text checkpoint:\n  " + "\n  ".join(failures))


def _from_directory(path: Path) -> tuple[dict, Path, str]:
    for fmt in (OPEN_CLIP, HF):
        cfg_path = path / fmt.config_file
        if not cfg_path.is_file():
            continue
        cfg = _read_json(cfg_path)
        if fmt is HF and "vision_config" not in cfg:
            continue
        for filename in fmt.weight_files:
            if (path / filename).is_file():
                return cfg, path / filename, fmt.config_file
        raise FileNotFoundError(f"{path} has {fmt.config_file} but no weights ({' or '.join(fmt.weight_files)})")
    raise FileNotFoundError(f"{path} holds neither {open_clip.CONFIG_FILE} nor an HF CLIP/SigLIP {hf.CONFIG_FILE}")


def load_image_text(
    name_or_path: str | os.PathLike,
    *,
    config: str | os.PathLike | Mapping | None = None,
    img_size: int | tuple[int, int] | None = None,
    quick_gelu: bool | None = None,
    vision: ViTConfig | None = None,
    strict: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[ImageTextModel, dict]:
    """Build a CLIP / SigLIP `ImageTextModel` and load its weights.

    Args:
      name_or_path: 'hf-hub:org/repo[@rev]' / 'timm/<name>' (HF_HUB_OFFLINE and the local cache are
        honoured), a local directory holding the files of such a repo, or a weights file (with `config`).
      config: the model config (path or parsed dict) for a weights file; an open_clip config or an HF config.json.
      img_size: run the image tower at another size (position embedding resampled, bicubic antialiased,
        as timm's `resample_abs_pos_embed`).
      quick_gelu: override open_clip's `quick_gelu` (the '-quickgelu' model names).
      vision: the image tower of an open_clip timm trunk the registry does not know.
      strict: if False, unexpected checkpoint keys are dropped instead of raising.
      cache_dir: HF cache directory.
    Returns:
      (model, params): params hold both towers ('text/...'), 'proj', 'logit_scale' (and 'logit_bias').
    """
    name = os.fspath(name_or_path)
    ref = None if os.path.exists(name) else hub.parse_hub_name(name)
    if ref is not None:
        cfg, weights, kind = _from_hub(ref, cache_dir)
        description = f"hf-hub:{ref.repo_id}"
    elif Path(name).is_dir():
        cfg, weights, kind = _from_directory(Path(name))
        description = name
    else:
        if config is None:
            raise ValueError(
                f"{name!r} is not an HF repo or a directory; pass config=<model config> with a weights file"
            )
        cfg = dict(config) if isinstance(config, Mapping) else _read_json(Path(config))
        weights, kind, description = Path(name), _format_of(cfg, str(config)).config_file, name
        if not weights.is_file():
            raise FileNotFoundError(f"weights file {weights} does not exist")
    fmt = OPEN_CLIP if kind == open_clip.CONFIG_FILE else HF
    options = {"quick_gelu": quick_gelu, "vision": vision} if fmt is OPEN_CLIP else {}
    if fmt is HF and (quick_gelu is not None or vision is not None):
        raise ValueError("quick_gelu= and vision= apply to open_clip checkpoints; an HF config states its own")
    arch = fmt.architecture(cfg, **options)
    if img_size is not None:
        size = pair(img_size)
        arch = dataclasses.replace(
            arch,
            vision=arch.vision.replace(img_size=size),
            data_config=dataclasses.replace(arch.data_config, input_size=size),
        )
    return build(arch, fmt.convert(read_state_dict(weights)), description=description, strict=strict)


def build(arch: Architecture, state: Mapping[str, np.ndarray], *, description: str, strict: bool = True):
    """(ImageTextModel, params) from an architecture and a renamed state dict (`open_clip.convert` / `hf.convert`)."""
    model = ImageTextModel(
        arch.vision, arch.data_config, text_config=arch.text, image_proj=arch.image_proj, logit_bias=arch.logit_bias
    )
    image = jax.ShapeDtypeStruct((*arch.vision.img_size, arch.vision.in_chans), jnp.float32)
    tokens = jax.ShapeDtypeStruct((arch.text.context_length,), jnp.int32)
    init = functools.partial(model.init, method="init_all")
    expected = jax.eval_shape(init, jax.random.key(0), image, tokens)["params"]
    state, _ = adapt_state_dict(state, arch.vision, source_img_size=arch.source_img_size)
    params, unexpected = timm_to_params(state, expected, source=description, strict=strict)
    if unexpected:
        warnings.warn(
            f"{description}: dropped {len(unexpected)} unused checkpoint keys: {', '.join(unexpected)}", stacklevel=2
        )
    return model, jax.tree.map(jnp.asarray, params)
