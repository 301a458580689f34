"""Table-driven renaming of upstream state dicts to the `ImageTextModel` layout.

A table is a sequence of (regex, replacement, transform) rules. The first rule whose regex matches a
whole key renames it (`re.sub` template) and transforms its value (layout changes); keys no rule
matches are kept unchanged, so that `timm_to_params` reports them as unexpected (nothing is
dropped silently). The renamed keys are timm-style dotted names of our modules in torch layout
('blocks.0.attn.qkv.weight', 'text.blocks.0.mlp.fc1.bias', 'proj.weight'), which
`libra_jax.weights.keymap.timm_to_params` maps onto the params tree with its loud diff.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from libra_jax.weights.keymap import match_rule

Transform = Callable[[np.ndarray], np.ndarray] | None
Table = Sequence[tuple[str, str, Transform]]


def as_tokens(a: np.ndarray) -> np.ndarray:
    """(C,) or (N, C) → (1, 1, C) / (1, N, C): a class / position embedding as timm stores it."""
    return a.reshape(1, -1, a.shape[-1])


def transpose(a: np.ndarray) -> np.ndarray:
    """An `x @ W` matrix (in, out) → torch Linear layout (out, in)."""
    return np.ascontiguousarray(a.T)


def scalar(a: np.ndarray) -> np.ndarray:
    """A (1,)-shaped or scalar parameter (HF SigLIP logit_scale/bias) → shape ()."""
    return a.reshape(())


# Inside a transformer block: open_clip `ResidualAttentionBlock` / HF `CLIPEncoderLayer` names → ours.
BLOCK_RENAMES: Table = (
    (r"ln_1\.(weight|bias)", r"norm1.\1", None),
    (r"ln_2\.(weight|bias)", r"norm2.\1", None),
    (r"layer_norm1\.(weight|bias)", r"norm1.\1", None),
    (r"layer_norm2\.(weight|bias)", r"norm2.\1", None),
    (r"attn\.in_proj_(weight|bias)", r"attn.qkv.\1", None),
    (r"(?:attn|self_attn)\.out_proj\.(weight|bias)", r"attn.proj.\1", None),
    (r"self_attn\.qkv\.(weight|bias)", r"attn.qkv.\1", None),  # HF q/k/v fused by `fuse_qkv`
    (r"mlp\.c_fc\.(weight|bias)", r"mlp.fc1.\1", None),
    (r"mlp\.c_proj\.(weight|bias)", r"mlp.fc2.\1", None),
    (r"mlp\.(fc[12])\.(weight|bias)", r"mlp.\1.\2", None),
    (r"ls_([12])\.gamma", r"ls\1.gamma", None),
)


def blocks(prefix: str, target: str) -> Table:
    """Rules mapping `<prefix>.<i>.<block key>` to `<target>.<i>.<our block key>`."""
    return tuple(
        (rf"{re.escape(prefix)}\.(\d+)\.{pattern}", rf"{target}.\1.{_shift(replacement)}", fn)
        for pattern, replacement, fn in BLOCK_RENAMES
    )


def _shift(replacement: str) -> str:
    """Renumber the groups of a block-level replacement by one (group 1 is the block index)."""
    return re.sub(r"\\(\d)", lambda m: f"\\{int(m.group(1)) + 1}", replacement)


def rename(state: Mapping[str, np.ndarray], table: Table) -> dict[str, np.ndarray]:
    """Rename (and re-lay-out) every key of `state` by `table`; unmatched keys are kept as they are."""
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        hit = match_rule(table, key)
        new, fn = hit if hit is not None else (key, None)
        if new in out:
            raise ValueError(f"two checkpoint keys map to {new!r} (the second is {key!r})")
        value = np.asarray(value)
        out[new] = fn(value) if fn is not None else value
    return out


def fuse_qkv(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """HF separate `self_attn.{q,k,v}_proj.{weight,bias}` → one `self_attn.qkv.*` = [q; k; v] (timm layout).

    An incomplete triple is left as it is (and then reported as unexpected keys).
    """
    out = dict(state)
    pattern = re.compile(r"(.*)\.self_attn\.([qkv])_proj\.(weight|bias)")
    groups: dict[tuple[str, str], dict[str, str]] = {}
    for key in state:
        m = pattern.fullmatch(key)
        if m:
            groups.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = key
    for (stem, leaf), parts in groups.items():
        if set(parts) == {"q", "k", "v"}:
            out[f"{stem}.self_attn.qkv.{leaf}"] = np.concatenate([np.asarray(state[parts[p]]) for p in "qkv"])
            for key in parts.values():
                del out[key]
    return out


def split_in_proj(state: Mapping[str, np.ndarray], prefix: str, target: str) -> dict[str, np.ndarray]:
    """A MAP head's `nn.MultiheadAttention` `in_proj_{weight,bias}` = [W_q; W_k; W_v] → timm `q` and `kv`."""
    out = dict(state)
    for leaf in ("weight", "bias"):
        key = f"{prefix}.in_proj_{leaf}"
        if key in out:
            value = np.asarray(out.pop(key))
            c = value.shape[0] // 3
            out[f"{target}.q.{leaf}"], out[f"{target}.kv.{leaf}"] = value[:c], value[c:]
    return out
