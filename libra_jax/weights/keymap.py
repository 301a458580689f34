"""timm state dict ⇄ Flax params: a table-driven key mapping with a loud, readable diff.

A timm key maps to a Flax path by two table lookups: module path segments ('blocks.3.attn.qkv'
→ 'blocks_3/attn/qkv') and the parameter suffix rule (the last segment and the tensor rank
decide the Flax name and the layout change). Every key must land on a parameter the model
expects with the expected shape; anything else is reported, never silently dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import jax
import numpy as np
from flax import traverse_util

Params = dict


def match_rule(table: Sequence[tuple[str, str, object]], key: str) -> tuple[str, object] | None:
    """(renamed key, transform) of the first (regex, `re.sub` template, transform) rule of `table` whose regex
    matches the whole `key`; None when no rule does."""
    for pattern, replacement, transform in table:
        if re.fullmatch(pattern, key):
            return re.sub(f"^(?:{pattern})$", replacement, key), transform
    return None


class CheckpointMismatchError(ValueError):
    """Checkpoint and model disagree; the message lists every missing / unexpected / misshapen key."""


def _transpose(axes: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    return lambda a: np.transpose(a, axes)


# (timm leaf name, tensor rank) → (Flax leaf name, layout change)
SUFFIX_RULES: dict[tuple[str, int], tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    ("weight", 4): ("kernel", _transpose((2, 3, 1, 0))),  # conv OIHW → HWIO
    ("weight", 2): ("kernel", _transpose((1, 0))),  # Linear (out, in) → (in, out)
    ("weight", 1): ("scale", lambda a: a),  # norm γ
    ("bias", 1): ("bias", lambda a: a),
}

# timm module segments that are containers, whose child index joins with an underscore.
INDEXED_CONTAINERS = ("blocks",)

# timm wraps the patch-embed conv (ViT `patch_embed`, MLP-Mixer `stem`) in a `proj` submodule;
# our conv is the module itself.
MODULE_RENAMES = {"patch_embed.proj": "patch_embed", "stem.proj": "stem"}

# Parameters timm keeps on a parent module that ours keep in a child: BEiT / EVA / legacy DeiT-3
# LayerScale `gamma_1/2` (ours: `ls1/ls2` modules), BEiT / EVA q/v biases (ours: on the fused `qkv`
# projection, so that one bias probe covers them). timm leaf → (our child module, our leaf).
LEAF_RENAMES = {
    "gamma_1": ("ls1", "gamma"),
    "gamma_2": ("ls2", "gamma"),
    "q_bias": ("qkv", "q_bias"),
    "v_bias": ("qkv", "v_bias"),
}
# The q/v biases are exported under timm's name again (LayerScale keeps the `ls1.gamma` form timm's
# ViT uses, which its BEiT / EVA filters do not read, but ours does).
EXPORT_LEAVES = {"qkv/q_bias": "q_bias", "qkv/v_bias": "v_bias"}


def flatten(tree: Mapping) -> dict[str, object]:
    """Nested params → {'a/b/c': leaf}, the path strings checkpoint files and key diffs use."""
    return traverse_util.flatten_dict(tree, sep="/")


def unflatten(flat: Mapping[str, object]) -> dict:
    """{'a/b/c': leaf} → nested params (inverse of `flatten`)."""
    return traverse_util.unflatten_dict(flat, sep="/")


def timm_key_to_flax(key: str, ndim: int) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """Map one timm state-dict key to (Flax path, layout change)."""
    module, _, leaf = key.rpartition(".")
    for old, new in MODULE_RENAMES.items():
        if module == old or module.startswith(old + "."):
            module = new + module[len(old) :]
    if leaf in LEAF_RENAMES and not module.endswith("." + LEAF_RENAMES[leaf][0]):
        child, leaf = LEAF_RENAMES[leaf]
        module = f"{module}.{child}" if module else child
    parts = module.split(".") if module else []
    joined: list[str] = []
    for p in parts:
        if p.isdigit() and joined and joined[-1] in INDEXED_CONTAINERS:
            joined[-1] = f"{joined[-1]}_{p}"
        else:
            joined.append(p)
    name, fn = SUFFIX_RULES.get((leaf, ndim), (leaf, lambda a: a))
    return "/".join([*joined, name]), fn


def describe_diff(missing, unexpected, mismatched, source: str) -> str:
    """A readable report of a key diff (sorted, one key per line)."""
    lines = [f"checkpoint {source} does not match the model:"]
    if missing:
        lines.append(f"  missing from the checkpoint ({len(missing)}):")
        lines += [f"    - {k}" for k in sorted(missing)]
    if unexpected:
        lines.append(f"  unexpected in the checkpoint ({len(unexpected)}), not used by the model:")
        lines += [f"    + {k}" for k in sorted(unexpected)]
    if mismatched:
        lines.append(f"  shape mismatches ({len(mismatched)}):")
        lines += [f"    ~ {k}: checkpoint {c} vs model {m}" for k, c, m in sorted(mismatched)]
    return "\n".join(lines)


def timm_to_params(
    state_dict: Mapping[str, np.ndarray],
    expected: Mapping,
    *,
    source: str = "<state dict>",
    strict: bool = True,
) -> tuple[Params, list[str]]:
    """Convert a timm state dict to a Flax params tree matching `expected`.

    Args:
      state_dict: timm key → array (torch layout).
      expected: the model's params tree (arrays or ShapeDtypeStructs, e.g. from
        `jax.eval_shape(model.init, ...)['params']`).
      source: name of the checkpoint, for messages.
      strict: if False, unexpected checkpoint keys are returned as a list instead of raising
        (missing keys and shape mismatches always raise).
    Returns:
      (params, unexpected_keys) with params as float32 numpy arrays.
    Raises:
      CheckpointMismatchError listing every missing / unexpected / misshapen key.
    """
    want = flatten(expected)
    got: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}
    unexpected, mismatched = [], []
    for key, value in state_dict.items():
        value = np.asarray(value)
        path, fn = timm_key_to_flax(key, value.ndim)
        if path not in want:
            unexpected.append(key)
            continue
        value = fn(value)
        if tuple(value.shape) != tuple(want[path].shape):
            mismatched.append((f"{key} -> {path}", tuple(value.shape), tuple(want[path].shape)))
            continue
        got[path] = value.astype(np.float32)
        origin[path] = key
    missing = [p for p in want if p not in got]
    if missing or mismatched or (unexpected and strict):
        raise CheckpointMismatchError(describe_diff(missing, unexpected, mismatched, source))
    return unflatten(got), sorted(unexpected)


def check_params(flat: Mapping[str, np.ndarray], expected: Mapping, *, source: str) -> Params:
    """Flat Flax-layout params {'a/b/c': array} (a libra-jax file) → the params tree of `expected`.

    No key mapping or layout change: the file already holds the model's own parameters, so this
    only verifies that keys and shapes match exactly.
    Raises:
      CheckpointMismatchError listing every missing / unexpected / misshapen key.
    """
    want = flatten(expected)
    unexpected = [k for k in flat if k not in want]
    mismatched = [
        (k, tuple(v.shape), tuple(want[k].shape)) for k, v in flat.items() if k in want and v.shape != want[k].shape
    ]
    missing = [k for k in want if k not in flat]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(describe_diff(missing, unexpected, mismatched, source))
    return unflatten({k: np.asarray(v, dtype=np.float32) for k, v in flat.items()})


def params_to_timm(params: Mapping) -> dict[str, np.ndarray]:
    """Inverse of `timm_to_params` (Flax params → timm state dict), for exporting and tests."""
    inverse = {v: k for k, v in MODULE_RENAMES.items()}
    out = {}
    for path, value in flatten(params).items():
        value = np.asarray(jax.device_get(value))
        for ours, timm_leaf in EXPORT_LEAVES.items():
            if path.endswith("/" + ours):
                path = path[: -len(ours)] + timm_leaf
        *mods, leaf = path.split("/")
        mods = [".".join(m.rsplit("_", 1)) if m.rsplit("_", 1)[0] in INDEXED_CONTAINERS else m for m in mods]
        module = ".".join(mods)
        module = inverse.get(module, module)
        for (timm_leaf, ndim), (flax_leaf, _) in SUFFIX_RULES.items():
            if flax_leaf == leaf and ndim == value.ndim:
                leaf = timm_leaf
                if ndim == 4:
                    value = np.transpose(value, (3, 2, 0, 1))
                elif ndim == 2:
                    value = value.T
                break
        out[f"{module}.{leaf}"] = np.ascontiguousarray(value)
    return out
