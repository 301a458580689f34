"""Checkpoint files: timm state dicts (safetensors / torch) in, the libra-jax format in and out.

libra-jax checkpoint format (version 1)
---------------------------------------
One `.safetensors` file:

* tensors: one per Flax parameter, keyed by its flattened path with '/' separators
  ('patch_embed/kernel', 'blocks_0/attn/qkv/kernel', 'blocks_0/norm1/scale', 'head/bias', ...),
  float32, in Flax layout (Linear kernels (in, out), the patch-embed conv kernel HWIO);
* metadata (safetensors' string → string header map):
    format       'libra-jax'
    version      '1'
    family       'vit', 'beit', 'eva' or 'mixer' (the config class: `ViTConfig` / `BeitConfig` / `EvaConfig`, all
                 built as `libra_jax.models.VisionTransformer`, or `MixerConfig` → `MlpMixer`), a
                 text family 'bert', 'roberta' or 'distilbert' (`BertConfig` → `BertClassifier`), or
                 'decoder' (`DecoderConfig` → `libra_jax.models.decoder.Decoder`; the config's own `family`
                 field is the transformers model_type, e.g. 'llama')
    config       JSON object of every field of the family's config (tuples as lists, nested configs as objects)
    data_config  JSON object of every `DataConfig` field (image families only: text models take token ids)
    source       where the weights came from (timm name, HF repo or file), informational.

The file is self-describing: `libra_jax.load(path)` rebuilds the model from `config` (and
`data_config`) alone, and loads its params as they are (no key mapping, `keymap.check_params`).
`save_checkpoint` writes through `libra_jax.weights.atomic`, so readers never see a half-written file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path

import jax
import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy, so bf16 safetensors files load)
import numpy as np
import safetensors
import safetensors.numpy

from libra_jax.models import MlpMixer, VisionTransformer
from libra_jax.models.bert import FAMILIES as TEXT_FAMILIES
from libra_jax.models.bert import BertClassifier, BertConfig
from libra_jax.models.config import CONFIG_CLASSES, DataConfig, ModelConfig
from libra_jax.models.decoder import Decoder, DecoderConfig
from libra_jax.models.rope1d import RopeScaling
from libra_jax.weights.atomic import write_atomic
from libra_jax.weights.keymap import flatten

FORMAT = "libra-jax"
VERSION = "1"
TORCH_SUFFIXES = (".pth", ".pt", ".bin")
DECODER_FAMILY = "decoder"
FILE_CONFIG_CLASSES: dict[str, type] = {
    **CONFIG_CLASSES,
    **dict.fromkeys(TEXT_FAMILIES, BertConfig),
    DECODER_FAMILY: DecoderConfig,
}
"""Config class of each family a libra-jax file can hold."""
TOKEN_FAMILIES = (*TEXT_FAMILIES, DECODER_FAMILY)
"""Families whose models take token ids (no `data_config`)."""


class CheckpointFileError(ValueError):
    """A checkpoint file cannot be read (corrupt, truncated, wrong format or version)."""


@dataclasses.dataclass(frozen=True)
class LibraCheckpoint:
    """A libra-jax checkpoint read from disk: flat params {'a/b/c': float32 array} + configs
    (data_config None for a text model)."""

    config: ModelConfig | BertConfig | DecoderConfig
    data_config: DataConfig | None
    params: dict[str, np.ndarray]
    source: str


def _config_json(config) -> str:
    return json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()})


def file_family(config) -> str:
    """The `family` a libra-jax file records for `config`: 'decoder' for every decoder, else config.family."""
    return DECODER_FAMILY if type(config) is DecoderConfig else config.family


def _decoder_config(fields: dict) -> DecoderConfig:
    """A `DecoderConfig` from its JSON fields: RoPE scalings back to `RopeScaling`, layer types to a tuple."""
    for key in ("rope_scaling", "local_rope_scaling"):
        if isinstance(fields.get(key), dict):
            fields[key] = RopeScaling(**fields[key])
    if fields.get("layer_types") is not None:
        fields["layer_types"] = tuple(fields["layer_types"])
    return DecoderConfig(**fields)


def save_checkpoint(
    path: str | os.PathLike,
    model: VisionTransformer | MlpMixer | BertClassifier | Decoder,
    params: Mapping,
    *,
    source: str = "",
) -> Path:
    """Write `params` of `model` as a libra-jax checkpoint (format in this module's docstring).

    Args:
      path: destination file (conventionally `*.safetensors`); missing parent folders are created.
      model: the model (`VisionTransformer` / `MlpMixer` / `BertClassifier` / `Decoder`) the params belong to
        (its config, and an image model's data_config, are stored).
      params: the Flax params tree (jax or numpy arrays; a {'params': ...} wrapper is accepted).
      source: where the weights came from, kept in the metadata.
    Returns:
      The path written.
    """
    config = model.config
    family = file_family(config)
    if FILE_CONFIG_CLASSES.get(family) is not type(config):
        raise TypeError(
            f"save_checkpoint stores the families {sorted(FILE_CONFIG_CLASSES)}; {type(model).__name__} has a"
            f" {type(config).__name__}: save a model built by libra_jax.load / libra_jax.models.build_model"
        )
    if set(params) == {"params"}:
        params = params["params"]
    tensors = {k: np.ascontiguousarray(jax.device_get(v), dtype=np.float32) for k, v in flatten(params).items()}
    metadata = {
        "format": FORMAT,
        "version": VERSION,
        "family": family,
        "config": _config_json(config),
        "source": str(source),
    }
    if family not in TOKEN_FAMILIES:
        metadata["data_config"] = _config_json(model.data_config)
    path = Path(path)
    write_atomic(path, safetensors.numpy.save(tensors, metadata=metadata))
    return path


def _safetensors_metadata(path: Path) -> dict[str, str]:
    try:
        with safetensors.safe_open(str(path), framework="numpy") as f:
            return f.metadata() or {}
    except Exception as e:  # the Rust reader raises a bare SafetensorError for any malformed header
        raise CheckpointFileError(f"{path} is not a readable safetensors file (truncated or corrupt?): {e}") from e


def is_libra_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` is a safetensors file written by `save_checkpoint`."""
    path = Path(path)
    return path.suffix == ".safetensors" and _safetensors_metadata(path).get("format") == FORMAT


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    try:
        return safetensors.numpy.load_file(str(path))
    except Exception as e:
        raise CheckpointFileError(f"{path} is not a readable safetensors file (truncated or corrupt?): {e}") from e


def read_libra_checkpoint(path: str | os.PathLike) -> LibraCheckpoint:
    """Read a libra-jax checkpoint; raises CheckpointFileError for other files or versions."""
    path = Path(path)
    meta = _safetensors_metadata(path)
    if meta.get("format") != FORMAT:
        raise CheckpointFileError(f"{path} is not a libra-jax checkpoint (metadata format={meta.get('format')!r})")
    family = meta.get("family")
    if meta.get("version") != VERSION or family not in FILE_CONFIG_CLASSES:
        raise CheckpointFileError(
            f"{path} is a libra-jax checkpoint of version {meta.get('version')!r} / family {family!r};"
            f" this libra-jax reads version {VERSION!r} / families {sorted(FILE_CONFIG_CLASSES)}"
        )
    try:
        fields = json.loads(meta["config"])
        config = _decoder_config(fields) if family == DECODER_FAMILY else FILE_CONFIG_CLASSES[family](**fields)
        data_config = None if family in TOKEN_FAMILIES else DataConfig(**json.loads(meta["data_config"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointFileError(f"{path}: malformed libra-jax metadata ({e})") from e
    params = {k: v.astype(np.float32) for k, v in _read_safetensors(path).items()}
    return LibraCheckpoint(config, data_config, params, meta.get("source", ""))


def _unwrap(state: Mapping) -> Mapping:
    """Strip the training-checkpoint wrappers timm strips ('model', 'state_dict', DDP 'module.')."""
    for key in ("model", "state_dict"):
        if isinstance(state.get(key), Mapping):
            state = state[key]
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _load_torch(path: Path) -> Mapping:
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"reading {path.name} needs PyTorch (pip install 'libra-jax[torch]' or pip install torch);"
            " a .safetensors checkpoint loads without it"
        ) from e
    try:
        # weights_only: tensors and plain containers only, never arbitrary pickled code.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointFileError(f"{path} could not be read as a weights-only torch checkpoint: {e}") from e
    if not isinstance(state, Mapping):
        raise CheckpointFileError(f"{path} holds a {type(state).__name__}, not a state dict")
    state = _unwrap(state)
    return {k: v.detach().float().numpy() for k, v in state.items() if isinstance(v, torch.Tensor)}


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A timm state dict from a `.safetensors` (torch-free) or `.pth/.pt/.bin` (via torch) file.

    Training wrappers ('model', 'state_dict', 'module.' prefixes) are removed; values are float32.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    if path.suffix == ".safetensors":
        state = _unwrap(_read_safetensors(path))
        return {k: np.asarray(v, dtype=np.float32) for k, v in state.items()}
    if path.suffix in TORCH_SUFFIXES:
        return _load_torch(path)
    raise CheckpointFileError(
        f"unknown checkpoint type {path.suffix!r} ({path}); expected .safetensors or {TORCH_SUFFIXES}"
    )
