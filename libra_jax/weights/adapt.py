"""Adapt a timm state dict to the model it is loaded into (the cheap part of timm's `checkpoint_filter_fn`).

Handled, as timm does for the ViT families:
  * 'pre_logits.*' dropped; buffers older BEiT / EVA checkpoints carry and ours compute
    ('*.relative_position_index', EVA 'rope.*') dropped; EVA masked-image-modelling checkpoints
    ('mask_token' present): 'mask_token' and 'lm_head.*' dropped, 'norm.*' moved to 'fc_norm.*';
  * a flattened (O, C·p·p) patch-embed weight is reshaped to the conv layout;
  * patch-embed kernel of another size → FlexiViT pseudo-inverse resize (`resample_patch_embed`);
  * pos_embed of another grid → resized (`resample_abs_pos_embed`), prefix slots kept as they are;
  * when the caller overrides num_classes: a classifier of another size is dropped and re-initialised
    (timm's `pretrained=True, num_classes=K`); when the caller overrides global_pool away from
    'map': the MAP head ('attn_pool.*') is dropped (timm loads SigLIP non-strictly for that).
Anything else that does not fit is left for `timm_to_params` to report.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping

import jax
import numpy as np

from libra_jax.models.config import ModelConfig
from libra_jax.models.layers import default_kernel_init
from libra_jax.weights.resize import interpolation_matrix, resize

HEADS = ("head", "head_dist")


def resample_patch_embed(
    kernel: np.ndarray, new_size: tuple[int, int], method: str = "bicubic", antialias: bool = True
) -> np.ndarray:
    """FlexiViT patch-embed resize: (O, C, h, w) torch-layout kernel → (O, C, H, W).

    With R the (H·W, h·w) matrix that resizes a patch (h, w) → (H, W), the new kernel is
    w·pinv(R): then ⟨w', resize(x)⟩ = ⟨w, x⟩ for every patch x in R's row space, so a resized
    image gives the same tokens (exactly when upsampling). R = M_h ⊗ M_w is separable, so
    pinv(R) = pinv(M_h) ⊗ pinv(M_w) and the kernel maps as pinv(M_h)ᵀ · w · pinv(M_w).
    """
    h, w = kernel.shape[-2:]
    if (h, w) == tuple(new_size):
        return kernel
    ph = np.linalg.pinv(interpolation_matrix(h, new_size[0], method, antialias))  # (h, H)
    pw = np.linalg.pinv(interpolation_matrix(w, new_size[1], method, antialias))  # (w, W)
    return (ph.T @ kernel.astype(np.float64) @ pw).astype(np.float32)


def resample_pos_embed(
    pos_embed: np.ndarray,
    new_grid: tuple[int, int],
    old_grid: tuple[int, int],
    num_prefix_tokens: int,
    method: str = "bicubic",
    antialias: bool = True,
) -> np.ndarray:
    """Resize the grid part of a (1, prefix + gh·gw, C) position embedding; prefix slots are kept."""
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    c = grid.shape[-1]
    grid = grid.reshape(old_grid[0], old_grid[1], c).transpose(2, 0, 1).astype(np.float32)
    grid = resize(grid, new_grid, method, antialias).transpose(1, 2, 0).reshape(1, -1, c)
    return np.concatenate([prefix, grid], axis=1).astype(np.float32)


def source_grid(num_tokens: int, source_img_size: tuple[int, int], kernel_size: tuple[int, int] | None):
    """The checkpoint's pos-embed grid if its source image and kernel sizes account for every token
    (timm's `get_pretrained_grid_size`), else None."""
    if kernel_size is None:
        return None
    grid = (source_img_size[0] // kernel_size[0], source_img_size[1] // kernel_size[1])
    return grid if grid[0] * grid[1] == num_tokens else None


def square_grid(num_tokens: int) -> tuple[int, int]:
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(
            f"cannot infer the position-embedding grid of the checkpoint: {num_tokens} patch positions"
            " is not a square and does not match the source image size; load with the checkpoint's img_size"
        )
    return side, side


def _fresh_head(config: ModelConfig, seed: int) -> dict[str, np.ndarray]:
    """timm-layout head weights initialised like our Linear (truncated normal 0.02, zero bias)."""
    kernel = default_kernel_init(jax.random.key(seed), (config.embed_dim, config.num_classes))
    return {"weight": np.asarray(kernel).T.copy(), "bias": np.zeros(config.num_classes, np.float32)}


def adapt_state_dict(
    state: Mapping[str, np.ndarray],
    config: ModelConfig,
    *,
    source_img_size: tuple[int, int],
    resample: tuple[str, bool] = ("bicubic", True),
    overrides: Collection[str] = (),
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Make a timm state dict fit `config`.

    Args:
      state: timm key → array (torch layout).
      config: the model being loaded into.
      source_img_size: image size the checkpoint was trained at (to recognise non-square grids).
      resample: (interpolation, antialias) for the pos / patch embed resizes.
      overrides: config fields the caller set explicitly (gates the head / MAP-pool adaptation).
    Returns:
      (adapted state dict, human-readable notes about dropped / re-initialised weights).
    """
    method, antialias = resample
    out: dict[str, np.ndarray] = {}
    notes: list[str] = []
    kernel_size = None
    mim = config.family == "eva" and "mask_token" in state
    for key, value in state.items():
        if key.startswith(("pre_logits.", "rope.")) or key.endswith(".relative_position_index"):
            continue
        if mim:
            if key == "mask_token" or key.startswith("lm_head."):
                continue
            key = re.sub(r"^norm\.", "fc_norm.", key)
        if key == "patch_embed.proj.weight":
            if value.ndim < 4:
                value = value.reshape(config.embed_dim, -1, *config.patch_size)
            kernel_size = tuple(value.shape[-2:])
            value = resample_patch_embed(value, config.patch_size, method, antialias)
        out[key] = value

    pos = out.get("pos_embed")
    if pos is not None and pos.ndim == 3 and config.pos_embed:
        prefix = 0 if config.no_embed_class else config.num_prefix_tokens
        n = pos.shape[1] - prefix
        grid = source_grid(n, source_img_size, kernel_size)
        if n != config.num_patches or (grid is not None and grid != config.grid_size):
            old_grid = grid or square_grid(n)
            out["pos_embed"] = resample_pos_embed(pos, config.grid_size, old_grid, prefix, method, antialias)

    if "num_classes" in overrides:
        for seed, head in enumerate(HEADS[: 1 + getattr(config, "dist_token", False)]):  # Mixers: one head
            weight = out.get(f"{head}.weight")
            if weight is None or (config.num_classes and weight.shape[0] == config.num_classes):
                continue
            del out[f"{head}.weight"]
            out.pop(f"{head}.bias", None)
            if config.num_classes:
                out.update({f"{head}.{k}": v for k, v in _fresh_head(config, seed).items()})
                notes.append(
                    f"{head} ({weight.shape[0]} classes in the checkpoint) re-initialised for"
                    f" num_classes={config.num_classes}"
                )
            else:
                notes.append(f"{head} ({weight.shape[0]} classes) dropped: num_classes=0")
    if "global_pool" in overrides and config.global_pool != "map":
        pool_keys = [k for k in out if k.startswith("attn_pool.")]
        for k in pool_keys:
            del out[k]
        if pool_keys:
            notes.append(f"MAP head attn_pool.* ({len(pool_keys)} tensors) dropped: global_pool={config.global_pool!r}")
    return out, notes
