"""Decoder LMs from Hugging Face checkpoints, torch-free: config.json → `DecoderConfig`, safetensors (one
file or sharded with `model.safetensors.index.json`) → Flax params by the `transformers` key names.

    model, params = load_decoder("Qwen/Qwen2.5-0.5B")      # hub name (HF_HUB_OFFLINE and the cache apply)
    model, params = load_decoder("/path/to/saved_model")   # a `save_pretrained` folder

The key map is a table of regular expressions; any checkpoint key it does not place, and any parameter
left unfilled or of the wrong shape, is reported key by key.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import jax
import numpy as np

from libra_jax.models.decoder import Decoder, DecoderConfig
from libra_jax.models.rope1d import RopeScaling
from libra_jax.models.text_inputs import text_inputs
from libra_jax.weights import hub
from libra_jax.weights.keymap import describe_diff, flatten, match_rule, unflatten

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


Transform = Callable[[np.ndarray], np.ndarray]
_T: Transform = np.transpose
_KEEP: Transform = np.asarray

LLAMA_KEYS: tuple[tuple[str, str, Transform], ...] = (
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
"""(transformers key regex, Flax path template, layout change) of the Llama layout: torch Linear (out, in) →
kernel (in, out)."""

GEMMA_KEYS = (
    (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", r"blocks_\1/attn_out_norm/scale", _KEEP),
    (r"model\.layers\.(\d+)\.pre_feedforward_layernorm\.weight", r"blocks_\1/norm2/scale", _KEEP),
    (r"model\.layers\.(\d+)\.post_feedforward_layernorm\.weight", r"blocks_\1/mlp_out_norm/scale", _KEEP),
    *LLAMA_KEYS,
)
"""Gemma 2/3: sandwich norms (its post_attention_layernorm normalises the attention output); first match wins."""

_GPT2 = r"(?:transformer\.)?"  # hub GPT-2 files omit the `transformer.` prefix that save_pretrained writes
GPT2_KEYS = (
    (_GPT2 + r"wte\.weight", "embed_tokens", _KEEP),
    (_GPT2 + r"wpe\.weight", "embed_positions", _KEEP),
    (_GPT2 + r"h\.(\d+)\.ln_([12])\.weight", r"blocks_\1/norm\2/scale", _KEEP),
    (_GPT2 + r"h\.(\d+)\.ln_([12])\.bias", r"blocks_\1/norm\2/bias", _KEEP),
    # Conv1D stores (in, out): already the kernel layout.
    (_GPT2 + r"h\.(\d+)\.attn\.c_attn\.weight", r"blocks_\1/attn/qkv/kernel", _KEEP),
    (_GPT2 + r"h\.(\d+)\.attn\.c_attn\.bias", r"blocks_\1/attn/qkv/bias", _KEEP),
    (_GPT2 + r"h\.(\d+)\.attn\.c_proj\.weight", r"blocks_\1/attn/o_proj/kernel", _KEEP),
    (_GPT2 + r"h\.(\d+)\.attn\.c_proj\.bias", r"blocks_\1/attn/o_proj/bias", _KEEP),
    (_GPT2 + r"h\.(\d+)\.mlp\.c_fc\.weight", r"blocks_\1/mlp/fc1/kernel", _KEEP),
    (_GPT2 + r"h\.(\d+)\.mlp\.c_fc\.bias", r"blocks_\1/mlp/fc1/bias", _KEEP),
    (_GPT2 + r"h\.(\d+)\.mlp\.c_proj\.weight", r"blocks_\1/mlp/fc2/kernel", _KEEP),
    (_GPT2 + r"h\.(\d+)\.mlp\.c_proj\.bias", r"blocks_\1/mlp/fc2/bias", _KEEP),
    (_GPT2 + r"ln_f\.weight", "norm/scale", _KEEP),
    (_GPT2 + r"ln_f\.bias", "norm/bias", _KEEP),
    (r"lm_head\.weight", "lm_head/kernel", _T),
)
GPT2_BUFFERS = (_GPT2 + r"h\.\d+\.attn\.(bias|masked_bias)",)
"""Causal-mask buffers that old GPT-2 files store; not parameters."""


def _rope(params: Mapping, cfg: Mapping) -> tuple[float, RopeScaling]:
    """(θ, scaling) from one transformers ≥ 5 `rope_parameters` dict or the older `rope_theta` + `rope_scaling`."""
    theta = float(params.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    kind = params.get("rope_type", params.get("type", "default"))
    fields = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    return theta, RopeScaling(kind, **{k: params[k] for k in fields if k in params})


def _llama(cfg: Mapping) -> dict:
    theta, scaling = _rope(dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}), cfg)
    bias = bool(cfg.get("attention_bias", False))
    return {
        "rope_theta": theta,
        "rope_scaling": scaling,
        "qkv_bias": bias,
        "o_bias": bias,
        "mlp_bias": bool(cfg.get("mlp_bias", False)),
    }


def _gemma(cfg: Mapping, pattern: int) -> dict:
    """Gemma 2 / 3 fields; configs without `layer_types` make every `pattern`-th layer global (transformers'
    default: Gemma 2 alternates, Gemma 3 has `sliding_window_pattern`, 6)."""
    params = dict(cfg.get("rope_parameters") or {})
    if "full_attention" in params:  # transformers ≥ 5: one RoPE per layer type
        theta, scaling = _rope(params["full_attention"], cfg)
        local = _rope(params.get("sliding_attention", params["full_attention"]), cfg)
    else:
        theta, scaling = _rope(params or dict(cfg.get("rope_scaling") or {}), cfg)
        local = (float(cfg.get("rope_local_base_freq", theta)), RopeScaling())
    layer_types = cfg.get("layer_types") or [
        "sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(cfg["num_hidden_layers"])
    ]
    return {
        **_llama(cfg),
        "rope_theta": theta,
        "rope_scaling": scaling,
        "local_rope_theta": local[0],
        "local_rope_scaling": local[1],
        "norm_offset": 1.0,
        "embed_scale": True,
        "sandwich_norms": True,
        "attn_scale": float(cfg["query_pre_attn_scalar"]) ** -0.5,
        "attn_softcap": cfg.get("attn_logit_softcapping"),
        "final_softcap": cfg.get("final_logit_softcapping"),
        "sliding_window": cfg.get("sliding_window"),
        "layer_types": tuple(layer_types),
        "tie_embeddings": bool(cfg.get("tie_word_embeddings", True)),
    }


def _gpt2(cfg: Mapping) -> dict:
    if cfg.get("scale_attn_by_inverse_layer_idx"):
        raise ValueError("GPT-2 with scale_attn_by_inverse_layer_idx=true is not supported")
    c, heads = cfg["n_embd"], cfg["n_head"]
    return {
        "hidden_size": c,
        "num_layers": cfg["n_layer"],
        "num_heads": heads,
        "num_kv_heads": heads,
        "head_dim": c // heads,
        "intermediate_size": cfg.get("n_inner") or 4 * c,
        "act": cfg.get("activation_function", "gelu_new"),
        "norm_eps": cfg.get("layer_norm_epsilon", 1e-5),
        "max_positions": cfg.get("n_positions", 1024),
        "norm": "layer",
        "positions": "learned",
        "fused_qkv": True,
        "gated_mlp": False,
        "qkv_bias": True,
        "o_bias": True,
        "mlp_bias": True,
        "attn_scale": None if cfg.get("scale_attn_weights", True) else 1.0,
        "tie_embeddings": bool(cfg.get("tie_word_embeddings", True)),
    }


@dataclasses.dataclass(frozen=True)
class Family:
    """How one transformers `model_type` maps: config fields beyond the shared ones, key table, ignored keys."""

    fields: Callable[[Mapping], dict]
    keys: tuple[tuple[str, str, Transform], ...] = LLAMA_KEYS
    ignored: tuple[str, ...] = ()


FAMILIES: dict[str, Family] = {
    "llama": Family(_llama),
    "mistral": Family(lambda cfg: {**_llama(cfg), "sliding_window": cfg.get("sliding_window")}),
    "qwen2": Family(lambda cfg: {**_llama(cfg), "qkv_bias": True, "o_bias": False}),
    "qwen3": Family(lambda cfg: {**_llama(cfg), "qk_norm": True}),
    "gemma2": Family(lambda cfg: _gemma(cfg, 2), GEMMA_KEYS),
    "gemma3_text": Family(
        lambda cfg: {**_gemma(cfg, cfg.get("sliding_window_pattern", 6)), "qk_norm": True}, GEMMA_KEYS
    ),
    "gpt2": Family(_gpt2, GPT2_KEYS, GPT2_BUFFERS),
}
"""transformers model_type → its `Family`."""


def family_of(cfg: Mapping) -> Family:
    """The `Family` of a config.json; ValueError naming the supported ones for any other model_type."""
    family = cfg.get("model_type")
    if family not in FAMILIES:
        raise ValueError(
            f"unsupported decoder model_type {family!r} in config.json; supported: {sorted(FAMILIES)}"
            " (other architectures need their own key table and config mapping)"
        )
    return FAMILIES[family]


def config_from_hf(cfg: Mapping) -> DecoderConfig:
    """A transformers decoder config.json (dict) → `DecoderConfig`; ValueError for an unknown model_type."""
    fields = family_of(cfg).fields(cfg)
    if cfg.get("use_sliding_window"):
        raise ValueError(
            f"{cfg['model_type']} with use_sliding_window=true (per-layer windows from max_window_layers) is not"
            " supported"
        )
    act = fields.pop("act", cfg.get("hidden_activation") or cfg.get("hidden_act", "silu"))
    if act not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {act!r}; supported: {sorted(ACTIVATIONS)}")
    heads = cfg.get("num_attention_heads")
    shared = {}
    if "hidden_size" not in fields:  # the Llama-style names
        shared = dict(
            hidden_size=cfg["hidden_size"],
            num_layers=cfg["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=cfg.get("num_key_value_heads") or heads,
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
            intermediate_size=cfg["intermediate_size"],
            norm_eps=cfg.get("rms_norm_eps", 1e-6),
            max_positions=cfg.get("max_position_embeddings", 2048),
        )
    return DecoderConfig(
        **{
            "family": cfg["model_type"],
            "vocab_size": cfg["vocab_size"],
            "act": ACTIVATIONS[act],
            "tie_embeddings": bool(cfg.get("tie_word_embeddings", False)),
            **shared,
            **fields,
        }
    )


def convert(
    model: Decoder, state: Mapping[str, np.ndarray], *, source: str, strict: bool = True, dtype: str | None = None
) -> dict:
    """transformers state dict (numpy) → the params tree of `model`, every param in `dtype` (None: float32).

    Raises ValueError listing every missing, unexpected and mis-shaped key (`strict=False`: only missing
    or mis-shaped ones). A tied model ignores a stored `lm_head.weight` (the embedding serves as head), and
    the family's known non-parameter buffers are skipped.
    """
    want = flatten(jax.eval_shape(model.init, jax.random.PRNGKey(0), text_inputs(np.zeros((1,), np.int32)))["params"])
    family = FAMILIES[model.config.family]
    params, unexpected, mismatched = {}, [], []
    for key, value in state.items():
        if (key == "lm_head.weight" and model.config.tie_embeddings) or any(
            re.fullmatch(p, key) for p in family.ignored
        ):
            continue
        placed = match_rule(family.keys, key)
        if placed is None or placed[0] not in want:
            unexpected.append(key)
            continue
        path, transform = placed
        value = transform(np.asarray(value))
        if tuple(value.shape) != tuple(want[path].shape):
            mismatched.append((path, tuple(value.shape), tuple(want[path].shape)))
            continue
        params[path] = value.astype(dtype or want[path].dtype)
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


def _from_hub(ref: hub.HubRef, cache_dir) -> tuple[dict, list[Path]]:
    cfg = hub.fetch_config(ref, cache_dir)
    index = hub.fetch_config(ref, cache_dir, required=False, filename=INDEX_FILE)
    if index is None:
        return cfg, [hub.fetch_weights(ref, cache_dir, filenames=(WEIGHTS_FILE,))]
    return cfg, [hub.fetch(ref, s, cache_dir) for s in _shards(index, ref.repo_id)]


def load_decoder(
    name: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    strict: bool = True,
    remat: bool = False,
    dtype: str | None = None,
) -> tuple[Decoder, dict]:
    """(model, params) from a `save_pretrained` folder or a hub name ('org/name[@rev]', 'hf-hub:org/name').

    Hub files come through huggingface_hub (HF_HUB_OFFLINE, HF_HUB_CACHE and `cache_dir` apply). `remat`:
    recompute block activations in the backward (`Decoder.remat`). `dtype` (e.g. "bfloat16"): params stored in
    it (a bf16 checkpoint stays bf16) and the model computing in it (`Decoder.dtype`); None: float32 throughout.
    """
    path = Path(name)
    ref = None if path.is_dir() else hub.repo_ref(str(name))
    if not path.is_dir() and ref is None:
        raise ValueError(f"{name}: a decoder loads from a folder (config.json + safetensors) or a hub name, not a file")
    cfg, files = _from_folder(path) if ref is None else _from_hub(ref, cache_dir)
    model = Decoder(config_from_hf(cfg), remat=remat, dtype=dtype)
    return model, convert(model, read_safetensors(files), source=str(name), strict=strict, dtype=dtype)
