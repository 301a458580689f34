"""`libra-jax explain` end to end on a tiny random ViT, its user errors, and a benchmark smoke run."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from helpers import tiny_model
from PIL import Image
from safetensors.numpy import save_file

from libra_jax import cli, viz
from libra_jax.checkpoint import params_to_timm

REPO = pathlib.Path(__file__).resolve().parents[1]
SIZE = 32  # helpers.TINY: 32 px, patch 8, width 32, depth 2, 2 heads, 5 classes
MODEL_KW = ["img_size=32", "patch_size=8", "embed_dim=32", "depth=2", "num_heads=2", "num_classes=5"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """A timm-layout safetensors checkpoint of the tiny ViT and two PNG images of different sizes."""
    folder = tmp_path_factory.mktemp("cli")
    _, params = tiny_model()
    save_file(params_to_timm(params), str(folder / "tiny.safetensors"))
    rng = np.random.default_rng(0)
    paths = {"checkpoint": str(folder / "tiny.safetensors")}
    for name, shape in (("a.png", (40, 48, 3)), ("b.png", (64, 64, 3))):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / name)
        paths[name] = str(folder / name)
    return paths


def _explain(files, *extra: str) -> int:
    model = ["--model", "vit_tiny_patch16_224", "--checkpoint", files["checkpoint"]]
    return cli.main(["explain", *model, "--model-kw", *MODEL_KW, *extra])


def _expected_shape(rows: int, panels: int) -> tuple[int, int, int]:
    """The size `viz.grid` gives `rows` × `panels` captioned model-sized panels (captions do not change it)."""
    blank = np.zeros((SIZE, SIZE, 3), np.uint8)
    return viz.grid([[blank] * panels] * rows, [[""] * panels] * rows).shape


def test_explain_writes_overlays_and_prints_top5(files, tmp_path, capsys):
    out = tmp_path / "heat.png"
    code = _explain(files, "--image", files["a.png"], "--method", "libra_fullgrad_plus", "gradcam", "--out", str(out))
    assert code == 0
    stdout = capsys.readouterr().out
    probs = [float(p) for p in re.findall(r"^\s+\d\. class \d+\s+p=([0-9.]+)", stdout, re.M)]
    assert len(probs) == 5  # the tiny model has exactly five classes
    assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-3
    assert f"wrote {out}" in stdout
    image = np.asarray(Image.open(out))
    assert image.shape == _expected_shape(rows=1, panels=3)  # input + two methods


def test_explain_batch_with_target_and_rules(files, tmp_path, capsys):
    out = tmp_path / "nested" / "two.png"
    code = _explain(
        files,
        *("--image", files["a.png"], "--image", files["b.png"]),
        *("--method", "gradcam", "--method", "ixg", "--rules", "libra", "--target", "4", "--out", str(out)),
    )
    assert code == 0
    stdout = capsys.readouterr().out
    assert stdout.count("1. class") == 2 and "explaining class 4, 4" in stdout
    assert np.asarray(Image.open(out)).shape == _expected_shape(rows=2, panels=3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--image", "missing.png"], "missing.png"),
        (["--image", "{a.png}", "--method", "libra_fullgrad_plus", "no_such_method"], "known methods"),
        (["--image", "{a.png}", "--method", "libra_gradcam", "--rules", "vanilla"], "conflicts"),
        (["--image", "{a.png}", "--target", "5"], "out of range"),
        (["--image", "{a.png}", "--target", "-1"], "out of range"),
    ],
)
def test_user_errors_exit_2_with_one_line(files, tmp_path, capsys, args, message):
    args = [a.format(**files) for a in args]
    out = tmp_path / "never.png"
    assert _explain(files, *args, "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_undecodable_image_is_named(files, tmp_path, capsys):
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    assert _explain(files, "--image", str(bad)) == 2
    assert str(bad) in capsys.readouterr().err


def test_usage_errors_return_2(capsys):
    assert cli.main(["explain", "--image", "a.png"]) == 2  # --model is required
    assert cli.main(["explain", "--model", "m", "--image", "a.png", "--model-kw", "depth"]) == 2
    assert cli.main([]) == 2
    assert "--model" in capsys.readouterr().err


def test_model_kw_parses_literals():
    assert cli.model_kw("img_size=(32, 32)") == ("img_size", (32, 32))
    assert cli.model_kw("norm_eps=1e-5") == ("norm_eps", 1e-5)
    assert cli.model_kw("class_token=False") == ("class_token", False)
    assert cli.model_kw("act=quick_gelu") == ("act", "quick_gelu")


def test_benchmark_smoke():
    """bench.py on ViT-Ti, batch 2, one repeat, no torch: about 25 s on 2 CPU cores (mostly XLA compiles)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, str(REPO / "benchmarks" / "bench.py"), "--model", "vit_tiny_patch16_224"]
    result = subprocess.run(
        [*command, "--batch", "2", "--repeats", "1", "--no-torch"],
        capture_output=True,
        text=True,
        env=env,
        timeout=55,
    )
    assert result.returncode == 0, result.stderr
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| variant | median ms | images/s | × floor")
    assert len(table) == 5  # header + floor, libra_fullgrad_plus, fullgrad_plus, all single-pass
    assert len(re.findall(r"^(PASS|MISS) ", result.stdout, re.M)) == 2
