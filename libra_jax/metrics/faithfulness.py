"""Faithfulness by token deletion: MIF / LIF curves, their AUCs and SRG (SRG = LIF AUC − MIF AUC).

Protocol (the official LibraGrad one):

* Patch tokens are ranked by the **signed** map (no abs), most relevant first; prefix tokens
  (cls / dist / register) are never ranked and always kept. Ties go to the lower patch index
  first (`lax.top_k` is stable), so a constant map removes patches in row-major order.
* At each ratio r (default 0.1, …, 0.9), k = int(r · n_patches) (Python float product, truncated).
  MIF (most influential removed first) removes the k most relevant patches; LIF (least
  influential removed first) keeps only those k.
* Removal: `mode='drop'` takes the tokens out of the sequence (position embeddings were already
  added in h₀, so the remaining tokens keep their positions; they are kept in their original
  order; RoPE models (EVA, `model.layout.needs_positions`) get the kept tokens' positions, so their
  rotation table is subset as officially); `mode='zero'` sets their embeddings to 0, for models
  that cannot drop tokens (BEiT, MLP-Mixer: `model.layout.droppable` is False).
* Per image and ratio, against the dataset label: correct (argmax == label), p(label),
  AOPC term p_orig − p_masked and log-odds term log p_orig − log p_masked.
* AUC = trapezoid over x = r of the per-ratio mean, ×100 (so the best accuracy AUC is 80).

Every masked forward is jitted and batched over images: in drop mode one compilation per kept
sequence length (static shapes; MIF and LIF share it when they keep as many tokens), in zero mode
one per variant for all ratios (k is traced). Compilations are cached per model and batch size,
so later batches of the same size only run.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from libra_jax.rules import PRESETS

RATIOS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
VARIANTS = ("mif", "lif")
METRICS = ("correct", "prob", "aopc", "log_odds")
_VANILLA = PRESETS["vanilla"]


def patch_order(patch_maps: jax.Array) -> jax.Array:
    """Patch indices by decreasing signed relevance: (B, n) → (B, n) int32.

    Equal scores keep index order (lower index = treated as more relevant), because `lax.top_k`
    is stable; −0.0 and +0.0 count as equal. This is a documented choice: `torch.topk`'s tie
    order is unspecified. NaN maps are not supported.
    """
    # top_k orders +0.0 above −0.0; zero-heavy maps (clamped methods) must tie by index instead.
    scores = jnp.where(patch_maps == 0, jnp.zeros_like(patch_maps), patch_maps)
    return jax.lax.top_k(scores, scores.shape[-1])[1]


def kept_patches(order: np.ndarray, k: int, variant: str) -> np.ndarray:
    """Indices of the patches a variant keeps, ascending: order (B, n) → (B, n−k) MIF / (B, k) LIF.

    Host-side (numpy): the masked forward is then compiled per kept *length* only, so MIF and LIF
    runs that keep as many tokens share one compilation.
    """
    kept = order[:, k:] if variant == "mif" else order[:, :k]
    return np.sort(kept, axis=-1)


def ratio_counts(ratios: Sequence[float], n_patches: int) -> tuple[int, ...]:
    """k = int(r · n_patches) per ratio (truncated, as the official code)."""
    return tuple(int(r * n_patches) for r in ratios)


def _scores(logits: jax.Array, labels: jax.Array, orig_logp: jax.Array | None, logits_dtype) -> dict:
    """Per-image metrics of (B, K) logits vs (B,) labels; orig_logp (B,) is log p_orig(label)."""
    if logits_dtype is not None:
        # The official code stores the logits in bfloat16 before the softmax.
        logits = logits.astype(logits_dtype)
    logits = logits.astype(jnp.float32)
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), labels[:, None], -1)[:, 0]
    out = {"correct": (jnp.argmax(logits, -1) == labels).astype(jnp.float32), "prob": jnp.exp(logp), "logp": logp}
    if orig_logp is not None:
        out["aopc"] = jnp.exp(orig_logp) - out["prob"]
        out["log_odds"] = orig_logp - logp
    return out


@functools.partial(jax.jit, static_argnames=("model", "logits_dtype"))
def _embed_and_score(model, params, x: jax.Array, labels: jax.Array, logits_dtype=None):
    """h₀ (B, N, C) and the unmasked per-image scores."""
    h0 = model.apply({"params": params}, x, method="embed")
    logits, _ = model.apply({"params": params}, h0, _VANILLA, method="forward_tokens")
    return h0, _scores(logits, labels, None, logits_dtype)


def _forward_scores(model, params, tokens, labels, orig_logp, logits_dtype, **forward_kwargs) -> dict:
    logits, _ = model.apply({"params": params}, tokens, _VANILLA, method="forward_tokens", **forward_kwargs)
    scores = _scores(logits, labels, orig_logp, logits_dtype)
    return {m: scores[m] for m in METRICS}


@functools.partial(jax.jit, static_argnames=("model", "num_prefix", "logits_dtype"))
def _drop_scores(model, params, h0, kept, labels, orig_logp, *, num_prefix, logits_dtype=None):
    """Scores after removing tokens from the sequence: h0 (B, N, C), kept (B, m) → tokens (B, P + m, C)."""
    patches = jnp.take_along_axis(h0[:, num_prefix:], kept[..., None], axis=1)
    tokens = jnp.concatenate([h0[:, :num_prefix], patches], axis=1)
    if not model.layout.needs_positions:
        return _forward_scores(model, params, tokens, labels, orig_logp, logits_dtype)
    prefix = jnp.broadcast_to(jnp.arange(num_prefix, dtype=kept.dtype), (kept.shape[0], num_prefix))
    positions = jnp.concatenate([prefix, num_prefix + kept], axis=1)
    return _forward_scores(model, params, tokens, labels, orig_logp, logits_dtype, positions=positions)


@functools.partial(jax.jit, static_argnames=("model", "num_prefix", "variant", "logits_dtype"))
def _zero_scores(model, params, h0, order, labels, orig_logp, k, *, num_prefix, variant, logits_dtype=None):
    """Scores after zeroing token embeddings; k is traced, so all ratios share one compilation."""
    rank = jnp.argsort(order, axis=-1)  # rank[b, i] = position of patch i in the ranking
    keep = rank >= k if variant == "mif" else rank < k
    patches = jnp.where(keep[..., None], h0[:, num_prefix:], 0)
    tokens = jnp.concatenate([h0[:, :num_prefix], patches], axis=1)
    return _forward_scores(model, params, tokens, labels, orig_logp, logits_dtype)


def check_image_model(model) -> None:
    """Raise ValueError unless `model`'s maps lie on a patch grid (an image model): the image metrics (MIF / LIF by
    patch removal, segmentation, class discrimination on masks) mean nothing on a plain token sequence."""
    if model.layout.grid is None:
        raise ValueError(
            "the image metrics (MIF / LIF token deletion, segmentation) need an image model with a patch grid; this"
            " model's tokens are a plain sequence (a text model): score it with the text metrics"
            " (libra_jax.metrics.deletion, libra_jax.metrics.rationale) or libra_jax.evaluate_text.evaluate_text"
        )


def _resolve_mode(model, mode: str | None) -> str:
    if mode is None:
        return "drop" if model.layout.droppable else "zero"
    if mode not in ("drop", "zero"):
        raise ValueError(f"unknown mode {mode!r}; expected 'drop', 'zero' or None")
    return mode


def deletion_curves(
    model,
    params,
    x: jax.Array,
    patch_maps: jax.Array,
    labels: jax.Array,
    *,
    ratios: Sequence[float] = RATIOS,
    mode: str | None = None,
    logits_dtype=None,
) -> dict[str, np.ndarray]:
    """MIF and LIF deletion curves of one batch.

    Args:
      model, params: a model (models/contract.py): `embed` (images → h₀ (B, N, C), prefix tokens first),
        `forward_tokens` (any number of tokens → (logits, aux)) and its `layout` (prefix, droppable, positions).
      x: (B, H, W, C) normalised images.
      patch_maps: signed patch relevance, (B, gh, gw) or (B, n_patches), row-major, no prefix tokens.
      labels: (B,) int reference classes (the dataset label in the official protocol).
      ratios: the deletion ratios r.
      mode: 'drop', 'zero', or None for `'drop' if model.layout.droppable else 'zero'`.
      logits_dtype: optional dtype the unmasked and masked logits are cast to before scoring
        (jnp.bfloat16 mirrors the official code's storage); None keeps them as computed.
    Returns:
      numpy arrays: '{mif,lif}_{correct,prob,aopc,log_odds}' (R, B) and 'orig_correct', 'orig_prob' (B,).
    Raises:
      ValueError: a text model (`check_image_model`; libra_jax.metrics.deletion removes text tokens).
    """
    check_image_model(model)
    mode = _resolve_mode(model, mode)
    labels = jnp.asarray(labels, jnp.int32)
    num_prefix = model.layout.num_prefix
    maps = jnp.asarray(patch_maps).reshape(patch_maps.shape[0], -1)
    n = maps.shape[-1]
    counts = ratio_counts(ratios, n)
    if mode == "drop" and num_prefix == 0 and any(k in (0, n) for k in counts):
        raise ValueError(f"ratios {tuple(ratios)} leave an empty sequence for {n} patches and no prefix token")
    h0, orig = _embed_and_score(model, params, x, labels, logits_dtype)
    if (n_model := h0.shape[1] - num_prefix) != n:
        raise ValueError(f"patch_maps has {n} entries per image but the model has {n_model} patch tokens")
    order = patch_order(maps)
    host_order = np.asarray(order)
    static = dict(num_prefix=num_prefix, logits_dtype=logits_dtype)
    out: dict[str, np.ndarray] = {"orig_correct": np.asarray(orig["correct"]), "orig_prob": np.asarray(orig["prob"])}
    for variant in VARIANTS:
        rows = []
        for k in counts:
            if mode == "drop":
                kept = jnp.asarray(kept_patches(host_order, k, variant))
                rows.append(_drop_scores(model, params, h0, kept, labels, orig["logp"], **static))
            else:
                rows.append(_zero_scores(model, params, h0, order, labels, orig["logp"], k, variant=variant, **static))
        for metric in METRICS:
            out[f"{variant}_{metric}"] = np.stack([np.asarray(row[metric]) for row in rows])
    return out


def merge_curves(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate the curves of several batches along the image axis (the last one)."""
    return {key: np.concatenate([p[key] for p in parts], axis=-1) for key in parts[0]}


def summarize(curves: dict[str, np.ndarray], ratios: Sequence[float] = RATIOS) -> dict[str, float]:
    """AUCs (×100, trapezoid over x = r) and SRG of (merged) deletion curves.

    Returns:
      '{mif,lif}_{accuracy,prob,aopc,log_odds}_auc'; 'mif', 'lif' (= accuracy AUCs) and
      'srg' = lif − mif on accuracy. The AOPC / log-odds terms measure a *drop*, so their gaps
      are taken the other way round, 'srg_aopc' = mif_aopc_auc − lif_aopc_auc (= the gap of the
      probability AUCs) and 'srg_log_odds' likewise: a larger SRG is better for all three.
      Also 'orig_accuracy' (fraction, unmasked) and 'n_images'.
    """
    x = np.asarray(ratios, np.float64)
    if curves["mif_correct"].shape[0] != x.size:
        raise ValueError(f"curves have {curves['mif_correct'].shape[0]} ratios, {x.size} given")
    out = {"orig_accuracy": float(np.mean(curves["orig_correct"])), "n_images": float(curves["orig_correct"].size)}
    for variant in VARIANTS:
        for metric in METRICS:
            name = "accuracy" if metric == "correct" else metric
            y = np.mean(np.asarray(curves[f"{variant}_{metric}"], np.float64), axis=-1)
            out[f"{variant}_{name}_auc"] = float(np.trapezoid(y, x) * 100)
    out["mif"], out["lif"] = out["mif_accuracy_auc"], out["lif_accuracy_auc"]
    out["srg"] = out["lif"] - out["mif"]
    out["srg_aopc"] = out["mif_aopc_auc"] - out["lif_aopc_auc"]
    out["srg_log_odds"] = out["mif_log_odds_auc"] - out["lif_log_odds_auc"]
    return out


class DeletionAccumulator:
    """Collects `deletion_curves` batch by batch; `summary()` scores the whole set."""

    def __init__(self, ratios: Sequence[float] = RATIOS):
        self.ratios = tuple(ratios)
        self._parts: list[dict[str, np.ndarray]] = []

    def add(self, curves: dict[str, np.ndarray]) -> None:
        self._parts.append(curves)

    def curves(self) -> dict[str, np.ndarray]:
        """The merged curves: (R, total images) and (total images,)."""
        if not self._parts:
            raise ValueError("no batch added")
        return merge_curves(self._parts)

    def summary(self) -> dict[str, float]:
        return summarize(self.curves(), self.ratios)
