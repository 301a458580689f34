"""`libra-jax evaluate` tables on the synthetic benchmark (a tiny random model; fast)."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from helpers import tiny_model

from libra_jax import cli, evaluate, report
from libra_jax.data import synthetic
from libra_jax.preprocess import normalise
from libra_jax.run.progress import Progress
from libra_jax.weights.formats import save_checkpoint

pytestmark = pytest.mark.usefixtures("highest_precision")


@pytest.fixture(scope="module")
def results():
    model, params = tiny_model(img_size=64, patch_size=16, num_classes=8)
    cfg = synthetic.BenchmarkConfig()
    res, curves = evaluate.evaluate(
        model,
        params,
        [(m, p) for m in ("ixg", "fullgrad", "genatt") for p in ("vanilla", "libra")],
        lambda: evaluate.benchmark_batches(cfg, "test", 6, 4),
        6,
        pair_batches=lambda: evaluate.benchmark_batches(cfg, "pairs", 4, 4),
        n_pairs=4,
        progress=False,
    )
    return res, curves


def test_every_column_filled(results):
    res, curves = results
    assert set(res) == {(m, p) for m in ("ixg", "fullgrad", "genatt") for p in ("vanilla", "libra")}
    for row in res.values():
        for key, _ in evaluate.COLUMNS:
            assert not math.isnan(row[key]), key
        assert 0 <= row["seg_ap"] <= 100 and 0 <= row["class_disc_ap"] <= 100
    assert curves[("ixg", "libra")]["mif_correct"].shape == (9, 6)


def test_libra_fullgrad_is_complete_and_vanilla_is_not(results):
    res, _ = results
    assert res[("fullgrad", "libra")]["completeness_error"] < 1e-5
    assert res[("fullgrad", "vanilla")]["completeness_error"] > 1e-3


def test_tables(results, tmp_path):
    res, curves = results
    md = report.format_table(res)
    assert md.splitlines()[0].startswith("| method | preset | MIF")
    assert len(md.splitlines()) == 2 + len(res)
    rows = list(csv.DictReader(io.StringIO(report.format_table(res, "csv"))))
    assert {(r["method"], r["preset"]) for r in rows} == set(res)
    files = report.write_results(tmp_path / "out", res, curves, {"n": 6}, plot=True)
    assert json.loads((tmp_path / "out" / "results.json").read_text())["meta"] == {"n": 6}
    assert set(files) == {"results.md", "results.csv", "results.json", "curves.png"}
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left


def test_cli_evaluate_on_a_saved_model(tmp_path, capsys):
    model, params = tiny_model(img_size=64, patch_size=16, num_classes=8)
    path = save_checkpoint(tmp_path / "m.safetensors", model, params)
    out = tmp_path / "eval"
    code = cli.main(
        [
            "evaluate",
            "--model",
            str(path),
            "--method",
            "ixg",
            "--rules",
            "libra",
            "--n",
            "2",
            "--batch",
            "2",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert "| ixg | libra |" in capsys.readouterr().out
    assert (out / "results.csv").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--method", "ixgg"], "unknown method"),
        (["--method", "libra_ixg", "attnlrp"], "conflicts"),  # attnlrp is no preset of the default rules
        (["--rules", "libbra"], "invalid choice"),
        (["--data", "cifar:/x"], "cifar"),
        (["--n", "0"], "positive"),
    ],
)
def test_cli_evaluate_errors(tmp_path, capsys, argv, message):
    model, params = tiny_model(img_size=64, patch_size=16, num_classes=8)
    path = save_checkpoint(tmp_path / "m.safetensors", model, params)
    assert cli.main(["evaluate", "--model", str(path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_progress_reports_rate_after_compile():
    stream = io.StringIO()
    bar = Progress(10, "x", stream)
    bar.update(5)
    assert "(compiling)" in stream.getvalue()
    bar.update(5)
    assert "img/s" in stream.getvalue() and stream.getvalue().endswith("\n")


def test_normalise_matches_data_config():
    model, _ = tiny_model(img_size=64, patch_size=16, num_classes=8)
    img = np.full((1, 64, 64, 3), 255, np.uint8)
    np.testing.assert_allclose(normalise(img, model.data_config), 1.0)  # (1 - 0.5) / 0.5


def test_cli_evaluate_on_an_image_folder(tmp_path, capsys):
    from PIL import Image

    model, params = tiny_model(img_size=64, patch_size=16, num_classes=8)
    path = save_checkpoint(tmp_path / "m.safetensors", model, params)
    rng = np.random.default_rng(0)
    for cls in ("n01", "n02"):
        (tmp_path / "val" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (80, 72, 3), np.uint8)).save(tmp_path / "val" / cls / f"{i}.png")
    (tmp_path / "val" / "n02" / "broken.png").write_bytes(b"not an image")
    argv = ["evaluate", "--model", str(path), "--data", f"imagenet:{tmp_path / 'val'}", "--method", "fullgrad"]
    assert cli.main([*argv, "--rules", "libra", "--n", "8", "--batch", "3", "--out", str(tmp_path / "o")]) == 0
    captured = capsys.readouterr()
    assert "| fullgrad | libra |" in captured.out
    assert "broken.png" in captured.err  # skipped and listed, not fatal


def test_cli_evaluate_methods_rules_and_model_kw(tmp_path, capsys):
    """--method a b, --rules p q (plain names under each, prefixed ones as named) and --model-kw reach the model."""
    model, params = tiny_model(img_size=64, patch_size=16, num_classes=8)
    path = save_checkpoint(tmp_path / "m.safetensors", model, params)
    argv = ["evaluate", "--model", str(path), "--method", "ixg", "libra_fullgrad", "--rules", "vanilla", "libra"]
    argv += ["--n", "2", "--batch", "2", "--out", str(tmp_path / "o")]
    assert cli.main([*argv, "--model-kw", "norm_eps=1e-5"]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    rows = [tuple(line.split(" | ")[:2]) for line in table[1:]]
    assert rows == [("| ixg", "vanilla"), ("| ixg", "libra"), ("| fullgrad", "libra")]
    meta = json.loads((tmp_path / "o" / "results.json").read_text())["meta"]
    assert meta["methods"] == ["ixg", "fullgrad"] and meta["presets"] == ["vanilla", "libra"]
    assert cli.main([*argv, "--model-kw", "depth=1"]) == 2  # a 1-block model does not take the 2-block weights
    assert "cannot load model" in capsys.readouterr().err


def test_benchmark_refuses_a_model_with_other_classes_with_advice():
    model, params = tiny_model(num_classes=1000)
    with pytest.raises(ValueError, match=r"8–10 shape classes, so a 1000-class model cannot be scored on it.*--data"):
        evaluate.evaluate_data(model, params, [("ixg", "libra")], "benchmark", evaluate.EvaluateOptions(4, 2))
