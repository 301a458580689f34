"""Training the benchmark models: a smoke test of the loop and the honest check of the shipped checkpoints."""

from __future__ import annotations

import argparse
import dataclasses
import json

import jax
import numpy as np
import pytest
import safetensors

from libra_jax.cli import train as train_command
from libra_jax.data import SPLITS, BenchmarkConfig, make_single
from libra_jax.models import VisionTransformer, ViTConfig
from libra_jax.preprocess import normalise, preprocess
from libra_jax.train import (
    MODEL_NAMES,
    Recipe,
    asset_path,
    batches,
    data_config,
    dihedral,
    easy_benchmark,
    fit,
    model_config,
    predict,
)
from libra_jax.weights.formats import read_libra_checkpoint, save_checkpoint
from libra_jax.weights.loading import load

SMALL = BenchmarkConfig(image_size=32)


def test_fit_reduces_the_loss_and_the_checkpoint_round_trips(tmp_path):
    config = ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=SMALL.num_classes)
    model = VisionTransformer(config, data_config(SMALL))
    recipe = Recipe(steps=40, batch_size=32, peak_lr=3e-3, warmup_steps=5, easy_steps=10, pool_size=100)
    lines = []
    params, losses = fit(model, SMALL, recipe, seed=0, log=lines.append, log_every=20)
    assert losses.shape == (40,) and np.all(np.isfinite(losses))
    assert losses[-10:].mean() < losses[:10].mean() - 0.05
    assert len(lines) == 2 and lines[-1].startswith("step 40/40")
    # Same seed, same run.
    _, again = fit(model, SMALL, recipe, seed=0, log=lambda _: None)
    np.testing.assert_array_equal(losses, again)

    path = save_checkpoint(tmp_path / "tiny.safetensors", model, params, source="test")
    loaded, loaded_params = load(path)
    assert loaded.config == config and loaded.data_config == model.data_config
    images = make_single(SMALL, 8, SPLITS["val"])["images"]
    x = normalise(images, model.data_config)
    np.testing.assert_array_equal(preprocess(loaded, images), x)
    logits = model.apply({"params": params}, x)[0]
    np.testing.assert_array_equal(np.asarray(loaded.apply({"params": loaded_params}, x)[0]), np.asarray(logits))


def test_dihedral_gives_the_eight_symmetries_of_the_square():
    image = np.random.default_rng(0).random((1, 5, 5, 3))
    out = dihedral(np.repeat(image, 8, 0), np.arange(8))
    expected = [np.rot90(image[0], k) for k in range(4)] + [np.rot90(image[0], k).transpose(1, 0, 2) for k in range(4)]
    np.testing.assert_array_equal(out, np.stack(expected))
    assert len({o.tobytes() for o in out}) == 8


def test_batches_are_deterministic_and_come_from_the_easy_set_then_the_pool():
    model = VisionTransformer(model_config("vit", SMALL), data_config(SMALL))
    recipe = Recipe(steps=6, batch_size=4, easy_steps=2, pool_size=6)
    got = list(batches(model, SMALL, recipe))
    again = list(batches(model, SMALL, recipe))
    for (x, y), (x2, y2) in zip(got, again, strict=True):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    easy = make_single(easy_benchmark(SMALL), 8, SPLITS["train"])
    np.testing.assert_array_equal(np.concatenate([got[0][0], got[1][0]]), normalise(easy["images"], model.data_config))
    # Later batches: each image is a symmetry of a pool image (examples 8..13 of the train split),
    # each pool image once per epoch of 6.
    pool = make_single(SMALL, 6, SPLITS["train"], start=8)
    candidates = {}
    for i, image in enumerate(pool["images"]):
        for variant in dihedral(np.repeat(image[None], 8, 0), np.arange(8)):
            candidates[normalise(variant, model.data_config).tobytes()] = i
    drawn = [candidates[x.tobytes()] for xb, _ in got[2:] for x in xb]
    assert sorted(drawn[:6]) == sorted(drawn[6:12]) == list(range(6))
    labels = np.concatenate([yb for _, yb in got[2:]])
    np.testing.assert_array_equal(labels, pool["labels"][drawn])


def test_model_configs():
    bench = BenchmarkConfig()
    vit, glu = (model_config(name, bench) for name in MODEL_NAMES)
    assert vit.mlp_layer == "mlp" and vit.act == "gelu" and vit.global_pool == "token"
    assert glu.mlp_layer == "glu" and glu.act == "silu"
    assert vit.num_patches == glu.num_patches == 64 and vit.num_classes == bench.num_classes
    with pytest.raises(ValueError, match="unknown model"):
        model_config("resnet", bench)


def test_cli_arguments():
    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    args = parser.parse_args(["--model", "swiglu", "--out", "m.safetensors", "--steps", "10"])
    assert (args.model, args.out, args.seed, args.steps) == ("swiglu", "m.safetensors", 0, 10)
    with pytest.raises(SystemExit):
        parser.parse_args(["--model", "resnet", "--out", "m.safetensors"])


def test_shipped_checkpoints_record_the_default_recipe():
    """`libra-jax train --model NAME` (all defaults) is the command that produced each shipped model."""
    for name in MODEL_NAMES:
        record = json.loads(read_libra_checkpoint(asset_path(name)).source)
        assert record["recipe"] == dataclasses.asdict(Recipe()) and record["seed"] == 0
        assert BenchmarkConfig(**record["benchmark"]) == BenchmarkConfig()


def test_shipped_checkpoints_are_small():
    assert sum(asset_path(name).stat().st_size for name in MODEL_NAMES) <= 10 * 2**20


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_shipped_checkpoint_is_accurate(name):
    path = asset_path(name)
    record = json.loads(read_libra_checkpoint(path).source)
    assert record["model"] == name and record["test_accuracy"] >= 0.95
    bench = BenchmarkConfig(**record["benchmark"])
    model, params = load(path)
    assert model.config == model_config(name, bench)
    # Freshly generated images the model has never been scored on (the 'val' split), through the
    # public preprocessing path.
    data = make_single(bench, 512, SPLITS["val"])
    logits = jax.jit(lambda p, x: model.apply({"params": p}, x)[0])(params, preprocess(model, data["images"]))
    accuracy = np.mean(np.argmax(np.asarray(logits), -1) == data["labels"])
    assert accuracy >= 0.95, f"{name}: {accuracy:.3f} on 512 val images"
    np.testing.assert_array_equal(predict(model, params, data["images"][:64]), np.argmax(logits[:64], -1))
    with safetensors.safe_open(str(path), framework="numpy") as f:
        assert f.metadata()["format"] == "libra-jax"
