"""The synthetic text benchmarks: determinism, exact rationales, pair layout, decoder sources, tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer

from libra_jax.data import text_synthetic as ts

CONFIG = ts.TextBenchmarkConfig()
DECODER = ts.DecoderTaskConfig()


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)


@pytest.mark.parametrize("pair", [False, True])
def test_deterministic_and_sliceable(pair):
    full = ts.make_classification(CONFIG, 6, seed=3, pair=pair)
    _same(full, ts.make_classification(CONFIG, 6, seed=3, pair=pair))
    _same({k: v[2:5] for k, v in full.items()}, ts.make_classification(CONFIG, 3, seed=3, start=2, pair=pair))
    assert full["text"] != ts.make_classification(CONFIG, 6, seed=4, pair=pair)["text"]


def test_single_rationale_is_exactly_the_evidence():
    vocab = ts.vocabulary(CONFIG)
    d = ts.make_split(CONFIG, "test", 200)
    n = CONFIG.seq_len
    assert d["ids"].shape == (200, n) and d["ids"].dtype == np.int32 and d["labels"].shape == (200,)
    evidence = {w: c for c, words in enumerate(ts.EVIDENCE[: CONFIG.num_classes]) for w in words}
    for j in range(200):
        words = d["text"][j].split()
        tokens = [vocab[i] for i in d["ids"][j][d["mask"][j]]]
        assert tokens == [ts.CLS, *words, ts.SEP]
        planted = np.array([t in evidence for t in tokens])
        np.testing.assert_array_equal(d["rationale"][j][: len(tokens)], planted)
        assert not d["rationale"][j][len(tokens) :].any()
        assert {evidence[t] for t in tokens if t in evidence} == {d["labels"][j]}
        assert CONFIG.min_evidence <= planted.sum() <= CONFIG.max_evidence
        assert CONFIG.min_words <= len(words) <= CONFIG.max_words
        np.testing.assert_array_equal(d["content"][j], d["mask"][j] & (np.arange(n) > 0) & (np.arange(n) <= len(words)))
    # Every class occurs, none dominates.
    counts = np.bincount(d["labels"], minlength=CONFIG.num_classes)
    assert counts.min() > 200 / CONFIG.num_classes / 2


def test_pairs_carry_two_classes_with_disjoint_rationales():
    d = ts.make_split(CONFIG, "pairs", 50)
    vocab = ts.vocabulary(CONFIG)
    assert d["labels"].shape == (50, 2) and d["rationale"].shape == (50, 2, CONFIG.seq_len)
    assert np.all(d["labels"][:, 0] != d["labels"][:, 1])
    assert not np.any(d["rationale"][:, 0] & d["rationale"][:, 1])
    for j in range(50):
        for c in range(2):
            words = {vocab[i] for i in d["ids"][j][d["rationale"][j, c]]}
            assert words and words <= set(ts.EVIDENCE[d["labels"][j, c]])


def test_splits_differ_and_bad_input_is_named():
    assert ts.make_split(CONFIG, "train", 5)["text"] != ts.make_split(CONFIG, "test", 5)["text"]
    with pytest.raises(ValueError, match="unknown split"):
        ts.make_split(CONFIG, "dev", 1)
    with pytest.raises(ValueError, match="num_classes"):
        ts.TextBenchmarkConfig(num_classes=1)
    with pytest.raises(ValueError, match="min_words"):
        ts.TextBenchmarkConfig(min_words=4, max_evidence=3)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        ts.encode([["zebra"]], ts.vocabulary(CONFIG), 4)
    with pytest.raises(ValueError, match="raise seq_len"):
        ts.encode([["the"] * 5], ts.vocabulary(CONFIG), 4)


def test_tokenizer_json_reproduces_the_ids():
    for config in (CONFIG, ts.TextBenchmarkConfig(num_classes=6)):
        tok = Tokenizer.from_str(ts.tokenizer_json(ts.vocabulary(config)))
        d = ts.make_classification(config, 20, seed=1, pair=True)
        for j in range(20):
            assert tok.encode(d["text"][j]).ids == d["ids"][j][d["mask"][j]].tolist()
        assert tok.encode("The STADIUM zebra").tokens == [ts.CLS, "the", "stadium", ts.UNK, ts.SEP]
    tok = Tokenizer.from_str(ts.tokenizer_json(ts.decoder_vocabulary(DECODER), bos=ts.BOS, eos=None))
    for task in ("recall", "induction"):
        d = ts.make_decoder_task(DECODER, task, 10, seed=2)
        assert [tok.encode(t).ids for t in d["text"]] == d["ids"].tolist()


@pytest.mark.parametrize("task", ["recall", "induction"])
def test_decoder_source_determines_the_answer(task):
    d = ts.make_decoder_split(DECODER, task, "test", 100)
    n = 2 * DECODER.num_pairs + 3 if task == "recall" else DECODER.copy_length + 2
    vocab = ts.decoder_vocabulary(DECODER)
    ids, src = d["ids"], d["source"]
    assert ids.shape == (100, n) and d["mask"].all() and np.all(ids[:, 0] == vocab.index(ts.BOS))
    rows = np.arange(100)
    # The answer is the token at the source, and the token before the source is the prompt's last
    # token (the queried key / the repeated symbol), which occurs nowhere else before.
    np.testing.assert_array_equal(ids[rows, src], d["target"])
    np.testing.assert_array_equal(ids[rows, src - 1], ids[:, -1])
    assert np.all((ids[:, 1:-1] == ids[:, -1:]).sum(1) == 1)
    kind = "v" if task == "recall" else "s"
    assert all(vocab[t].startswith(kind) for t in d["target"])
    assert len(set(src.tolist())) > 1  # the source position varies
    _same(d, ts.make_decoder_split(DECODER, task, "test", 100))


def test_decoder_bad_input():
    with pytest.raises(ValueError, match="unknown decoder task"):
        ts.make_decoder_task(DECODER, "sorting", 1, 0)
    with pytest.raises(ValueError, match="num_pairs"):
        ts.DecoderTaskConfig(num_pairs=20, num_keys=8)
    with pytest.raises(ValueError, match="copy_length"):
        ts.DecoderTaskConfig(copy_length=40)
