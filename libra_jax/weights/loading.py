"""`load`: a timm name, HF repo, embedded model, timm checkpoint file or libra-jax file → (model, params).

    model, params = load("vit_base_patch16_224.augreg2_in21k_ft_in1k")           # HF Hub (cached)
    model, params = load("synthetic_vit")                                          # embedded model
    model, params = load("synthetic_bert")                     # embedded text model (a BertClassifier)
    model, params = load("synthetic_decoder")                  # embedded decoder LM (a Decoder)
    model, params = load("hf-hub:timm/vit_small_patch14_reg4_dinov2.lvd142m")
    model, params = load("deit3_small_patch16_224", checkpoint="deit3.pth", num_classes=10)
    model, params = load("converted.safetensors")                                   # libra-jax file
    logits, aux = model.apply({"params": params}, images)

Every path builds the family's model (`VisionTransformer` or `MlpMixer`) from the config. timm weights
are then adapted to it (`libra_jax.weights.adapt`) and their keys mapped with the strict, diffing
`timm_to_params`; a libra-jax file (embedded models included) already holds the model's own params
and is only checked (`check_params`), unless model kwargs ask for other sizes, which the timm
adaptation handles. A libra-jax file of a text family builds a `BertClassifier`, of the 'decoder' family a
`Decoder` (no overrides).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Collection, Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from libra_jax.models import MlpMixer, VisionTransformer, build_model
from libra_jax.models.bert import BertClassifier, BertConfig, param_shapes
from libra_jax.models.config import DataConfig, ModelConfig
from libra_jax.models.decoder import Decoder, DecoderConfig
from libra_jax.models.text_inputs import text_inputs
from libra_jax.weights import embedded, hub, registry
from libra_jax.weights.adapt import adapt_state_dict
from libra_jax.weights.formats import (
    TORCH_SUFFIXES,
    LibraCheckpoint,
    is_libra_checkpoint,
    read_libra_checkpoint,
    read_state_dict,
)
from libra_jax.weights.keymap import check_params, params_to_timm, timm_to_params, unflatten

FILE_SUFFIXES = (".safetensors", *TORCH_SUFFIXES)


@dataclasses.dataclass(frozen=True)
class _Source:
    """Everything needed to build the model and convert its weights."""

    config: ModelConfig
    data_config: DataConfig
    state: Mapping[str, np.ndarray]  # timm key → array
    source_img_size: tuple[int, int]  # image size the weights were trained at
    resample: tuple[str, bool]
    overrides: Collection[str]  # config fields the caller set
    description: str


def _param_shapes(model: VisionTransformer | MlpMixer) -> dict:
    """The model's params tree as ShapeDtypeStructs (no weights are initialised)."""
    image = jax.ShapeDtypeStruct((*model.config.img_size, model.config.in_chans), jnp.float32)
    return jax.eval_shape(model.init, jax.random.key(0), image)["params"]


def _looks_like_path(name: str) -> bool:
    return os.path.exists(name) or name.endswith(FILE_SUFFIXES)


def _read_checkpoint(path: Path) -> tuple[Mapping[str, np.ndarray], tuple[int, int] | None]:
    """(timm state dict, source image size if the file records it) of a local checkpoint file."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    if is_libra_checkpoint(path):
        ck = read_libra_checkpoint(path)
        return params_to_timm(unflatten(ck.params)), ck.config.img_size
    return read_state_dict(path), None


def _read_libra_file(path: Path) -> LibraCheckpoint:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    if not is_libra_checkpoint(path):
        raise ValueError(
            f"{path} is not a libra-jax checkpoint, so it does not say which architecture it holds;"
            f" name it: load('<timm model name>', checkpoint={str(path)!r})"
        )
    return read_libra_checkpoint(path)


def _adapted_libra_file(ck: LibraCheckpoint, path: Path, model_kwargs: Mapping) -> _Source:
    """A libra-jax file loaded at other sizes / heads: its params in timm layout, for `adapt_state_dict`."""
    overrides = registry.timm_kwargs_to_config(model_kwargs, type(ck.config))
    config = ck.config.replace(**overrides)
    data_config = dataclasses.replace(ck.data_config, input_size=config.img_size)
    state = params_to_timm(unflatten(ck.params))
    return _Source(config, data_config, state, ck.config.img_size, ("bicubic", True), set(overrides), str(path))


def _decoder_param_shapes(model: Decoder) -> dict:
    """The decoder's params tree as ShapeDtypeStructs (no weights are initialised)."""
    example = text_inputs(np.zeros((1, 1), np.int32))
    return jax.eval_shape(model.init, jax.random.key(0), example)["params"]


