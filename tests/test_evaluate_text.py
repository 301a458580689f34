"""`libra-jax evaluate` on a text classifier: the CLI on the embedded synthetic_bert (small n), the numbers of
`evaluate_text` against the metric functions applied directly to `attribution` outputs, and the image-only
metrics refusing a text model (and the text evaluation refusing an image model)."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import libra_jax
from libra_jax import attribution
from libra_jax.cli import main
from libra_jax.data import text_synthetic
from libra_jax.evaluate import EvaluateOptions, evaluate_data
from libra_jax.evaluate_text import F1_KS, TEXT_COLUMNS, evaluate_text, removals, word_index
from libra_jax.metrics import deletion, faithfulness, rationale
from libra_jax.models import VisionTransformer, ViTConfig
from libra_jax.text import covered_words, merge_words, text_inputs
from libra_jax.trained import load_model
from libra_jax.weights.formats import save_checkpoint
from tests.helpers import TINY

N = 8


@pytest.fixture(scope="module")
def bert():
    return libra_jax.load("synthetic_bert")


def test_cli_evaluates_a_text_classifier(tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["evaluate", "--model", "synthetic_bert", "--n", str(N), "--batch", "4", "--method", "fullgrad"]
    assert main([*argv, "--rules", "vanilla", "libra", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "Comp. [MASK] ↑" in table and "Class-disc AP ↑" in table
    record = json.loads((out / "results.json").read_text())
    assert record["meta"]["eraser_removal"] == {"mask": "replace(4)", "delete": "delete(right)"}
    rows = {(r["method"], r["preset"]): r for r in record["rows"]}
    assert set(rows) == {("fullgrad", "vanilla"), ("fullgrad", "libra")}
    for row in rows.values():
        assert all(np.isfinite(row[k]) for k, _ in TEXT_COLUMNS)
    errors = [rows[("fullgrad", p)]["completeness_error"] for p in ("libra", "vanilla")]
    assert errors[0] < 1e-4 < errors[1]
    assert (out / "results.md").exists() and (out / "results.csv").read_text().startswith("method,preset,f1_at_1")
    for bad in (["--plot"], ["--data", "imagenet:/nowhere"]):
        assert main([*argv, "--out", str(tmp_path / "bad"), *bad]) == 2
        assert "text" in capsys.readouterr().err


def test_numbers_are_the_metric_functions_on_the_attribution_maps(bert):
    model, params = bert
    got = evaluate_text(model, params, [("ixg", "libra")], EvaluateOptions(n=N, batch_size=N, progress=False))
    got = got.results[("ixg", "libra")]

    config = text_synthetic.TextBenchmarkConfig(num_classes=model.capabilities.num_classes)
    data, pairs = (text_synthetic.make_split(config, split, N) for split in ("test", "pairs"))
    x, labels = text_inputs(data["ids"], data["mask"]), jnp.asarray(data["labels"])
    maps = jax.jit(attribution(model, "ixg", rules="libra"))(params, x, labels)
    complete, logits = jax.jit(attribution(model, "ixg", rules="libra_logit", return_logits=True))(
        params, x, jnp.argmax(model.apply({"params": params}, x)[0], -1)
    )
    index = word_index(data["content"])
    words = merge_words(maps, index, config.max_words)
    valid = covered_words(index, config.max_words)
    gold = data["word_rationale"]
    f1 = rationale.token_f1(words, gold, valid, F1_KS)["macro_f1"]
    want = {f"f1_at_{k}": 100 * v for k, v in zip(F1_KS, f1, strict=True)}
    want["f1_chefer"] = 100 * rationale.token_f1(words, gold, valid)["macro_f1"].mean()
    want["rationale_ap"] = 100 * np.mean(rationale.rationale_ap(words, gold, valid))
    want["completeness_error"] = np.mean(np.abs(np.asarray(complete).sum(-1) - np.asarray(logits).max(-1)))

    def predict(ids, mask):
        return jax.nn.softmax(model.apply({"params": params}, text_inputs(ids, mask))[0], -1)

    for name, removal in removals(config).items():
        eraser = deletion.comprehensiveness_sufficiency(
            predict, data["ids"], data["mask"], maps, data["content"], removal, labels
        )
        want[f"comp_{name}"], want[f"suff_{name}"] = eraser["comprehensiveness"].mean(), eraser["sufficiency"].mean()

    px = text_inputs(pairs["ids"], pairs["mask"])
    two = jax.jit(attribution(model, "ixg", rules="libra"))(params, px, jnp.asarray(pairs["labels"]))
    pindex = word_index(pairs["content"])
    pvalid = covered_words(pindex, config.max_words)
    own, other = [], []
    for c in range(2):
        w = merge_words(two[:, c], pindex, config.max_words)
        own.append(rationale.rationale_ap(w, pairs["word_rationale"][:, c], pvalid))
        other.append(rationale.rationale_ap(w, pairs["word_rationale"][:, 1 - c], pvalid))
    want["class_disc_ap"], want["class_disc_other_ap"] = 100 * np.mean(own), 100 * np.mean(other)

    assert set(want) == {k for k, _ in TEXT_COLUMNS}
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    assert got["rationale_ap"] > 80  # libra IxG finds the evidence of the trained model


def test_a_text_checkpoint_loads_with_the_benchmark_it_records(bert, tmp_path):
    model, params = bert
    config = text_synthetic.TextBenchmarkConfig(num_classes=4, max_words=20)
    record = {"trained_with": "libra_jax.text.train", "benchmark": dataclasses.asdict(config)}
    path = save_checkpoint(tmp_path / "bert.safetensors", model, params, source=json.dumps(record))
    assert load_model(str(path))[2] == config
    assert load_model("synthetic_bert")[2] == text_synthetic.TextBenchmarkConfig()  # the embedded file's record


def test_image_metrics_refuse_a_text_model_and_the_text_evaluation_an_image_model(bert):
    model, params = bert
    x = text_inputs(np.full((1, 4), 5, np.int32))
    with pytest.raises(ValueError, match="plain sequence.*libra_jax.metrics.deletion"):
        faithfulness.deletion_curves(model, params, x, jnp.zeros((1, 4)), jnp.array([0]))
    with pytest.raises(ValueError, match="plain sequence.*evaluate_text"):
        evaluate_data(model, params, [("ixg", "libra")], "benchmark", EvaluateOptions(n=2, progress=False))
    vit = VisionTransformer(ViTConfig(**{**TINY, "num_classes": 4}))
    vit_params = jax.eval_shape(vit.init, jax.random.PRNGKey(0), jnp.zeros((32, 32, 3)))["params"]
    with pytest.raises(ValueError, match="class token .*evaluate_data"):
        evaluate_text(vit, vit_params, [("ixg", "libra")], EvaluateOptions(n=2, progress=False))
