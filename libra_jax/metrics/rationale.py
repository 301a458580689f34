"""Plausibility of text attributions: agreement of signed maps with ground-truth rationales.

* `token_f1`: token-F1 of the top-k words against the rationale, the way Chefer's ERASER Movie Reviews
  benchmark computes it: for k = 5, 10, …, 80 the k highest-scoring
  words of each document are the predicted rationale; ERASER's `score_hard_rationale_predictions` then
  gives instance-micro P/R/F1 (over all (document, word) pairs) and instance-macro P/R/F1 (the means of
  the per-document values; F1 = 0 when P or R is 0). Word scores come from `libra_jax.text.words`
  (max over a word's pieces); the explained class is the gold label (the caller's choice of map).
* `rationale_ap`: per-example AUPRC against the rationale with `sklearn.metrics.average_precision_score`
  semantics (ERASER's "average_precision" soft score), on the valid tokens only.
* `source_hits`: decoder tasks with one true source position: AP of the map against it and whether
  the map's top-1 position is it.

All maps are signed and used as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from libra_jax.metrics.segmentation import average_precision

CHEFER_KS: tuple[int, ...] = tuple(range(5, 85, 5))
"""k = 5, 10, …, 80: the top-k sizes of Chefer's benchmark (`bert_pipeline.py`)."""


def _valid(shape: tuple[int, ...], valid) -> np.ndarray:
    if valid is None:
        return np.ones(shape, bool)
    valid = np.asarray(valid, bool)
    if valid.shape != shape:
        raise ValueError(f"valid has shape {valid.shape} but the scores have {shape}; pass one flag per position")
    return valid


def ranks(scores, valid=None) -> np.ndarray:
    """Rank of every position by decreasing score: (B, N) → (B, N) int64, 0 = most relevant.

    Ties go to the lower index first (stable sort); invalid positions rank after all valid ones.
    """
    scores = np.asarray(scores, np.float64)
    valid = _valid(scores.shape, valid)
    key = np.where(valid, -scores, np.inf)
    order = np.argsort(key, axis=-1, kind="stable")
    out = np.empty_like(order)
    np.put_along_axis(out, order, np.arange(scores.shape[-1])[None, :].repeat(scores.shape[0], 0), axis=-1)
    return out


def _f1(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    """ERASER's `_f1`: 0 when p or r is 0, else the harmonic mean."""
    ok = (p > 0) & (r > 0)
    return np.where(ok, 2 * p * r / np.where(ok, p + r, 1.0), 0.0)


def token_f1(word_scores, rationale, valid=None, ks: Sequence[int] = CHEFER_KS, clamp: bool = False) -> dict:
    """Token-F1 of the top-k words against the rationale, for every k in `ks`.

    Args:
      word_scores: (B, W) signed word scores (padded rows allowed, see `valid`).
      rationale: (B, W) bool gold rationale words.
      valid: (B, W) bool, the words that exist (default all); only these can be predicted. A document
        with fewer than k valid words predicts all of them.
      ks: the top-k sizes.
      clamp: rank max(score, 0), as Chefer's pipeline does (`cam.clamp(min=0)`): negative words then
        tie at 0 and fall back to index order. Default: the signed scores.
    Returns:
      {'k': (K,) int, 'micro_p', 'micro_r', 'micro_f1', 'macro_p', 'macro_r', 'macro_f1': (K,) float64}.
      Documents with neither gold nor predicted words take no part in the macro means (as in ERASER).
    """
    scores = np.asarray(word_scores, np.float64)
    gold = np.asarray(rationale, bool)
    if scores.ndim != 2 or gold.shape != scores.shape:
        raise ValueError(f"need word_scores and rationale of one shape (B, W); got {scores.shape} and {gold.shape}")
    valid = _valid(scores.shape, valid)
    rank = ranks(np.maximum(scores, 0.0) if clamp else scores, valid)
    n_gold = gold.sum(-1)
    out = {name: [] for name in ("micro_p", "micro_r", "micro_f1", "macro_p", "macro_r", "macro_f1")}
    for k in ks:
        pred = valid & (rank < k)
        tp, n_pred = (pred & gold).sum(-1), pred.sum(-1)
        micro_p = tp.sum() / max(n_pred.sum(), 1)
        micro_r = tp.sum() / max(n_gold.sum(), 1)
        p = np.where(n_pred > 0, tp / np.maximum(n_pred, 1), 0.0)
        r = np.where(n_gold > 0, tp / np.maximum(n_gold, 1), 0.0)
        counted = (n_pred > 0) | (n_gold > 0)
        for name, value in (("micro_p", micro_p), ("micro_r", micro_r), ("micro_f1", _f1(micro_p, micro_r))):
            out[name].append(float(value))
        for name, value in (("macro_p", p), ("macro_r", r), ("macro_f1", _f1(p, r))):
            out[name].append(float(value[counted].mean()) if counted.any() else 0.0)
    return {"k": np.asarray(ks, np.int64)} | {name: np.asarray(v, np.float64) for name, v in out.items()}


def _masked_ap(scores, positives, valid) -> jax.Array:
    """AP over valid positions only: invalid ones get −inf, which ranks them below every positive."""
    scores = jnp.asarray(scores, jnp.float32)
    valid = jnp.ones(scores.shape, bool) if valid is None else jnp.asarray(valid, bool)
    if valid.shape != scores.shape or jnp.shape(positives) != scores.shape:
        raise ValueError(
            f"scores {scores.shape}, targets {jnp.shape(positives)} and valid {valid.shape} must have one shape (B, N)"
        )
    return average_precision(jnp.where(valid, scores, -jnp.inf), jnp.asarray(positives, bool) & valid)


def rationale_ap(scores, rationale, valid=None) -> jax.Array:
    """Per-example AUPRC (average precision) of a signed map against the rationale: (B, N) → (B,).

    Args:
      scores: (B, N) token or word map.
      rationale: (B, N) bool.
      valid: (B, N) bool positions to score (e.g. word tokens: no [CLS] / [SEP] / padding); default all.
    Returns:
      (B,) float32; 0 for an example without rationale positions (ERASER skips those: filter before
      averaging).
    """
    return _masked_ap(scores, rationale, valid)


def source_hits(scores, source, valid=None) -> dict[str, jax.Array]:
    """How well a map finds the one true source position (decoder recall / induction tasks).

    Args:
      scores: (B, N) signed token map of the prompt.
      source: (B,) int position of the token that determines the answer.
      valid: (B, N) bool positions that may be chosen (default all).
    Returns:
      {'ap': (B,) AP of the map against the one-hot source (= 1 / its rank, ties counted as the
      precision-recall curve counts them), 'top1': (B,) bool, the highest valid score is at the source
      (ties go to the lower position)}.
    """
    scores = jnp.asarray(scores, jnp.float32)
    source = jnp.asarray(source)
    if scores.ndim != 2 or source.shape != scores.shape[:1]:
        raise ValueError(f"need scores (B, N) and source (B,); got {scores.shape} and {source.shape}")
    onehot = jnp.arange(scores.shape[1])[None, :] == source[:, None]
    valid_b = jnp.ones(scores.shape, bool) if valid is None else jnp.asarray(valid, bool)
    top = jnp.argmax(jnp.where(valid_b, scores, -jnp.inf), axis=-1)
    return {"ap": _masked_ap(scores, onehot, valid_b), "top1": top == source}