_TOKEN_MODELS = {BertConfig: (BertClassifier, param_shapes), DecoderConfig: (Decoder, _decoder_param_shapes)}
"""Config class of a token-input libra-jax file → (model class, its param shapes)."""


def _load_text_file(ck: LibraCheckpoint, path: Path, model_kwargs: Mapping) -> tuple[BertClassifier | Decoder, dict]:
    """The `BertClassifier` or `Decoder` of a text libra-jax file, params checked against its config."""
    if model_kwargs:
        raise ValueError(
            f"{path} holds a text model ({ck.config.family}), which loads as stored; drop the model"
            f" overrides {sorted(model_kwargs)}"
        )
    model_class, shapes = _TOKEN_MODELS[type(ck.config)]
    model = model_class(ck.config)
    params = check_params(ck.params, shapes(model), source=str(path))
    return model, jax.tree.map(jnp.asarray, params)


def _from_name(name: str, checkpoint: str | os.PathLike | None, cache_dir, model_kwargs: Mapping) -> _Source:
    ref = hub.parse_hub_name(name)
    if ref is not None:
        # An HF repo describes itself: its config.json names the architecture and its cfg.
        arch, pretrained_cfg, model_args = hub.parse_timm_config(hub.fetch_config(ref, cache_dir))
        arch = registry.split_model_name(arch)[0]
        spec = registry.resolve(arch, pretrained_cfg=pretrained_cfg, model_args=model_args, **model_kwargs)
    else:
        spec = registry.resolve(name, **model_kwargs)
        if checkpoint is None:
            if spec.hf_hub_id is None:
                raise ValueError(f"{spec.arch} has no pretrained timm weights; pass checkpoint=<file>")
            ref = hub.HubRef(spec.hf_hub_id)
            # The repo's config.json (when there) records the exact cfg / model_args of its weights;
            # the architecture stays the requested one (quickgelu tags share a plain CLIP repo).
            hf_cfg = hub.fetch_config(ref, cache_dir, required=False)
            if hf_cfg is not None:
                _, pretrained_cfg, model_args = hub.parse_timm_config(hf_cfg)
                spec = registry.resolve(name, pretrained_cfg=pretrained_cfg, model_args=model_args, **model_kwargs)
    overrides = set(registry.timm_kwargs_to_config(model_kwargs, type(spec.config)))
    source_img_size = spec.source_config.img_size
    if checkpoint is not None:
        path = Path(checkpoint)
        state, recorded_size = _read_checkpoint(path)
        source_img_size = recorded_size or source_img_size
        description = str(path)
    else:
        state = read_state_dict(hub.fetch_weights(ref, cache_dir))
        description = f"hf-hub:{ref.repo_id}"
    return _Source(spec.config, spec.data_config, state, source_img_size, spec.resample, overrides, description)


