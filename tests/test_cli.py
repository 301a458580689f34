"""`libra-jax explain` end to end on a tiny random ViT (one forward for the top-5 and the maps), its user errors,
the shared command-line vocabulary, and a benchmark smoke run."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import TINY
from PIL import Image
from safetensors.numpy import save_file

from libra_jax import cli, viz
from libra_jax.cli import explain, options
from libra_jax.methods.names import resolve_methods
from libra_jax.models import VisionTransformer, ViTConfig
from libra_jax.weights.keymap import params_to_timm

REPO = pathlib.Path(__file__).resolve().parents[1]
SIZE = TINY["img_size"]
LABELS = ["tench", "goldfish", "great white shark", "tiger shark", "hammerhead"]
MODEL_KW = [f"{key}={value}" for key, value in TINY.items()]  # 32 px, patch 8, width 32, depth 2, 5 classes


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """The tiny ViT as a timm-layout safetensors file (also in an HF-style folder naming its classes), two PNGs."""
    folder = tmp_path_factory.mktemp("cli")
    model = VisionTransformer(ViTConfig(**TINY))
    # random weights drawn from the shapes: an eager `model.init` spends seconds compiling single ops
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((SIZE, SIZE, 3), jnp.float32))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: 0.1 * rng.standard_normal(s.shape, np.float32), shapes["params"])
    save_file(params_to_timm(params), str(folder / "tiny.safetensors"))
    paths = {"checkpoint": str(folder / "tiny.safetensors")}
    # the same weights in a folder laid out like an HF timm repo, whose config.json names the classes
    (folder / "hf").mkdir()
    shutil.copy(folder / "tiny.safetensors", folder / "hf" / "model.safetensors")
    hf_config = {
        "architecture": "vit_tiny_patch16_224",
        "num_classes": TINY["num_classes"],
        "model_args": TINY,
        "pretrained_cfg": {"input_size": [3, SIZE, SIZE], "mean": [0.5] * 3, "std": [0.5] * 3, "num_classes": 5},
        "label_names": LABELS,
    }
    (folder / "hf" / "config.json").write_text(json.dumps(hf_config))
    paths["hf"] = str(folder / "hf" / "model.safetensors")
    for name, shape in (("a.png", (40, 48, 3)), ("b.png", (64, 64, 3))):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / name)
        paths[name] = str(folder / name)
    return paths


def _explain(files, *extra: str, checkpoint: str = "checkpoint") -> int:
    model = ["--model", "vit_tiny_patch16_224", "--checkpoint", files[checkpoint]]
    return cli.main(["explain", *model, "--model-kw", *MODEL_KW, *extra])


def _expected_shape(rows: int, panels: int, scale: int = 1) -> tuple[int, int, int]:
    """The size `viz.grid` gives `rows` × `panels` captioned model-sized panels: the input crop, then overlays
    with their colour bars (captions do not change it)."""
    blank = np.zeros((SIZE * scale, SIZE * scale, 3), np.uint8)
    overlay = viz.overlay(blank, np.zeros((2, 2)))
    return viz.grid([[blank] + [overlay] * (panels - 1)] * rows, [[""] * panels] * rows).shape


def test_explain_writes_overlays_and_prints_top5(files, tmp_path, capsys):
    out = tmp_path / "heat.png"
    methods = ("--method", "libra_fullgrad_plus", "gradcam")
    assert _explain(files, "--image", files["a.png"], *methods, "--out", str(out), checkpoint="hf") == 0
    stdout = capsys.readouterr().out
    top5 = re.findall(r"^\s+\d\. class (\d+)\s+p=([0-9.]+)(.*)$", stdout, re.M)
    assert len(top5) == 5  # the tiny model has exactly five classes
    probs = [float(p) for _, p, _ in top5]
    assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-3
    assert all(name.strip() == LABELS[int(k)] for k, _, name in top5)  # from config.json beside the weights
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
    assert len(re.findall(r"^\s+\d\. class \d+\s+p=[0-9.]+$", stdout, re.M)) == 10  # no config.json: no names
    assert np.asarray(Image.open(out)).shape == _expected_shape(rows=2, panels=3)


def test_explain_several_targets_one_row_each(files, tmp_path, capsys):
    out = tmp_path / "targets.png"
    args = ("--image", files["a.png"], "--image", files["b.png"], "--method", "libra_fullgrad_plus")
    assert _explain(files, *args, "--target", "4", "--target", "1", "--scale", "2", "--out", str(out)) == 0
    assert "explaining class 4, 1 with libra_fullgrad_plus" in capsys.readouterr().out
    assert np.asarray(Image.open(out)).shape == _expected_shape(rows=4, panels=2, scale=2)  # 2 images × 2 classes


def test_rules_put_each_plain_method_under_every_preset(files, tmp_path, capsys):
    out = tmp_path / "rules.png"
    assert (
        _explain(
            files, "--image", files["a.png"], "--method", "gradcam", "--rules", "vanilla", "libra", "--out", str(out)
        )
        == 0
    )
    assert "with vanilla_gradcam, libra_gradcam" in capsys.readouterr().out
    assert np.asarray(Image.open(out)).shape == _expected_shape(rows=1, panels=3)


def _count(jaxpr, primitive: str) -> int:
    """Equations of `primitive` in a jaxpr and every jaxpr nested in it (jit, custom_vjp, vmap bodies)."""
    n = 0
    for eqn in jaxpr.eqns:
        n += eqn.primitive.name == primitive
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                inner = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr wraps a Jaxpr
                if hasattr(inner, "eqns"):
                    n += _count(inner, primitive)
    return n


def test_explain_runs_the_model_forward_once():
    """The patch embedding (the model's only convolution) appears once per forward in explain's jitted step."""
    model = VisionTransformer(ViTConfig(**TINY))
    image = jax.ShapeDtypeStruct((SIZE, SIZE, 3), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), image)["params"]
    x = jax.ShapeDtypeStruct((2, SIZE, SIZE, 3), jnp.float32)

    def forwards(names, rules=None, y=None) -> int:
        step = explain.explainer(model, resolve_methods(names, rules))
        return _count(jax.make_jaxpr(step)(params, x, y).jaxpr, "conv_general_dilated")

    assert forwards(["libra_fullgrad_plus", "libra_gradcam", "libra_ixg"]) == 1  # top-5 and top-1 maps, one forward
    assert forwards(["libra_fullgrad_plus"], y=jax.ShapeDtypeStruct((2, 2), jnp.int32)) == 1  # two targets
    assert forwards(["gradcam"], rules=["vanilla", "libra"]) == 2  # one forward + backward per preset


def test_label_names_forms(tmp_path):
    checkpoint = str(tmp_path / "weights.safetensors")
    assert explain.label_names("vit_tiny_patch16_224", checkpoint, 2) is None  # no config.json beside it
    assert explain.label_names("vit_tiny_patch16_224", checkpoint, 1000)[0] == "tench"  # an ImageNet-1k head
    (tmp_path / "config.json").write_text(json.dumps({"label_names": {"0": "cat", "1": "dog"}}))
    assert explain.label_names("vit_tiny_patch16_224", checkpoint, 2) == {0: "cat", 1: "dog"}
    assert explain.label_names(str(tmp_path), None, 2) == {0: "cat", 1: "dog"}  # a model folder
    assert explain.label_names(str(tmp_path), None, 5) is None  # a re-trained head: the names do not fit
    (tmp_path / "config.json").write_text(json.dumps({"id2label": {"0": "left", "1": "right"}}))
    assert explain.label_names(str(tmp_path), None, 2) == {0: "left", 1: "right"}  # a transformers config
    (tmp_path / "config.json").write_text("{not json")
    assert explain.label_names(str(tmp_path), None, 2) is None


def test_label_names_from_the_hub_cache(tmp_path, monkeypatch):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"label_names": ["a", "b"]}))
    asked = []

    def cached(repo_id, filename, revision=None):
        asked.append((repo_id, filename, revision))
        return str(config)

    monkeypatch.setattr(explain.huggingface_hub, "try_to_load_from_cache", cached)
    assert explain.label_names("vit_tiny_patch16_224", None, 2) == {0: "a", 1: "b"}  # the default tag's repo
    assert explain.label_names("hf-hub:org/model@v1", None, 2) == {0: "a", 1: "b"}
    assert asked == [
        ("timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k", "config.json", None),
        ("org/model", "config.json", "v1"),
    ]
    assert explain.label_names("no_such_architecture", None, 2) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--image", "missing.png"], "missing.png"),
        (["--image", "IMAGE", "--method", "libra_fullgrad_plus", "no_such_method"], "known methods"),
        (["--image", "IMAGE", "--method", "libra_gradcam", "--rules", "vanilla"], "conflicts"),
        (["--image", "IMAGE", "--target", "5"], "out of range"),
        (["--image", "IMAGE", "--target", "-1"], "out of range"),
    ],
)
def test_user_errors_exit_2_with_one_line(files, tmp_path, capsys, args, message):
    args = [files["a.png"] if a == "IMAGE" else a for a in args]
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
    assert options.model_kw("img_size=(32, 32)") == ("img_size", (32, 32))
    assert options.model_kw("norm_eps=1e-5") == ("norm_eps", 1e-5)
    assert options.model_kw("class_token=False") == ("class_token", False)
    assert options.model_kw("act=quick_gelu") == ("act", "quick_gelu")
    assert options.model_kw("img_size=[32, 32]") == ("img_size", (32, 32))  # JSON: lists become tuples
    assert options.model_kw("class_token=false") == ("class_token", False)
    assert options.model_kw('act="gelu"') == ("act", "gelu")


def test_benchmark_smoke():
    """bench.py on ViT-Ti, batch 2, one repeat, IG-2, no torch: about 90 s on 2 CPU cores (mostly XLA compiles)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, str(REPO / "benchmarks" / "bench.py"), "--model", "vit_tiny_patch16_224"]
    result = subprocess.run(
        [*command, "--batch", "2", "--repeats", "1", "--no-torch", "--ig-steps", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,  # generous: a CPU shared with other jobs compiles slower
    )
    assert result.returncode == 0, result.stderr
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| variant | median ms | images/s | × floor")
    # header + floor, libra_fullgrad_plus, fullgrad_plus, all single-pass, legrad, IG, bf16, remat, chunked
    assert len(table) == 10
    assert len(re.findall(r"^(PASS|MISS) ", result.stdout, re.M)) == 3


def test_memory_estimate_script(monkeypatch, tmp_path, capsys):
    """benchmarks/fit.py compiles every variant from abstract shapes and writes its table (tiny geometry)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import bench
    import fit

    monkeypatch.setitem(bench.GEOMETRIES, "tiny", dict(embed_dim=32, depth=1, num_heads=2, img_size=32, patch_size=8))
    out = tmp_path / "fit.md"
    assert fit.main(["--model", "tiny", "--batch", "4", "--budget-gib", "1e-9", "--out", str(out)]) == 0
    rows = [line.split("|") for line in out.read_text().splitlines() if line.startswith("| tiny |")]
    assert len(rows) == 7 and all(0 <= float(r[3]) < 1 and r[4].strip() == "no" for r in rows)  # a few MiB > 1 B
