"""Text metrics against hand-computed values and sklearn: token-F1@k, AUPRC, source hits, ERASER AOPC, ABPC."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from libra_jax.data import text_synthetic as ts
from libra_jax.metrics.deletion import (
    ERASER_FRACTIONS,
    Removal,
    comprehensiveness_sufficiency,
    deletion_curves,
    removal_counts,
)
from libra_jax.metrics.rationale import CHEFER_KS, rationale_ap, source_hits, token_f1

# Two documents (B=2, W=6); the second has 4 words. Top-k orders: A 0, 2, 4 (tie with 2: lower index
# first), 1, 5, 3; B 1, 2, 3, 0.
WORD_SCORES = np.array([[0.9, 0.1, 0.5, -0.2, 0.5, 0.0], [0.0, 0.3, 0.2, 0.1, 5.0, 5.0]])
GOLD = np.array([[1, 0, 1, 0, 0, 1], [0, 1, 0, 0, 0, 0]], bool)
VALID = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], bool)


def test_token_f1_by_hand():
    r = token_f1(WORD_SCORES, GOLD, VALID, ks=(1, 2, 5))
    np.testing.assert_array_equal(r["k"], [1, 2, 5])
    # k=1: A {0} P 1 R 1/3 F .5; B {1} P 1 R 1 F 1.  k=2: A {0,2} P 1 R 2/3 F .8; B {1,2} P .5 R 1 F 2/3.
    # k=5: A {0,2,4,1,5} P 3/5 R 1 F .75; B all 4 valid P 1/4 R 1 F .4.
    np.testing.assert_allclose(r["micro_p"], [1, 3 / 4, 4 / 9])
    np.testing.assert_allclose(r["micro_r"], [1 / 2, 3 / 4, 1])
    np.testing.assert_allclose(r["micro_f1"], [2 / 3, 3 / 4, 8 / 13])
    np.testing.assert_allclose(r["macro_p"], [1, 3 / 4, 0.425])
    np.testing.assert_allclose(r["macro_r"], [2 / 3, 5 / 6, 1])
    np.testing.assert_allclose(r["macro_f1"], [0.75, (0.8 + 2 / 3) / 2, 0.575])
    # Chefer's clamp: A's −0.2 ties with the 0.0 at index 5 and comes first → k=5 picks {0,2,4,1,3}.
    c = token_f1(WORD_SCORES, GOLD, VALID, ks=(5,), clamp=True)
    np.testing.assert_allclose(c["macro_f1"], [(0.5 + 0.4) / 2])
    assert CHEFER_KS == tuple(range(5, 81, 5))


def test_token_f1_bad_shapes():
    with pytest.raises(ValueError, match="one shape"):
        token_f1(WORD_SCORES, GOLD[:, :5])
    with pytest.raises(ValueError, match="valid has shape"):
        token_f1(WORD_SCORES, GOLD, VALID[:, :5])


def test_rationale_ap_matches_sklearn_on_valid_positions():
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=(5, 17)), 1)  # rounded: many ties
    gold = rng.uniform(size=(5, 17)) < 0.3
    gold[:, 0] = True
    valid = rng.uniform(size=(5, 17)) < 0.8
    valid[:, 0] = True
    ap = np.asarray(rationale_ap(scores, gold, valid))
    for j in range(5):
        v = valid[j]
        assert ap[j] == pytest.approx(average_precision_score(gold[j][v], scores[j][v]), abs=1e-6)


def test_source_hits_by_hand():
    scores = jnp.array([[0.1, 0.5, 0.3, 0.5], [0.0, 0.1, 2.0, 0.2]])
    r = source_hits(scores, jnp.array([3, 2]))
    # Row 0: the source ties with position 1 at the top → precision 1/2 there; argmax picks 1.
    np.testing.assert_allclose(r["ap"], [0.5, 1.0])
    np.testing.assert_array_equal(r["top1"], [False, True])
    excluded = source_hits(scores, jnp.array([3, 2]), valid=jnp.array([[1, 0, 1, 1], [1, 1, 1, 1]], bool))
    np.testing.assert_allclose(excluded["ap"], [1.0, 1.0])
    np.testing.assert_array_equal(excluded["top1"], [True, True])


# One sequence: [CLS] 7 5 8 7 [SEP] [PAD]; the words (positions 1..4) are the candidates.
IDS = np.array([[2, 7, 5, 8, 7, 3, 0]], np.int32)
MASK = np.array([[1, 1, 1, 1, 1, 1, 0]], bool)
CANDIDATES = np.array([[0, 1, 1, 1, 1, 0, 0]], bool)
MAP = np.array([[9.0, 0.5, -1.0, 0.2, 0.9, 9.0, 0.0]])  # candidate order: 4, 1, 3, 2


def _count(ids, mask, token):
    return ((ids == token) & mask).sum(-1).astype(jnp.float32)


def _probs(ids, mask):
    """A toy classifier: p(class 1) = 0.1 + 0.2·#7 + 0.1·#8 over the real tokens."""
    p1 = 0.1 + 0.2 * _count(ids, mask, 7) + 0.1 * _count(ids, mask, 8)
    return jnp.stack([1 - p1, p1], -1)


