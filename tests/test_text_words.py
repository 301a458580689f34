"""Word merging on real `tokenizers` WordPiece and byte-level BPE tokenizations trained in the test."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

from libra_jax.data import text_synthetic as ts
from libra_jax.text.words import covered_words, encoding_words, merge_words, token_words, word_to_token_mask

CORPUS = [
    "the unbelievable movie was wonderful",
    "an unforgettable performance, truly wonderful",
    "the movie was not good at all",
    "people don't like bad endings",
] * 4
TEXT = "An unbelievable  movie, don't"
WORDS = ["An", "unbelievable", "movie,", "don't"]


@functools.cache  # one trained tokenizer per run: WordPiece training breaks ties in no fixed order
def _wordpiece() -> Tokenizer:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=70, special_tokens=["[UNK]", "[CLS]", "[SEP]"])
    tok.train_from_iterator(CORPUS, trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tok


@functools.cache
def _bpe(trim_offsets: bool) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=290, initial_alphabet=alphabet))
    tok.post_processor = processors.ByteLevel(trim_offsets=trim_offsets)
    return tok


def _pieces_by_word(tokens, index, strip) -> list[str]:
    out = [""] * len(WORDS)
    for t, w in zip(tokens, index, strict=True):
        if w >= 0:
            out[w] += strip(t)
    return out


def test_wordpiece_pieces_map_to_their_words():
    enc = _wordpiece().encode(TEXT)
    words, index = encoding_words(TEXT, enc)
    assert words == WORDS
    assert index[0] == -1 and index[-1] == -1  # [CLS], [SEP]
    assert np.all(np.diff(index[1:-1]) >= 0)
    # The "##" pieces of each word spell the (lower-cased) word, so every piece went to its own word.
    assert _pieces_by_word(enc.tokens, index, lambda t: t.removeprefix("##")) == [w.lower() for w in WORDS]
    assert np.bincount(index[index >= 0]).max() > 2  # some word really is split
    # A text pair: the second text's tokens belong to no word of the first.
    paired = _wordpiece().encode(TEXT, "the movie")
    paired_index = encoding_words(TEXT, paired)[1]
    assert len(paired_index) > len(index) + 1
    np.testing.assert_array_equal(paired_index[: len(index)], index)
    assert np.all(paired_index[len(index) :] == -1)


@pytest.mark.parametrize("trim_offsets", [False, True])
def test_byte_level_bpe_pieces_map_to_their_words(trim_offsets):
    enc = _bpe(trim_offsets).encode(TEXT)
    assert any(t == "Ġ" for t in enc.tokens)  # the double space gives a lone "Ġ" piece
    words, index = encoding_words(TEXT, enc)
    assert words == WORDS and np.all(index >= 0)
    # "Ġ" is the leading space: stripped, the pieces spell the words; a lone "Ġ" joins the next word.
    assert _pieces_by_word(enc.tokens, index, lambda t: t.replace("Ġ", "")) == WORDS
    lone = [w for t, w in zip(enc.tokens, index, strict=True) if t == "Ġ"]
    assert lone == [2, 3]


def test_token_words_without_special_flags_and_bad_input():
    # Empty spans are the added tokens when no flags are given.
    np.testing.assert_array_equal(token_words("a bc", [(0, 0), (0, 1), (2, 3), (3, 4), (0, 0)]), [-1, 0, 1, 1, -1])
    with pytest.raises(ValueError, match="one flag per token"):
        token_words("a", [(0, 1)], special=[0, 0])
    with pytest.raises(ValueError, match="beyond the text"):
        token_words("a", [(0, 5)])


def test_merge_words_max_and_sum_by_hand():
    scores = np.array([[1.0, 2.0, -3.0, 4.0, 5.0], [-1.0, -2.0, 0.5, 7.0, 8.0]])
    index = np.array([[-1, 0, 0, 1, -1], [0, 0, 2, -1, -1]])
    np.testing.assert_allclose(merge_words(scores, index, 3), [[2, 4, 0], [-1, 0, 0.5]])
    np.testing.assert_allclose(merge_words(scores, index, 3, reduce="sum"), [[-1, 4, 0], [-3, 0, 0.5]])
    np.testing.assert_allclose(merge_words(scores[0], index[0], 3, fill=np.nan), [2, 4, np.nan])
    with pytest.raises(ValueError, match="same shape"):
        merge_words(scores, index[:, :4], 3)
    with pytest.raises(ValueError, match="reduce"):
        merge_words(scores, index, 3, reduce="mean")


def test_merge_on_a_real_encoding_keeps_the_total_with_sum():
    enc = _wordpiece().encode(TEXT)
    words, index = encoding_words(TEXT, enc)
    scores = np.random.default_rng(0).normal(size=len(enc.tokens))
    summed = np.asarray(merge_words(scores, index, len(words), reduce="sum"))
    assert summed.sum() == pytest.approx(scores[index >= 0].sum(), rel=1e-5)
    maxed = np.asarray(merge_words(scores, index, len(words)))
    for w in range(len(words)):
        assert maxed[w] == pytest.approx(scores[index == w].max(), rel=1e-6)


def test_coverage_and_word_masks_by_hand():
    index = np.array([[-1, 0, 0, 2, -1], [0, 1, -1, -1, -1]])
    np.testing.assert_array_equal(covered_words(index, 4), [[1, 0, 1, 0], [1, 1, 0, 0]])
    words = np.array([[True, True, False, False], [False, True, True, True]])
    np.testing.assert_array_equal(word_to_token_mask(words, index), [[0, 1, 1, 0, 0], [0, 1, 0, 0, 0]])


def test_benchmark_rationale_through_a_subword_tokenizer():
    config = ts.TextBenchmarkConfig()
    d = ts.make_classification(config, 8, seed=0)
    tok = _wordpiece()  # trained on other text: benchmark words split into several pieces
    encoded = [encoding_words(text, tok.encode(text)) for text in d["text"]]
    n = max(len(index) for _, index in encoded)
    index = np.full((8, n), -1, np.int32)
    for j, (words, idx) in enumerate(encoded):
        assert words == d["text"][j].split() and len(idx) > len(words) + 2
        index[j, : len(idx)] = idx
    gold = d["word_rationale"]
    token_gold = np.asarray(word_to_token_mask(gold, index))
    np.testing.assert_array_equal(token_gold.sum(1) >= gold.sum(1), True)
    # A map that is 1 on the evidence pieces merges back to the word rationale.
    np.testing.assert_array_equal(merge_words(token_gold.astype(np.float32), index, gold.shape[1]), gold)