def load(
    name_or_path: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    *,
    strict: bool = True,
    cache_dir: str | os.PathLike | None = None,
    **model_kwargs,
) -> tuple[VisionTransformer | MlpMixer | BertClassifier | Decoder, dict]:
    """Build a timm-compatible ViT (incl. BEiT, EVA) / MLP-Mixer and load its weights, like timm's
    `create_model(name, pretrained=True)`.

    Args:
      name_or_path: one of
        * a timm name '<arch>[.<tag>]' (weights from the HF repo `timm/<arch>.<tag>`, default tag
          when omitted), e.g. 'vit_base_patch16_224.augreg2_in21k_ft_in1k';
        * an HF repo 'hf-hub:org/repo[@revision]' or 'timm/<name>' holding a timm `config.json`;
        * an embedded model, 'synthetic_vit' / 'synthetic_swiglu' / 'synthetic_bert' (text) /
          'synthetic_decoder' (decoder LM) (`libra_jax.weights.embedded`);
        * a libra-jax checkpoint file (see `libra_jax.weights.formats`), config from its metadata; a
          text family's file gives a `BertClassifier` (libra_jax/models/bert.py), a decoder's a `Decoder`
          (libra_jax/models/decoder.py).
      checkpoint: a local weights file for the named architecture instead of the Hub: a timm state
        dict (`.safetensors` read without torch; `.pth/.pt/.bin` via `torch.load(weights_only=True)`;
        'model' / 'state_dict' wrappers accepted) or a libra-jax file.
      strict: if False, checkpoint keys the model does not use (e.g. the LibraGrad fork's
        'blocks.N.attn.value.*') are dropped with a warning instead of raising. Missing keys and
        shape mismatches always raise.
      cache_dir: HF cache directory (default: HF_HUB_CACHE).
      **model_kwargs: timm-style model overrides (depth=4, num_classes=10, img_size=112,
        patch_size=..., act_layer=..., norm_eps=1e-5; MLP-Mixer: num_blocks=4, mlp_ratio=...). ViT position and
        patch embeddings are resampled to a new img_size / patch_size as timm does (a Mixer's token
        MLP fixes its token count); with num_classes set, a classifier of another size is
        re-initialised (with a warning).
    Returns:
      (model, params): a `VisionTransformer` or `MlpMixer` (with `config` and `data_config`) and a nested
      dict of float32 jax arrays.
    Raises:
      libra_jax.weights.registry.UnknownModelError, libra_jax.weights.hub.HubError,
      libra_jax.weights.keymap.CheckpointMismatchError (message lists every missing / unexpected /
      misshapen key), libra_jax.weights.formats.CheckpointFileError (unreadable file).
    """
    name = os.fspath(name_or_path)
    if name in embedded.names() + embedded.text_names():
        name = str(embedded.path(name))
    if _looks_like_path(name):
        if checkpoint is not None:
            raise ValueError(
                "pass a libra-jax file, or a model name with checkpoint=<file>, not a file and a checkpoint"
            )
        path = Path(name)
        ck = _read_libra_file(path)
        if ck.data_config is None:
            return _load_text_file(ck, path, model_kwargs)
        if not model_kwargs:  # the input size is the model's own, whatever preprocessing size the file records
            model = build_model(ck.config, dataclasses.replace(ck.data_config, input_size=ck.config.img_size))
            params = check_params(ck.params, _param_shapes(model), source=str(path))
            return model, jax.tree.map(jnp.asarray, params)
        src = _adapted_libra_file(ck, path, model_kwargs)
    else:
        src = _from_name(name, checkpoint, cache_dir, model_kwargs)

    model = build_model(src.config, src.data_config)
    expected = _param_shapes(model)
    state, notes = adapt_state_dict(
        src.state, src.config, source_img_size=src.source_img_size, resample=src.resample, overrides=src.overrides
    )
    for note in notes:
        warnings.warn(f"{src.description}: {note}", stacklevel=2)
    params, unexpected = timm_to_params(state, expected, source=src.description, strict=strict)
    if unexpected:
        keys = ", ".join(unexpected)
        warnings.warn(
            f"{src.description}: dropped {len(unexpected)} checkpoint keys the model does not use: {keys}", stacklevel=2
        )
    return model, jax.tree.map(jnp.asarray, params)