def test_removal_apply_by_hand():
    removed = np.array([[0, 1, 0, 0, 1, 0, 0]], bool)
    ids, mask = Removal("replace", 4).apply(IDS, MASK, removed)
    np.testing.assert_array_equal(ids, [[2, 4, 5, 8, 4, 3, 0]])
    np.testing.assert_array_equal(mask, MASK)
    ids, mask = Removal("delete", 0).apply(IDS, MASK, removed)
    np.testing.assert_array_equal(ids, [[2, 5, 8, 3, 0, 0, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1, 0, 0, 0]])
    ids, mask = Removal("delete", 0, pad_side="left").apply(IDS, MASK, removed)
    np.testing.assert_array_equal(ids, [[0, 0, 0, 2, 5, 8, 3]])
    np.testing.assert_array_equal(mask, [[0, 0, 0, 1, 1, 1, 1]])
    assert Removal("replace", 103).name == "replace(103)" and Removal("delete", 0).name == "delete(right)"
    with pytest.raises(ValueError, match="removal kind"):
        Removal("zero", 0)


def test_removal_counts_ceil():
    counts = removal_counts(ERASER_FRACTIONS, np.array([4, 10])).T
    np.testing.assert_array_equal(counts, [[1, 1, 1, 1, 2], [1, 1, 1, 2, 5]])
    np.testing.assert_array_equal(removal_counts([0.3, 0.0, 1.0], np.array([10])).ravel(), [3, 0, 10])
    with pytest.raises(ValueError, match="fractions"):
        removal_counts([1.5], np.array([3]))


@pytest.mark.parametrize("removal", [Removal("replace", 4), Removal("delete", 0)])
def test_comprehensiveness_sufficiency_by_hand(removal):
    r = comprehensiveness_sufficiency(_probs, IDS, MASK, MAP, CANDIDATES, removal)
    # p1(x) = 0.6 (predicted class 1). n = 4 candidates → k = 1, 1, 1, 1, 2.
    # Comprehensiveness: drop {4} → 0.4 (Δ .2); drop {4, 1} → 0.2 (Δ .4).
    # Sufficiency: keep {4} → 0.3 (Δ .3); keep {4, 1} → 0.5 (Δ .1).
    assert r["target"].tolist() == [1] and r["removal"] == removal.name
    np.testing.assert_allclose(r["comprehensiveness_points"], [[0.2, 0.2, 0.2, 0.2, 0.4]], atol=1e-6)
    np.testing.assert_allclose(r["sufficiency_points"], [[0.3, 0.3, 0.3, 0.3, 0.1]], atol=1e-6)
    np.testing.assert_allclose(r["comprehensiveness"], [0.24], atol=1e-6)
    np.testing.assert_allclose(r["sufficiency"], [0.26], atol=1e-6)
    # An explicit target: class 0's probability rises when class-1 evidence goes → negative deltas.
    r0 = comprehensiveness_sufficiency(_probs, IDS, MASK, MAP, CANDIDATES, removal, target=np.array([0]))
    np.testing.assert_allclose(r0["comprehensiveness"], [-0.24], atol=1e-6)


def test_deletion_curves_by_hand():
    def score(ids, mask):
        return 2 * _count(ids, mask, 7) + _count(ids, mask, 8)

    r = deletion_curves(score, IDS, MASK, MAP, CANDIDATES, Removal("replace", 4), fractions=(0.0, 0.5, 1.0))
    # MoRF removes 4, 1 (both 7s) then all; LeRF removes 2, 3 (the 5 and the 8) then all.
    np.testing.assert_allclose(r["morf"], [[5, 1, 0]])
    np.testing.assert_allclose(r["lerf"], [[5, 4, 0]])
    np.testing.assert_allclose(r["abpc"], [1.5])  # trapezoid of (0, 3, 0) with step 0.5
    with pytest.raises(ValueError, match="increasing"):
        deletion_curves(score, IDS, MASK, MAP, CANDIDATES, Removal("replace", 4), fractions=(0.5, 0.1))


def test_oracle_classifier_on_the_benchmark():
    """The metrics plugged into the synthetic benchmark and a classifier that counts evidence words exactly."""
    config = ts.TextBenchmarkConfig()
    d = ts.make_split(config, "test", 16)
    vocab = ts.vocabulary(config)
    votes = np.zeros((len(vocab), config.num_classes), np.float32)
    for c, words in enumerate(ts.EVIDENCE[: config.num_classes]):
        votes[[vocab.index(w) for w in words], c] = 4.0
    mask_id = vocab.index(ts.MASK)

    @jax.jit
    def predict(ids, mask):
        return jax.nn.softmax((jnp.asarray(votes)[ids] * mask[..., None]).sum(1), -1)

    ids, mask, content, rationale = d["ids"], d["mask"], d["content"], d["rationale"]
    assert np.all(np.argmax(predict(ids, mask), -1) == d["labels"])
    noise = np.random.default_rng(0).normal(size=ids.shape)
    oracle = rationale + 0.01 * noise  # the evidence first, then random order
    np.testing.assert_allclose(rationale_ap(oracle, rationale, content), 1.0)
    assert np.all(rationale_ap(noise, rationale, content) < 1.0)
    for removal in (Removal("replace", mask_id), Removal("delete", vocab.index(ts.PAD))):
        good = comprehensiveness_sufficiency(predict, ids, mask, oracle, content, removal, target=d["labels"])
        bad = comprehensiveness_sufficiency(predict, ids, mask, -oracle, content, removal, target=d["labels"])
        assert good["comprehensiveness"].mean() > bad["comprehensiveness"].mean() + 0.2
        assert good["sufficiency"].mean() < bad["sufficiency"].mean() - 0.2
        curves = deletion_curves(
            lambda i, m: predict(i, m)[np.arange(16), d["labels"]], ids, mask, oracle, content, removal
        )
        assert np.all(curves["abpc"] > 0)
    f1 = token_f1(oracle[:, 1:-1], d["word_rationale"], d["content"][:, 1:-1], ks=(1, 3))
    assert f1["micro_p"][0] == 1.0  # every sentence has evidence: its top word is evidence
