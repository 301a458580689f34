"""Faithfulness of text attributions by removing tokens: ERASER AOPC and MoRF / LeRF deletion curves.

Both work on plain arrays and a model callable, so they plug into any text model:

* `predict(ids, mask)`: ids int (B, N), mask bool (B, N) → (B, K) class probabilities
  (`comprehensiveness_sufficiency`) or (B,) one score per example (`deletion_curves`, e.g. the logit of
  the originally predicted token).
* `candidates` (B, N) bool: the tokens that may be removed (words; not [CLS] / [SEP] / BOS / padding:
  those are always kept).

Ranking: candidates by decreasing **signed** score, ties to the lower position (`rationale.ranks`).
Counts: removing a fraction q of a row's n candidates removes ⌈q·n⌉ of them (at least one token for
any q > 0, so ERASER's 1 % bin is not empty on short texts).

Removal (`Removal`, reported with every result, since the choice changes the numbers — language.md §6):
``replace`` puts a token id (e.g. [MASK], or [UNK] / [PAD]) in place of each removed token, keeping
positions; ``delete`` takes the removed tokens out of the sequence, keeps the rest in order and pads
(right for encoders, left for causal decoders that predict at the last position). Zeroing the input
embeddings (LXT's ABPC) needs the model's internals and is the model's own option, not this module's.

* ERASER (DeYoung et al. 2020; `metrics.py` `_instances_aopc`): comprehensiveness = p(x)_c − p(x without
  the top q)_c, sufficiency = p(x)_c − p(only the top q)_c, for the predicted class c, AOPC = mean over
  q ∈ {1, 5, 10, 20, 50} %.
* LXT-style curves (language.md §2.3): the score after removing the ⌈r·n⌉ most relevant (MoRF) or least
  relevant (LeRF) candidates, r = 0, 0.1, …, 1; ABPC = trapezoid over r of LeRF − MoRF (higher = the map
  orders tokens by their effect).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from libra_jax.metrics.rationale import ranks

ERASER_FRACTIONS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2, 0.5)
CURVE_FRACTIONS: tuple[float, ...] = tuple(i / 10 for i in range(11))

Predict = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Removal:
    """How a removed token is taken out of the input.

    Attributes:
      kind: "replace" (the token's id becomes `token_id`) or "delete" (the sequence closes up).
      token_id: the replacement id ([MASK]) for "replace", the padding id for "delete".
      pad_side: "right" or "left": where "delete" puts the freed positions (mask False).
    """

    kind: Literal["replace", "delete"]
    token_id: int
    pad_side: Literal["right", "left"] = "right"

    def __post_init__(self):
        if self.kind not in ("replace", "delete"):
            raise ValueError(f"unknown removal kind {self.kind!r}; expected 'replace' or 'delete'")
        if self.pad_side not in ("right", "left"):
            raise ValueError(f"unknown pad_side {self.pad_side!r}; expected 'right' or 'left'")

    @property
    def name(self) -> str:
        """A label for result tables, e.g. 'replace(103)' or 'delete(right)'."""
        return f"replace({self.token_id})" if self.kind == "replace" else f"delete({self.pad_side})"

    def apply(self, ids: jax.Array, mask: jax.Array, removed: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(ids int (B, N), mask bool (B, N)) with the `removed` (B, N) tokens taken out."""
        ids, mask, removed = jnp.asarray(ids), jnp.asarray(mask, bool), jnp.asarray(removed, bool)
        if self.kind == "replace":
            return _replace(ids, mask, removed, self.token_id)
        return _delete(ids, mask, removed, self.token_id, self.pad_side == "right")


@jax.jit
def _replace(ids, mask, removed, token_id):
    return jnp.where(removed, jnp.asarray(token_id, ids.dtype), ids), mask


@functools.partial(jax.jit, static_argnums=4)
def _delete(ids, mask, removed, pad_id, right: bool):
    keep = mask & ~removed
    n = ids.shape[-1]
    n_keep = keep.sum(-1, keepdims=True)
    # Stable argsort on the drop flag: kept tokens first (right padding) or last (left), in order.
    order = jnp.argsort(~keep if right else keep, axis=-1, stable=True)
    pos = jnp.arange(n)[None, :]
    new_mask = pos < n_keep if right else pos >= n - n_keep
    new_ids = jnp.where(new_mask, jnp.take_along_axis(ids, order, axis=-1), jnp.asarray(pad_id, ids.dtype))
    return new_ids, new_mask


def removal_counts(fractions: Sequence[float], n: np.ndarray) -> np.ndarray:
    """⌈q·n⌉ per fraction and row: fractions (F,), n (B,) candidates → (F, B) int."""
    q = np.asarray(fractions, np.float64)[:, None]
    if np.any((q < 0) | (q > 1)):
        raise ValueError(f"fractions must lie in [0, 1], got {list(fractions)}")
    # The tolerance keeps exact products exact (0.3 · 10 is 3.0000000000000004 in floating point).
    return np.ceil(q * np.asarray(n)[None, :] - 1e-9).astype(np.int64)


def _ranked(scores, candidates) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cand = np.asarray(candidates, bool)
    scores = np.asarray(scores, np.float64)
    if scores.shape != cand.shape or scores.ndim != 2:
        raise ValueError(f"need scores and candidates of one shape (B, N); got {scores.shape} and {cand.shape}")
    return ranks(scores, cand), cand, cand.sum(-1)


def comprehensiveness_sufficiency(
    predict: Predict,
    ids,
    mask,
    scores,
    candidates,
    removal: Removal,
    target=None,
    fractions: Sequence[float] = ERASER_FRACTIONS,
) -> dict:
    """ERASER comprehensiveness and sufficiency, AOPC over `fractions`.

    Args:
      predict: (ids, mask) → (B, K) class probabilities.
      ids, mask: (B, N) the original input.
      scores: (B, N) signed token map.
      candidates: (B, N) bool, the removable tokens.
      removal: how tokens are removed.
      target: (B,) the class whose probability is measured; default the predicted class (ERASER).
      fractions: the bins q.
    Returns:
      {'comprehensiveness', 'sufficiency': (B,) AOPC (mean over bins), 'comprehensiveness_points',
      'sufficiency_points': (B, F), 'target': (B,), 'removal': removal.name}.
    """
    rank, cand, n = _ranked(scores, candidates)
    ids, mask = jnp.asarray(ids), jnp.asarray(mask, bool)
    probs = jnp.asarray(predict(ids, mask))
    target = jnp.argmax(probs, -1) if target is None else jnp.asarray(target)
    p0 = jnp.take_along_axis(probs, target[:, None], -1)[:, 0]

    def drop(removed):
        p = jnp.asarray(predict(*removal.apply(ids, mask, removed)))
        return np.asarray(p0 - jnp.take_along_axis(p, target[:, None], -1)[:, 0])

    comp, suff = [], []
    for k in removal_counts(fractions, n):
        top = cand & (rank < k[:, None])
        comp.append(drop(top))
        suff.append(drop(cand & ~top))
    comp, suff = np.stack(comp, -1), np.stack(suff, -1)
    return {
        "comprehensiveness": comp.mean(-1),
        "sufficiency": suff.mean(-1),
        "comprehensiveness_points": comp,
        "sufficiency_points": suff,
        "target": np.asarray(target),
        "removal": removal.name,
    }


def deletion_curves(
    score: Predict,
    ids,
    mask,
    scores,
    candidates,
    removal: Removal,
    fractions: Sequence[float] = CURVE_FRACTIONS,
) -> dict:
    """MoRF and LeRF token-deletion curves and the area between them (ABPC).

    Args:
      score: (ids, mask) → (B,) the explained score (e.g. the logit of the originally predicted token).
      ids, mask: (B, N) the original input.
      scores: (B, N) signed token map.
      candidates: (B, N) bool, the removable tokens.
      removal: how tokens are removed.
      fractions: (F,) increasing fractions r of the candidates removed (include 0 and 1 for the full
        curve).
    Returns:
      {'fractions': (F,), 'morf', 'lerf': (B, F) the score after removing the ⌈r·n⌉ most / least relevant
      candidates, 'abpc': (B,) trapezoid over r of lerf − morf, 'removal': removal.name}.
    """
    fr = np.asarray(fractions, np.float64)
    if fr.ndim != 1 or len(fr) < 2 or np.any(np.diff(fr) <= 0):
        raise ValueError(f"fractions must be at least two increasing values, got {list(fractions)}")
    rank, cand, n = _ranked(scores, candidates)
    ids, mask = jnp.asarray(ids), jnp.asarray(mask, bool)
    morf, lerf = [], []
    for k in removal_counts(fr, n):
        k = k[:, None]
        for curve, removed in ((morf, cand & (rank < k)), (lerf, cand & (rank >= n[:, None] - k))):
            curve.append(np.asarray(score(*removal.apply(ids, mask, removed))))
    morf, lerf = np.stack(morf, -1), np.stack(lerf, -1)
    gap = lerf - morf
    abpc = ((gap[:, 1:] + gap[:, :-1]) / 2 * np.diff(fr)).sum(-1)
    return {"fractions": fr, "morf": morf, "lerf": lerf, "abpc": abpc, "removal": removal.name}
