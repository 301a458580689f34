"""The embedded text classifier: the shipped file's accuracy, its reliance on the evidence, its tokenizer,
and a training smoke run (a few steps, tiny batch)."""

from __future__ import annotations

import argparse
import dataclasses
import json

import jax
import numpy as np
import pytest

import libra_jax
from libra_jax.cli import train as train_command
from libra_jax.cli.options import UserError
from libra_jax.data.text_synthetic import (
    DISTRACTORS,
    EVIDENCE,
    SPECIALS,
    TextBenchmarkConfig,
    encode,
    make_split,
    vocabulary,
)
from libra_jax.models.bert import BertClassifier
from libra_jax.text.tokenizer import from_files
from libra_jax.text.train import TextRecipe, model_config, predict_proba, remove_evidence
from libra_jax.weights import embedded
from libra_jax.weights.formats import read_libra_checkpoint

NAME = "synthetic_bert"
N = 512


@pytest.fixture(scope="module")
def shipped():
    """(model, params, benchmark config recorded in the file, 512 test-split examples)."""
    model, params = libra_jax.load(NAME)
    record = json.loads(read_libra_checkpoint(embedded.path(NAME)).source)
    benchmark = TextBenchmarkConfig(**record["benchmark"])
    return model, params, benchmark, make_split(benchmark, "test", N)


def test_shipped_model_loads_as_recorded_and_is_small(shipped):
    """`libra-jax train --model bert` (all defaults, seed 0) is the command that produced the shipped file."""
    model, _, benchmark, _ = shipped
    record = json.loads(read_libra_checkpoint(embedded.path(NAME)).source)
    assert record["recipe"] == dataclasses.asdict(TextRecipe()) and record["seed"] == 0
    assert benchmark == TextBenchmarkConfig()
    assert isinstance(model, BertClassifier) and model.config == model_config(benchmark)
    assert model.config.vocab_size == len(vocabulary(benchmark))
    assert model.config.num_classes == benchmark.num_classes
    assert model.config.max_length >= benchmark.seq_len
    assert embedded.path(NAME).stat().st_size <= 10 * 2**20
    with pytest.raises(ValueError, match="loads as stored"):
        libra_jax.load(NAME, num_classes=3)


def test_shipped_model_is_accurate_on_the_test_split(shipped):
    model, params, _, data = shipped
    accuracy = np.mean(predict_proba(model, params, data["ids"], data["mask"]).argmax(-1) == data["labels"])
    assert accuracy >= 0.98


def test_removing_the_evidence_removes_the_prediction(shipped):
    # Without its evidence a sentence is independent of its label (distractors carry no class), so the argmax
    # can match the label by chance only; the evidence-free model must instead drop its confidence in the label.
    model, params, benchmark, data = shipped
    rows = np.arange(N)
    before = predict_proba(model, params, data["ids"], data["mask"])[rows, data["labels"]]
    ids = remove_evidence(data["ids"], data["rationale"], np.random.default_rng(0))
    after = predict_proba(model, params, ids, data["mask"])[rows, data["labels"]]
    assert np.mean(before > 0.5) >= 0.98
    assert np.mean(after < 0.5) >= 0.95
    # Deleting the evidence words (the sentence closes up, [SEP] moves left) does the same.
    deleted = [
        [w for w, r in zip(text.split(), keep, strict=False) if not r]
        for text, keep in zip(data["text"], data["word_rationale"], strict=True)
    ]
    ids, mask = encode(deleted, vocabulary(benchmark), benchmark.seq_len)
    assert np.mean(predict_proba(model, params, ids, mask)[rows, data["labels"]] < 0.5) >= 0.95
    # Swapping each evidence word for the same-index word of the next class flips the argmax to that class.
    k, per_class = benchmark.num_classes, len(EVIDENCE[0])
    assert all(len(words) == per_class for words in EVIDENCE[:k])
    first = len(SPECIALS) + len(DISTRACTORS)  # id of the first evidence word (`vocabulary`'s order)
    cls, word = np.divmod(data["ids"] - first, per_class)
    swapped = np.where(data["rationale"], first + ((cls + 1) % k) * per_class + word, data["ids"])
    flipped = predict_proba(model, params, swapped, data["mask"]).argmax(-1)
    assert np.mean(flipped == (data["labels"] + 1) % k) >= 0.95


def test_shipped_tokenizer_reproduces_the_benchmark_ids(shipped):
    model, _, _, data = shipped
    tokenizer = from_files(embedded.tokenizer_path(NAME), None, {}, model.config.max_length)
    inputs = tokenizer(data["text"])
    n = inputs.ids.shape[1]
    np.testing.assert_array_equal(np.asarray(inputs.attention_mask, bool), data["mask"][:, :n])
    np.testing.assert_array_equal(np.asarray(inputs.ids), data["ids"][:, :n])  # both pad with [PAD] = 0
    assert not data["mask"][:, n:].any()


def test_a_three_step_training_run_writes_a_loadable_file(tmp_path):
    out, tok = tmp_path / "bert.safetensors", tmp_path / "tokenizer.json"
    args = argparse.Namespace(model="bert", out=str(out), seed=0, steps=3, tokenizer_out=str(tok))
    assert train_command.run(args) == 0
    model, params = libra_jax.load(out)
    record = json.loads(read_libra_checkpoint(out).source)
    assert record["steps"] == 3 and record["trained_with"] == "libra_jax.text.train"
    shipped_model, shipped_params = libra_jax.load(NAME)
    assert model.config == shipped_model.config
    assert jax.tree.structure(params) == jax.tree.structure(shipped_params)
    assert tok.read_text() == embedded.tokenizer_path(NAME).read_text()


def test_tokenizer_out_is_for_the_text_model_only(tmp_path):
    args = argparse.Namespace(model="vit", out=str(tmp_path / "m.safetensors"), seed=0, steps=1, tokenizer_out="t.json")
    with pytest.raises(UserError, match="--tokenizer-out is for --model bert"):
        train_command.run(args)
