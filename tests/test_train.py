"""Training the benchmark models: a smoke test of the loop and the honest check of the shipped checkpoints."""

from __future__ import annotations

import argparse

import jax
import numpy as np
import pytest

from libra_jax.data import SPLITS, BenchmarkConfig, make_single
from libra_jax.loading import load
from libra_jax.models import VisionTransformer, ViTConfig
from libra_jax.preprocess import preprocess
from libra_jax.serialization import save_checkpoint
from libra_jax.train import (
    MODEL_NAMES,
    Recipe,
    add_train_arguments,
    data_config,
    fit,
    make_optimizer,
    make_train_step,
    model_config,
    normalise,
)

SMALL = BenchmarkConfig(image_size=32)


def test_fit_is_deterministic_and_the_checkpoint_round_trips(tmp_path):
    config = ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=SMALL.num_classes)
    model = VisionTransformer(config, data_config(SMALL))
    recipe = Recipe(steps=20, batch_size=16, peak_lr=3e-3, warmup_steps=5)
    lines = []
    params, losses = fit(model, SMALL, recipe, seed=0, log=lines.append, log_every=10)
    assert losses.shape == (20,) and np.all(np.isfinite(losses))
    assert len(lines) == 2 and lines[-1].startswith("step 20/20")
    _, again = fit(model, SMALL, recipe, seed=0, log=lambda _: None)  # same seed, same run
    np.testing.assert_array_equal(losses, again)

    path = save_checkpoint(tmp_path / "tiny.safetensors", model, params, source="test")
    loaded, loaded_params = load(path)
    assert loaded.config == config and loaded.data_config == model.data_config
    images = make_single(SMALL, 8, SPLITS["val"])["images"]
    x = normalise(model, images)
    np.testing.assert_array_equal(preprocess(loaded, images), x)
    logits = model.apply({"params": params}, x)[0]
    np.testing.assert_array_equal(np.asarray(loaded.apply({"params": loaded_params}, x)[0]), np.asarray(logits))


def test_train_step_fits_a_fixed_batch():
    """The optimiser step really descends: repeated on one batch, the loss falls well below chance."""
    config = ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=SMALL.num_classes)
    model = VisionTransformer(config, data_config(SMALL))
    recipe = Recipe(steps=60, batch_size=16, peak_lr=3e-3, warmup_steps=5, label_smoothing=0.0)
    tx = make_optimizer(recipe)
    params = model.init(jax.random.key(0), np.zeros((32, 32, 3), np.float32))["params"]
    opt_state = tx.init(params)
    step = make_train_step(model, tx, recipe)
    data = make_single(SMALL, 16, SPLITS["train"])
    x, y = normalise(model, data["images"]), data["labels"]
    losses = []
    for _ in range(recipe.steps):
        params, opt_state, loss = step(params, opt_state, x, y)
        losses.append(float(loss))
    assert losses[-1] < 0.5 * np.log(SMALL.num_classes) < losses[0]


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
    add_train_arguments(parser)
    args = parser.parse_args(["--model", "swiglu", "--out", "m.safetensors", "--steps", "10"])
    assert (args.model, args.out, args.seed, args.steps) == ("swiglu", "m.safetensors", 0, 10)
    with pytest.raises(SystemExit):
        parser.parse_args(["--model", "resnet", "--out", "m.safetensors"])
