"""The embedded decoder (`synthetic_decoder`): training through the shared driver, the shipped file (accuracy,
loading, tokenizer), the libra-jax file format for decoders, and the decoder-task evaluation and its command."""

from __future__ import annotations

import argparse
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import libra_jax
from libra_jax.cli import evaluate as evaluate_command
from libra_jax.cli import train as train_command
from libra_jax.data.text_synthetic import DecoderTaskConfig, decoder_vocabulary, make_decoder_split
from libra_jax.evaluate_decoder import DecoderEvalOptions, candidates, evaluate_decoder, removal
from libra_jax.methods import api
from libra_jax.metrics.deletion import CURVE_FRACTIONS, deletion_curves
from libra_jax.metrics.rationale import source_hits
from libra_jax.models.decoder import Decoder, DecoderConfig
from libra_jax.models.rope1d import RopeScaling
from libra_jax.text import text_inputs
from libra_jax.text.next_token import next_token_target
from libra_jax.text.tokenizer import from_files
from libra_jax.text.train_decoder import TASKS, DecoderRecipe, model_config, predict, training_batch
from libra_jax.weights import embedded
from libra_jax.weights.formats import read_libra_checkpoint, save_checkpoint

NAME = "synthetic_decoder"
TASK = DecoderTaskConfig()


@pytest.fixture(scope="module")
def shipped():
    model, params = libra_jax.load(NAME)
    record = json.loads(read_libra_checkpoint(embedded.path(NAME)).source)
    return model, params, record


def test_training_rows_label_exactly_the_determined_next_tokens():
    inputs, labels = training_batch(TASK, DecoderRecipe(batch_size=16), 3)
    ids, mask = np.asarray(inputs.ids), np.asarray(inputs.attention_mask, bool)
    vocab = decoder_vocabulary(TASK)
    for name, rows in zip(TASKS, (slice(0, 8), slice(8, 16)), strict=True):
        data = make_decoder_split(TASK, name, "train", 8, start=3 * 8)
        n = data["ids"].shape[1]
        for prompt, row_ids, row_labels, row_mask, source in zip(
            data["ids"], ids[rows], labels[rows], mask[rows], data["source"], strict=True
        ):
            # The prompt comes first: as generated (recall), or with its symbols renamed one-to-one (induction).
            pairs = set(zip(prompt, row_ids[:n], strict=True))
            assert len(pairs) == len(set(prompt)) == len(set(row_ids[:n]))
            if name == "recall":
                np.testing.assert_array_equal(row_ids[:n], prompt)
            assert row_ids[0] == vocab.index("[BOS]") and all(vocab[t][0] in "kvs?[" for t in row_ids[row_mask])
            at = np.flatnonzero(row_labels >= 0)
            assert at[0] == n - 1 and row_labels[n - 1] == row_ids[source]  # the answer: the token at the source
            assert row_mask[at].all()
            np.testing.assert_array_equal(row_labels[at[:-1]], row_ids[at[:-1] + 1])  # teacher forcing


def test_a_short_training_run_writes_a_loadable_file_and_tokenizer(tmp_path):
    out, tok = tmp_path / "decoder.safetensors", tmp_path / "tokenizer.json"
    args = argparse.Namespace(model="decoder", out=str(out), seed=0, steps=2, tokenizer_out=str(tok))
    assert train_command.run(args) == 0
    model, params = libra_jax.load(out)
    record = json.loads(read_libra_checkpoint(out).source)
    assert record["steps"] == 2 and record["trained_with"] == "libra_jax.text.train_decoder"
    assert set(record) >= {"recall_accuracy", "induction_accuracy", "test_prompts", "benchmark", "recipe"}
    assert isinstance(model, Decoder) and model.config == model_config(TASK)
    ids = make_decoder_split(TASK, "induction", "val", 4)["ids"]
    assert predict(model, params, ids).shape == (4,)
    tokenizer = from_files(tok, None, {}, model.config.max_length)
    data = make_decoder_split(TASK, "recall", "val", 4)
    np.testing.assert_array_equal(np.asarray(tokenizer(data["text"]).ids), data["ids"])


def test_decoder_checkpoints_round_trip_their_config(tmp_path):
    config = DecoderConfig(
        vocab_size=11,
        hidden_size=8,
        num_layers=2,
        num_heads=2,
        num_kv_heads=1,
        head_dim=4,
        intermediate_size=16,
        max_positions=16,
        rope_scaling=RopeScaling(kind="linear", factor=2.0),
        sliding_window=4,
        layer_types=("sliding_attention", "full_attention"),
    )
    model = Decoder(config)
    params = model.init(jax.random.key(0), text_inputs(np.zeros((1, 3), np.int32)))["params"]
    loaded, loaded_params = libra_jax.load(save_checkpoint(tmp_path / "d.safetensors", model, params))
    assert loaded.config == config
    jax.tree.map(np.testing.assert_array_equal, loaded_params, params)


