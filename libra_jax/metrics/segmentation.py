"""Segmentation metrics of attribution maps: the LibraGrad and Chefer protocols.

* `average_precision`: per-image AP of a signed pixel map vs a binary mask with exactly
  `sklearn.metrics.average_precision_score` semantics (the LibraGrad protocol: no normalisation).
* `chefer_segmentation` / `chefer_summary`: Chefer's ImageNet-Segmentation protocol (min-max
  normalisation, mean threshold, dataset-level pixel accuracy and mIoU, per-image 2-channel AP).
* `class_discrimination_ap`: AP of a class's map against its own object's mask and the other one's.

Patch maps become pixel maps with `upsample` (PyTorch-exact `F.interpolate`, align_corners=False):
LibraGrad uses bicubic, Chefer bilinear.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from libra_jax.weights.resize import resize


def upsample(maps, size: int | tuple[int, int], mode: str = "bicubic"):
    """Patch maps (B, gh, gw) → pixel maps (B, H, W) like `F.interpolate(mode=mode, align_corners=False)`.

    Works on numpy and jax arrays (float). For an integer factor, `size = g · factor` equals the
    official `scale_factor=factor` call (torch uses the same source coordinates then).
    """
    return resize(maps, size, method=mode)


@jax.jit
def average_precision(scores: jax.Array, targets: jax.Array) -> jax.Array:
    """Per-image average precision, sklearn `average_precision_score` semantics: (B, ...) → (B,).

    AP = Σ_n (R_n − R_{n−1}) P_n over the distinct score thresholds, descending; tied scores form one
    threshold (one precision-recall point), exactly like `precision_recall_curve`. Equivalently
    AP = (1/n_pos) Σ_{positives j} P(threshold of j), which is what is computed here after one sort.

    Args:
      scores: (B, ...) finite float scores (signed maps; higher = more foreground), compared in
        float32 (ties are float32 ties; -0.0 == 0.0).
      targets: (B, ...) binary masks (bool or {0, 1}; nonzero = positive), same shape.
    Returns:
      (B,) float32 AP. An image without positives gets 0.0 and one that is all positive 1.0, what
      sklearn returns (it warns and sets recall to 1 when there are no positives).
    """
    b = scores.shape[0]
    s = jnp.asarray(scores, jnp.float32).reshape(b, -1)
    y = (jnp.asarray(targets).reshape(b, -1) != 0).astype(jnp.int32)
    neg_sorted, y_sorted = jax.lax.sort((-s, y), dimension=1, num_keys=1)
    p = s.shape[1]
    idx = jnp.arange(p)
    # Last position of each group of equal scores; every member takes the precision there.
    is_last = jnp.concatenate([neg_sorted[:, 1:] != neg_sorted[:, :-1], jnp.ones((b, 1), bool)], axis=1)
    group_end = jax.lax.cummin(jnp.where(is_last, idx, p - 1), axis=1, reverse=True)
    tps = jnp.cumsum(y_sorted, axis=1)  # int32: exact counts
    precision = jnp.take_along_axis(tps, group_end, axis=1) / (group_end + 1).astype(jnp.float32)
    n_pos = tps[:, -1]
    ap = jnp.sum(jnp.where(y_sorted == 1, precision, 0.0), axis=1) / jnp.maximum(n_pos, 1)
    return jnp.where(n_pos > 0, ap, 0.0).astype(jnp.float32)


def mean_ap(ap) -> float:
    """Dataset AP: mean over images with NaN → 0 (the LibraGrad aggregation).

    The official code averages per batch, then over batches; with equal batch sizes that is this mean.
    """
    return float(np.mean(np.nan_to_num(np.asarray(ap, np.float64), nan=0.0)))


def _count(v: jax.Array) -> jax.Array:
    """Number of True pixels per image: (B, H, W) bool → (B,) int32."""
    return v.sum(axis=(1, 2), dtype=jnp.int32)


@jax.jit
def chefer_segmentation(pixel_maps: jax.Array, masks: jax.Array) -> dict[str, jax.Array]:
    """Chefer's per-image segmentation scores (`imagenet_seg_eval.py`), batched.

    Per image: R = (m − min m) / (max m − min m); foreground = R > mean(R), background = R ≤ mean(R);
    the AP input is the 2-channel [1 − R, R] vs the one-hot [mask == 0, mask == 1], pooled into one
    AP. A constant map gives R = NaN as in torch: both binary channels are then 0 and the argmax
    picks background everywhere; both soft channels are NaN → 0, so its AP is 0.5.

    Args:
      pixel_maps: (B, H, W) maps at mask resolution (Chefer upsamples ×16 bilinearly first).
      masks: (B, H, W) binary ground truth (bool or {0, 1}).
    Returns:
      'correct', 'labeled' (B,) int32 pixel counts; 'intersection', 'union' (B, 2) int32 counts per
      class [background, foreground]; 'ap' (B,) float32. Reduce over a dataset with `chefer_summary`.
    """
    m = jnp.asarray(pixel_maps, jnp.float32)
    lo = m.min(axis=(1, 2), keepdims=True)
    hi = m.max(axis=(1, 2), keepdims=True)
    # XLA turns x / broadcast(d) into x · (1/d), one ulp off torch's division; such ulps move
    # values across ties of the pooled [1 − R, R] AP vector. The barrier keeps a true division.
    r = (m - lo) / jax.lax.optimization_barrier(jnp.broadcast_to(hi - lo, m.shape))
    fg = r > r.mean(axis=(1, 2), keepdims=True)  # NaN compares False: a constant map is all background
    gt = jnp.asarray(masks) != 0
    inter = jnp.stack([_count(~fg & ~gt), _count(fg & gt)], axis=1)
    union = jnp.stack([_count(~fg | ~gt), _count(fg | gt)], axis=1)
    soft = jnp.stack([jnp.nan_to_num(1 - r, nan=0.0), jnp.nan_to_num(r, nan=0.0)], axis=1)
    onehot = jnp.stack([~gt, gt], axis=1)
    return {
        "correct": _count(fg == gt),
        "labeled": jnp.full(m.shape[:1], m.shape[1] * m.shape[2], jnp.int32),
        "intersection": inter,
        "union": union,
        "ap": average_precision(soft, onehot),
    }


def chefer_summary(results: dict | Sequence[dict]) -> dict[str, float]:
    """Dataset-level Chefer metrics from per-image results (one dict, or a list of batch dicts).

    pixel_accuracy = Σ correct / Σ labeled; miou = mean over {bg, fg} of Σ intersection / Σ union
    (accumulated over the dataset, not averaged per image); map = mean per-image AP (NaN → 0).
    Like the reference, the denominators get + np.spacing(1) (keeps an empty class at IoU 0).
    """
    parts = [results] if isinstance(results, dict) else list(results)
    cat = {k: np.concatenate([np.asarray(p[k]) for p in parts], axis=0) for k in parts[0]}
    eps = np.spacing(1.0)
    iou = cat["intersection"].sum(0).astype(np.float64) / (eps + cat["union"].sum(0))
    return {
        "pixel_accuracy": float(cat["correct"].sum() / (eps + cat["labeled"].sum())),
        "miou": float(iou.mean()),
        "iou_background": float(iou[0]),
        "iou_foreground": float(iou[1]),
        "map": mean_ap(cat["ap"]),
        "n_images": float(cat["ap"].size),
    }


@jax.jit
def class_discrimination_ap(maps: jax.Array, own_masks: jax.Array, other_masks: jax.Array) -> dict[str, jax.Array]:
    """Class discrimination on two-object images: AP of a class's map vs each object's mask.

    Args:
      maps: (B, H, W) signed pixel maps explaining class a.
      own_masks: (B, H, W) masks of the class-a object; other_masks: (B, H, W) masks of the other object.
    Returns:
      'own' (B,): AP vs the class's own object (high = localises it); 'other' (B,): AP vs the other
      object (low = discriminates). Call once per class (or stack both classes in the batch).
    """
    return {"own": average_precision(maps, own_masks), "other": average_precision(maps, other_masks)}
