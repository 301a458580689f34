"""`load_text_classifier`: a Hugging Face BERT / RoBERTa / DistilBERT classifier → (BertClassifier, params).

    model, params = load_text_classifier("textattack/bert-base-uncased-SST-2")        # HF Hub (cached)
    model, params = load_text_classifier("hf-hub:org/repo@rev")
    model, params = load_text_classifier("path/to/saved_model")                        # save_pretrained folder
    model, params = load_text_classifier("weights.safetensors", config="config.json")

The checkpoint's `config.json` (`model_type`) picks the family. DistilBERT's sinusoidal positions
(`sinusoidal_pos_embds`) are stored in its position table like learned ones, so both load the same way.
Weights come from `model.safetensors` (read without torch) or `pytorch_model.bin`
(`torch.load(weights_only=True)`). HF keys are renamed by a table (`KEY_TABLES`), the separate q/k/v
projections fused, and the result mapped onto the params with the strict, diffing `timm_to_params`
(missing / unexpected / misshapen keys raise `CheckpointMismatchError`, naming every one).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from libra_jax.image_text.keys import Table, fuse_qkv, rename
from libra_jax.models.bert import BertClassifier, BertConfig, param_shapes
from libra_jax.weights import hub
from libra_jax.weights.formats import read_state_dict
from libra_jax.weights.keymap import timm_to_params

CONFIG_FILE = "config.json"

ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
"""HF `hidden_act` / `activation` → libra-jax activation."""

BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
"""Non-parameter buffers some checkpoints store (after the family prefix): not weights, dropped."""

_EMBEDDINGS: Table = (
    (r"embeddings\.(word_embeddings|position_embeddings|token_type_embeddings)\.weight", r"\1", None),
    (r"embeddings\.LayerNorm\.(weight|bias)", r"embed_norm.\1", None),
)
_ENCODER = r"encoder\.layer\.(\d+)\."
_TRANSFORMER = r"transformer\.layer\.(\d+)\."
# q/k/v first become HF CLIP-style `self_attn.{q,k,v}_proj` so that `fuse_qkv` joins them into our `attn.qkv`.
KEY_TABLES: dict[str, Table] = {
    "bert": (
        *_EMBEDDINGS,
        (_ENCODER + r"attention\.self\.query\.(weight|bias)", r"blocks.\1.self_attn.q_proj.\2", None),
        (_ENCODER + r"attention\.self\.key\.(weight|bias)", r"blocks.\1.self_attn.k_proj.\2", None),
        (_ENCODER + r"attention\.self\.value\.(weight|bias)", r"blocks.\1.self_attn.v_proj.\2", None),
        (_ENCODER + r"attention\.output\.dense\.(weight|bias)", r"blocks.\1.attn.proj.\2", None),
        (_ENCODER + r"attention\.output\.LayerNorm\.(weight|bias)", r"blocks.\1.norm1.\2", None),
        (_ENCODER + r"intermediate\.dense\.(weight|bias)", r"blocks.\1.mlp.fc1.\2", None),
        (_ENCODER + r"output\.dense\.(weight|bias)", r"blocks.\1.mlp.fc2.\2", None),
        (_ENCODER + r"output\.LayerNorm\.(weight|bias)", r"blocks.\1.norm2.\2", None),
        (r"pooler\.dense\.(weight|bias)", r"pooler.\1", None),  # BERT pooler
        (r"classifier\.dense\.(weight|bias)", r"pooler.\1", None),  # RoBERTa head dense
        (r"classifier\.out_proj\.(weight|bias)", r"classifier.\1", None),  # RoBERTa head output
    ),
    "distilbert": (
        *_EMBEDDINGS,
        (_TRANSFORMER + r"attention\.([qkv])_lin\.(weight|bias)", r"blocks.\1.self_attn.\2_proj.\3", None),
        (_TRANSFORMER + r"attention\.out_lin\.(weight|bias)", r"blocks.\1.attn.proj.\2", None),
        (_TRANSFORMER + r"sa_layer_norm\.(weight|bias)", r"blocks.\1.norm1.\2", None),
        (_TRANSFORMER + r"ffn\.lin([12])\.(weight|bias)", r"blocks.\1.mlp.fc\2.\3", None),
        (_TRANSFORMER + r"output_layer_norm\.(weight|bias)", r"blocks.\1.norm2.\2", None),
        (r"pre_classifier\.(weight|bias)", r"pooler.\1", None),
    ),
}
KEY_TABLES["roberta"] = KEY_TABLES["bert"]
_FUSED: Table = ((r"blocks\.(\d+)\.self_attn\.qkv\.(weight|bias)", r"blocks.\1.attn.qkv.\2", None),)


def _num_classes(cfg: Mapping) -> int:
    if cfg.get("id2label"):
        return len(cfg["id2label"])
    return int(cfg.get("num_labels", 2))


def _activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r} in config.json; supported: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def config_from_hf(cfg: Mapping) -> BertConfig:
    """A `BertConfig` from an HF `config.json` dict (model_type bert / roberta / distilbert)."""
    family = cfg.get("model_type")
    if family in ("bert", "roberta"):
        return BertConfig(
            family=family,
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            num_layers=cfg["num_hidden_layers"],
            num_heads=cfg["num_attention_heads"],
            intermediate_size=cfg["intermediate_size"],
            max_positions=cfg["max_position_embeddings"],
            type_vocab_size=cfg.get("type_vocab_size", 2),
            act=_activation(cfg.get("hidden_act", "gelu")),
            norm_eps=cfg.get("layer_norm_eps", 1e-12),
            num_classes=_num_classes(cfg),
            pad_token_id=cfg.get("pad_token_id", 1 if family == "roberta" else 0) or 0,
        )
    if family == "distilbert":
        return BertConfig(
            family=family,
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["dim"],
            num_layers=cfg["n_layers"],
            num_heads=cfg["n_heads"],
            intermediate_size=cfg["hidden_dim"],
            max_positions=cfg["max_position_embeddings"],
            type_vocab_size=0,
            act=_activation(cfg.get("activation", "gelu")),
            norm_eps=1e-12,  # fixed in transformers' DistilBERT
            num_classes=_num_classes(cfg),
            pad_token_id=cfg.get("pad_token_id", 0) or 0,
        )
    raise ValueError(
        f"config.json has model_type {family!r}; text classifiers supported: bert, roberta, distilbert"
        " (a *ForSequenceClassification checkpoint)"
    )


def convert(state: Mapping[str, np.ndarray], family: str) -> dict[str, np.ndarray]:
    """HF state dict (with or without the 'bert.' / 'roberta.' / 'distilbert.' prefix) → our timm-style keys."""
    prefix = f"{family}."
    state = {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}
    state = {k: v for k, v in state.items() if k not in BUFFERS}
    return rename(fuse_qkv(rename(state, KEY_TABLES[family])), _FUSED)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the model config {path}: {e}") from e


def _from_directory(path: Path) -> tuple[dict, Path]:
    if not (path / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{path} has no {CONFIG_FILE}; is it a save_pretrained folder?")
    for filename in hub.WEIGHT_FILES:
        if (path / filename).is_file():
            return _read_json(path / CONFIG_FILE), path / filename
    raise FileNotFoundError(f"{path} has {CONFIG_FILE} but no weights ({' or '.join(hub.WEIGHT_FILES)})")


def load_text_classifier(
    name_or_path: str | os.PathLike,
    *,
    config: str | os.PathLike | Mapping | None = None,
    strict: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[BertClassifier, dict]:
    """Build a `BertClassifier` and load its weights.

    Args:
      name_or_path: an HF repo ('org/repo', 'hf-hub:org/repo@rev'; HF_HUB_OFFLINE, HF_HUB_CACHE and the
        local cache are honoured), a `save_pretrained` folder, or a weights file (with `config`).
      config: the HF config.json (path or dict) for a weights file.
      strict: if False, unexpected checkpoint keys (e.g. a pre-training head) are dropped with a warning
        instead of raising. Missing keys and shape mismatches always raise.
      cache_dir: HF cache directory.
    Returns:
      (model, params): params a nested dict of float32 jax arrays.
    """
    name = os.fspath(name_or_path)
    ref = hub.repo_ref(name)
    if ref is not None:
        cfg = hub.fetch_config(ref, cache_dir)
        weights = hub.fetch_weights(ref, cache_dir)
        description = f"hf-hub:{ref.repo_id}"
    elif Path(name).is_dir():
        cfg, weights = _from_directory(Path(name))
        description = name
    else:
        if config is None:
            raise ValueError(f"{name!r} is a weights file: pass config=<its HF config.json>")
        cfg = dict(config) if isinstance(config, Mapping) else _read_json(Path(config))
        weights, description = Path(name), name
    model = BertClassifier(config_from_hf(cfg))
    return model, convert_weights(model, read_state_dict(weights), description=description, strict=strict)


def convert_weights(model: BertClassifier, state: Mapping[str, np.ndarray], *, description: str, strict: bool = True):
    """The params of `model` from an HF state dict (strict key diff, see the module docstring)."""
    expected = param_shapes(model)
    params, unexpected = timm_to_params(
        convert(state, model.config.family), expected, source=description, strict=strict
    )
    if unexpected:
        warnings.warn(
            f"{description}: dropped {len(unexpected)} unused checkpoint keys: {', '.join(unexpected)}", stacklevel=2
        )
    return jax.tree.map(jnp.asarray, params)
