"""Decoder LMs from Hugging Face checkpoints, torch-free: config.json → `DecoderConfig`, safetensors (one
file or sharded with `model.safetensors.index.json`) → Flax params by the `transformers` key names.

    model, params = load_decoder("Qwen/Qwen2.5-0.5B")      # hub name (HF_HUB_OFFLINE and the cache apply)
    model, params = load_decoder("/path/to/saved_model")   # a `save_pretrained` folder

The key map is a table of regular expressions; any checkpoint key it does not place, and any parameter
left unfilled or of the wrong shape, is reported key by key.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import jax
import numpy as np

from libra_jax import hub
from libra_jax.checkpoint import describe_diff, flatten, unflatten
from libra_jax.models.decoder import Decoder, DecoderConfig, decoder_inputs
from libra_jax.models.rope1d import RopeScaling

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

ACTIVATIONS = {
    "silu": "silu",
    "swish": "silu",
    "gelu": "gelu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
}
"""transformers `hidden_act` → libra activation name."""


def _llama_biases(cfg: Mapping) -> dict:
    bias = bool(cfg.get("attention_bias", False))
    return {"qkv_bias": bias, "o_bias": bias, "mlp_bias": bool(cfg.get("mlp_bias", False))}


FAMILIES: dict[str, Callable[[Mapping], dict]] = {
    "llama": _llama_biases,
    "mistral": lambda cfg: {"sliding_window": cfg.get("sliding_window")},
    "qwen2": lambda cfg: {"qkv_bias": True},
    "qwen3": lambda cfg: {**_llama_biases(cfg), "mlp_bias": False, "qk_norm": True},
}
"""model_type → the family's config fields beyond the shared Llama ones."""

Transform = Callable[[np.ndarray], np.ndarray]
_T: Transform = np.transpose
_KEEP: Transform = np.asarray