def test_shipped_decoder_is_small_accurate_and_recorded(shipped):
    """`libra-jax train --model decoder` (all defaults, seed 0) produced the file; 64 unseen 'val' prompts per task."""
    model, params, record = shipped
    assert embedded.path(NAME).stat().st_size <= 10 * 2**20
    assert record["recipe"] == dataclasses.asdict(DecoderRecipe()) and record["seed"] == 0
    assert DecoderTaskConfig(**record["benchmark"]) == TASK and model.config == model_config(TASK)
    for name in TASKS:
        data = make_decoder_split(TASK, name, "val", 64)
        accuracy = np.mean(predict(model, params, data["ids"]) == data["target"])
        assert accuracy >= record[f"{name}_accuracy"] - 0.05, f"{name}: {accuracy:.3f} on 64 val prompts"
    tokenizer = from_files(embedded.tokenizer_path(NAME), None, {}, model.config.max_length)
    data = make_decoder_split(TASK, "induction", "test", 8)
    np.testing.assert_array_equal(np.asarray(tokenizer(data["text"]).ids), data["ids"])


def test_libra_fullgrad_of_the_shipped_decoder_is_complete(shipped):
    model, params, _ = shipped
    data = make_decoder_split(TASK, "recall", "test", 8)
    x = text_inputs(data["ids"])
    y = jnp.stack([jnp.full(8, data["ids"].shape[1] - 1), jnp.asarray(data["target"])], -1)
    with jax.default_matmul_precision("highest"):
        maps = api.attribution(model, "fullgrad", rules="libra_logit", target=next_token_target("logit"))(params, x, y)
        f = model.apply({"params": params}, x)[0][jnp.arange(8), -1, y[:, 1]]
    np.testing.assert_array_less(np.abs(np.asarray(maps.sum(-1) - f)), 1e-5 * np.abs(np.asarray(f)) + 1e-5)


def test_evaluation_equals_the_metrics_applied_directly(shipped):
    model, params, _ = shipped
    n = 6
    result = evaluate_decoder(model, params, [("ixg", "libra")], TASK, DecoderEvalOptions(n=n, progress=False))
    row = result.results[("ixg", "libra")]
    explain = api.attribution(model, "ixg", rules="libra", target=next_token_target("prob"))
    explain_logit = api.attribution(model, "ixg", rules="libra_logit", target=next_token_target("logit"))
    morf, lerf, residuals = [], [], []
    for name in TASKS:
        data = make_decoder_split(TASK, name, "test", n)
        x = text_inputs(data["ids"], data["mask"])
        logits = model.apply({"params": params}, x)[0][:, -1]
        pred = jnp.argmax(logits, -1)
        y = jnp.stack([jnp.full(n, data["ids"].shape[1] - 1), pred], -1)
        scores = explain(params, x, y)
        valid = candidates(data["mask"])
        hits = source_hits(scores, data["source"], valid)
        np.testing.assert_allclose(row[f"{name}_ap"], 100 * np.mean(hits["ap"]), rtol=1e-6)
        np.testing.assert_allclose(row[f"{name}_top1"], 100 * np.mean(hits["top1"]), rtol=1e-6)

        def score(ids, mask, pred=pred):
            return model.apply({"params": params}, text_inputs(ids, mask))[0][jnp.arange(n), -1, pred]

        curves = deletion_curves(score, data["ids"], data["mask"], scores, valid, removal(TASK))
        morf.append(curves["morf"])
        lerf.append(curves["lerf"])
        residuals.append(explain_logit(params, x, y).sum(-1) - logits[jnp.arange(n), pred])
    area = {
        k: np.mean(np.trapezoid(np.concatenate(c), CURVE_FRACTIONS, axis=-1)) for k, c in (("m", morf), ("l", lerf))
    }
    np.testing.assert_allclose(
        [row["morf"], row["lerf"], row["abpc"]], [area["m"], area["l"], area["l"] - area["m"]], rtol=1e-5
    )
    np.testing.assert_allclose(
        row["completeness_error"], np.mean(np.abs(np.concatenate(residuals))), rtol=1e-4, atol=1e-7
    )
    assert result.removal == "delete(left)"


def test_evaluate_command_on_the_decoder(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    evaluate_command.add_arguments(parser)
    out = tmp_path / "out"
    args = parser.parse_args(["--model", NAME, "--method", "ixg", "rollout", "--n", "4", "--out", str(out)])
    assert evaluate_command.run(args) == 0
    printed = capsys.readouterr().out
    assert "Recall top-1" in printed and "delete(left)" in printed
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["method"], r["preset"]) for r in rows] == [
        (m, p) for m in ("ixg", "rollout") for p in ("vanilla", "libra")
    ]
    assert all(np.isfinite(r["abpc"]) for r in rows)


def test_the_task_vocabulary_must_be_the_models():
    model = Decoder(model_config(TASK).replace(vocab_size=len(decoder_vocabulary(TASK)) + 1))
    with pytest.raises(ValueError, match="evaluate a model trained on them"):
        evaluate_decoder(model, {}, [("ixg", "libra")], TASK, DecoderEvalOptions(n=1, progress=False))
