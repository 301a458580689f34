"""LeGrad: the local per-layer gradients equal brute-force gradients through whole forward passes;
layer selection, read-out and min-max; batch == singles; multi-method calls; clear errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import images, tiny_model

import libra_jax
from libra_jax.methods import core
from libra_jax.methods.legrad import layer_gradients, resolve
from libra_jax.methods.legrad import legrad as legrad_map
from libra_jax.models import MixerConfig, MlpMixer, VisionTransformer
from libra_jax.models.layers import PROBES, LayerNorm, Linear
from libra_jax.rules import PRESETS

pytestmark = pytest.mark.usefixtures("highest_precision")

DEPTH = 3
MODELS = {
    "cls": {},
    "gap": dict(class_token=False, global_pool="avg"),
    "map": dict(class_token=False, global_pool="map", reg_tokens=2),
    "distilled": dict(dist_token=True),
}
CASES = [("cls", "cls"), ("cls", "mean"), ("gap", "mean"), ("map", "map"), ("distilled", "cls"), ("distilled", "mean")]


@pytest.fixture(scope="module")
def models():
    """name → (model, params, one image (H, W, 3), its top class)."""
    out = {}
    for name, overrides in MODELS.items():
        model, params = tiny_model(depth=DEPTH, **overrides)
        x = images(model, 1)[0]
        out[name] = (model, params, x, jnp.argmax(model.apply({"params": params}, x)[0]))
    return out


def brute_force(model, params, x, y, rules, layer: int, pool: str) -> jax.Array:
    """∂s_l/∂A_l by `jax.grad` through a whole forward pass with zero probes (no locality used).

    s_l is the explained scalar of the model truncated after block `layer`, classified by the
    model's own forward (class token, GAP over all tokens when there is no prefix, MAP pool).
    For pool="mean" with prefix tokens, s_l is written out here: head(norm(token mean)).
    """
    cfg = model.config
    short = VisionTransformer(cfg.replace(depth=layer + 1))
    kept = {k: v for k, v in params.items() if not k.startswith("blocks_") or int(k.split("_")[1]) <= layer}
    target = core.target_function(rules, None)

    def score(probes):
        logits, aux = short.apply({"params": kept, PROBES: probes}, x, rules)
        if pool == "mean" and cfg.num_prefix_tokens:
            v = LayerNorm(cfg.norm_eps).apply({"params": params["norm"]}, aux["blocks"][-1]["out"].mean(0), rules)
            heads = [k for k in ("head", "head_dist") if k in params]
            logits = sum(Linear(cfg.num_classes).apply({"params": params[k]}, v) for k in heads) / len(heads)
        return target(logits, y)

    grads = jax.grad(score)(core.probe_template(short, x))
    return grads["attn_pool"]["attn"] if pool == "map" else grads[f"blocks_{layer}"]["attn"]["attn"]


def _close(a, b, tol=1e-5):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * (np.abs(b).max() + 1e-12))


@pytest.mark.parametrize("rules", ["vanilla", "libra"])
@pytest.mark.parametrize(("name", "pool"), CASES)
def test_local_gradients_equal_brute_force(models, name, pool, rules):
    model, params, x, y = models[name]
    rules = PRESETS[rules]
    local = layer_gradients(model, params, x, y, rules, core.target_function(rules, None), pool, 0)
    assert len(local) == DEPTH
    for layer, grad in enumerate(local):
        expected = brute_force(model, params, x, y, rules, layer, pool)
        assert np.abs(np.asarray(expected)).max() > 0
        _close(grad, expected)


def _readout(grads, npt: int, pool: str) -> jax.Array:
    """ReLU, mean over heads and query rows, prefix keys zero, mean over layers."""
    maps = [jnp.maximum(g, 0).mean(axis=(0, 1)) for g in grads]
    maps = [jnp.concatenate([jnp.zeros(npt), m if pool == "map" else m[npt:]]) for m in maps]
    return jnp.mean(jnp.stack(maps), 0)


@pytest.mark.parametrize(("name", "pool"), [("cls", "mean"), ("map", "map")])
def test_layer_selection_readout_and_minmax(models, name, pool):
    model, params, x, y = models[name]
    rules = PRESETS["libra"]
    target = core.target_function(rules, None)
    npt = model.config.num_prefix_tokens
    grads = [brute_force(model, params, x, y, rules, layer, pool) for layer in range(DEPTH)]

    every = legrad_map(model, params, x, y, rules, target, layer_index=0, pool=pool, normalize=False)
    _close(every, _readout(grads, npt, pool))
    _close(legrad_map(model, params, x, y, rules, target, layer_index=-DEPTH, pool=pool, normalize=False), every)

    default = legrad_map(model, params, x, y, rules, target)  # layer_index=-2, the model's default pool
    patches = _readout(grads[-2:], npt, pool)[npt:]
    expected = (patches - patches.min()) / (patches.max() - patches.min())
    _close(default, jnp.concatenate([jnp.zeros(npt), expected]))
    assert not np.allclose(np.asarray(every[npt:]), np.asarray(_readout(grads[-2:], npt, pool)[npt:]))


def test_batch_equals_single_calls(models):
    model, params, _, _ = models["cls"]
    x = images(model, 8)
    y = jnp.argmax(model.apply({"params": params}, x)[0], -1)
    fn = jax.jit(libra_jax.methods.libra_legrad(model, return_tokens=True, layer_index=0))
    batch = fn(params, x, y)
    assert batch.shape == (8, model.config.num_tokens)
    for i in range(8):
        _close(fn(params, x[i : i + 1], y[i : i + 1])[0], batch[i])


def test_multi_method_call_equals_separate_calls(models):
    model, params, _, _ = models["map"]
    x = images(model, 2)
    y = jnp.array([1, 3])
    names = ["legrad", "fullgrad_plus"]
    together = jax.jit(libra_jax.attribution(model, names, rules="libra"))(params, x, y)
    for name in names:
        _close(together[name], jax.jit(libra_jax.attribution(model, name, rules="libra"))(params, x, y))
    vanilla = libra_jax.methods.legrad(model)(params, x, y)
    assert not np.allclose(np.asarray(vanilla), np.asarray(together["legrad"]))  # the rules reach the backward


@pytest.mark.parametrize(
    ("name", "pool", "layer_index", "message"),
    [
        ("gap", "cls", -2, "needs a class token"),
        ("cls", "map", -2, "attention-pool"),
        ("map", "mean", -2, "use pool='map'"),
        ("cls", "token", -2, "pool must be one of"),
        ("cls", None, DEPTH, "layer_index must be in"),
        ("cls", None, -DEPTH - 1, "layer_index must be in"),
    ],
)
def test_clear_errors(models, name, pool, layer_index, message):
    model = models[name][0]
    with pytest.raises(ValueError, match=message):
        resolve(model, pool, layer_index)


def test_errors_surface_through_attribution(models):
    model, params, x, y = models["cls"]
    with pytest.raises(ValueError, match="needs an attention-pool"):
        libra_jax.attribution(model, "legrad", pool="map")(params, x[None], y[None])
    with pytest.raises(ValueError, match="num_classes=0"):
        resolve(VisionTransformer(model.config.replace(num_classes=0)), None, -1)
    with pytest.raises(ValueError, match="Vision Transformer"):
        resolve(MlpMixer(MixerConfig(img_size=32, patch_size=16, num_blocks=1, embed_dim=8, num_classes=3)), None, -1)