KEY_TABLE: tuple[tuple[str, str, Transform], ...] = (
    (r"model\.embed_tokens\.weight", "embed_tokens", _KEEP),
    (r"model\.layers\.(\d+)\.self_attn\.([qkvo])_proj\.weight", r"blocks_\1/attn/\2_proj/kernel", _T),
    (r"model\.layers\.(\d+)\.self_attn\.([qkvo])_proj\.bias", r"blocks_\1/attn/\2_proj/bias", _KEEP),
    (r"model\.layers\.(\d+)\.self_attn\.([qk])_norm\.weight", r"blocks_\1/attn/\2_norm/scale", _KEEP),
    (r"model\.layers\.(\d+)\.input_layernorm\.weight", r"blocks_\1/norm1/scale", _KEEP),
    (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", r"blocks_\1/norm2/scale", _KEEP),
    (r"model\.layers\.(\d+)\.mlp\.gate_proj\.weight", r"blocks_\1/mlp/fc1_g/kernel", _T),
    (r"model\.layers\.(\d+)\.mlp\.up_proj\.weight", r"blocks_\1/mlp/fc1_x/kernel", _T),
    (r"model\.layers\.(\d+)\.mlp\.down_proj\.weight", r"blocks_\1/mlp/fc2/kernel", _T),
    (r"model\.layers\.(\d+)\.mlp\.gate_proj\.bias", r"blocks_\1/mlp/fc1_g/bias", _KEEP),
    (r"model\.layers\.(\d+)\.mlp\.up_proj\.bias", r"blocks_\1/mlp/fc1_x/bias", _KEEP),
    (r"model\.layers\.(\d+)\.mlp\.down_proj\.bias", r"blocks_\1/mlp/fc2/bias", _KEEP),
    (r"model\.norm\.weight", "norm/scale", _KEEP),
    (r"lm_head\.weight", "lm_head/kernel", _T),
)
"""(transformers key regex, Flax path template, layout change): torch Linear (out, in) → kernel (in, out)."""


def _rope(cfg: Mapping) -> tuple[float, RopeScaling]:
    """(θ, scaling) from transformers ≥ 5 `rope_parameters` or the older `rope_theta` + `rope_scaling`."""
    params = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    theta = float(params.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    kind = params.get("rope_type", params.get("type", "default"))
    fields = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    return theta, RopeScaling(kind, **{k: params[k] for k in fields if k in params})


def config_from_hf(cfg: Mapping) -> DecoderConfig:
    """A transformers decoder config.json (dict) → `DecoderConfig`; ValueError for an unknown model_type."""
    family = cfg.get("model_type")
    if family not in FAMILIES:
        raise ValueError(
            f"unsupported decoder model_type {family!r} in config.json; supported: {sorted(FAMILIES)}"
            " (other architectures need their own key table and config mapping)"
        )
    if cfg.get("use_sliding_window"):
        raise ValueError(
            f"{family} with use_sliding_window=true (per-layer windows from max_window_layers) is not supported"
        )
    act = cfg.get("hidden_act", "silu")
    if act not in ACTIVATIONS:
        raise ValueError(f"unsupported hidden_act {act!r}; supported: {sorted(ACTIVATIONS)}")
    theta, scaling = _rope(cfg)
    heads = cfg["num_attention_heads"]
    return DecoderConfig(
        family=family,
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        num_layers=cfg["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=cfg.get("num_key_value_heads") or heads,
        head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
        intermediate_size=cfg["intermediate_size"],
        act=ACTIVATIONS[act],
        norm_eps=cfg.get("rms_norm_eps", 1e-6),
        rope_theta=theta,
        rope_scaling=scaling,
        max_positions=cfg.get("max_position_embeddings", 2048),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        **FAMILIES[family](cfg),
    )


def _flax_key(key: str) -> tuple[str, Transform] | None:
    for pattern, template, transform in KEY_TABLE:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, template, key), transform
    return None


def convert(model: Decoder, state: Mapping[str, np.ndarray], *, source: str, strict: bool = True) -> dict:
    """transformers state dict (numpy) → the params tree of `model`.

    Raises ValueError listing every missing, unexpected and mis-shaped key (`strict=False`: only missing
    or mis-shaped ones). A tied model ignores a stored `lm_head.weight` (the embedding serves as head).
    """
    want = flatten(
        jax.eval_shape(model.init, jax.random.PRNGKey(0), decoder_inputs(np.zeros((1,), np.int32)))["params"]
    )
    params, unexpected, mismatched = {}, [], []
    for key, value in state.items():
        if key == "lm_head.weight" and model.config.tie_embeddings:
            continue
        placed = _flax_key(key)
        if placed is None or placed[0] not in want:
            unexpected.append(key)
            continue
        path, transform = placed
        value = transform(np.asarray(value))
        if tuple(value.shape) != tuple(want[path].shape):
            mismatched.append((path, tuple(value.shape), tuple(want[path].shape)))
            continue
        params[path] = value.astype(want[path].dtype)
    missing = sorted(set(want) - set(params) - {m[0] for m in mismatched})
    if missing or mismatched or (strict and unexpected):
        raise ValueError(describe_diff(missing, unexpected if strict else [], mismatched, source))
    return unflatten(params)


def read_safetensors(paths: list[Path]) -> dict[str, np.ndarray]:
    """Every tensor of the given safetensors files as numpy (bfloat16 as ml_dtypes.bfloat16)."""
    from safetensors import safe_open

    state = {}
    for path in paths:
        with safe_open(str(path), framework="flax") as f:
            state.update({k: np.asarray(f.get_tensor(k)) for k in f.keys()})  # noqa: SIM118 (safe_open is not a dict)
    return state


def _shards(index: Mapping, where: str) -> list[str]:
    if "weight_map" not in index:
        raise ValueError(f"{INDEX_FILE} of {where} has no 'weight_map'")
    return sorted(set(index["weight_map"].values()))


def _from_folder(path: Path) -> tuple[dict, list[Path]]:
    if not (path / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{path} has no {CONFIG_FILE}: pass a save_pretrained folder or a hub name")
    cfg = json.loads((path / CONFIG_FILE).read_text())
    if (path / INDEX_FILE).is_file():
        return cfg, [path / s for s in _shards(json.loads((path / INDEX_FILE).read_text()), str(path))]
    if (path / WEIGHTS_FILE).is_file():
        return cfg, [path / WEIGHTS_FILE]
    raise FileNotFoundError(f"{path} has {CONFIG_FILE} but neither {WEIGHTS_FILE} nor {INDEX_FILE}")


def _hub_ref(name: str) -> hub.HubRef:
    ref = hub.parse_hub_name(name)
    if ref is not None:
        return ref
    repo, _, revision = name.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ValueError(f"{name!r} is neither a local folder nor a hub name 'org/name[@revision]'")
    return hub.HubRef(repo, revision or None)


def _from_hub(ref: hub.HubRef, cache_dir) -> tuple[dict, list[Path]]:
    cfg = hub.fetch_config(ref, cache_dir)
    index = hub.fetch_config(ref, cache_dir, required=False, filename=INDEX_FILE)
    if index is None:
        return cfg, [hub.fetch_weights(ref, cache_dir, filenames=(WEIGHTS_FILE,))]
    return cfg, [hub.fetch(ref, s, cache_dir) for s in _shards(index, ref.repo_id)]


def load_decoder(
    name: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None, strict: bool = True
) -> tuple[Decoder, dict]:
    """(model, params) from a `save_pretrained` folder or a hub name ('org/name[@rev]', 'hf-hub:org/name').

    Hub files come through huggingface_hub (HF_HUB_OFFLINE, HF_HUB_CACHE and `cache_dir` apply).
    """
    path = Path(name)
    cfg, files = _from_folder(path) if path.is_dir() else _from_hub(_hub_ref(str(name)), cache_dir)
    model = Decoder(config_from_hf(cfg))
    return model, convert(model, read_safetensors(files), source=str(name), strict=strict)
