"""GenAtt, attention rollout and raw attention against independent NumPy re-implementations.

Each reference is written from the papers' / official code's formulas (chefer_legrad.md §1.6–1.7,
libragrad.md §2.2 items 9–10) and fed only A_l and ∂f/∂A_l from `core.single_pass`.

GenAtt: LibraGrad's ½-residual form Π_l (½·Ā_l + ½·I) is *exactly* Chefer's Π_l (I + Ā_l) times 2^-(L - start):
the product is multilinear in the factors, so the positive constant factors out of every entry of the matrix,
the CLS entry [0, 0] and the identity terms included. The two maps are therefore equal up to one positive
scalar (not just in ranking), and identical after any scale-invariant normalisation (min-max, sum-to-one).
In floating point, scaling by a power of two commutes with rounding, so the same op order gives bit-equal results.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import TINY, images, tiny_model

from libra_jax.methods import attribution, core
from libra_jax.methods.maps import genatt, rawatt, rollout
from libra_jax.models import VisionTransformer, ViTConfig
from libra_jax.rules import get_rules

DEPTH = 3
START_LAYERS = (0, 1)


def _tiny_model(seed: int = 0):
    """(model, float64 params, 2 images, 2 classes): numpy-drawn (no JAX RNG to compile); q/k scaled up
    so that attention is far from uniform."""
    model = VisionTransformer(ViTConfig(**{**TINY, "depth": DEPTH}))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name, shape = path[-1].key, leaf.shape
        if name == "kernel":
            value = rng.normal(0, np.prod(shape[:-1]) ** -0.5, shape)
            if "qkv" in jax.tree_util.keystr(path):
                value[:, : 2 * shape[0]] *= 3.0
        elif name == "scale":
            value = 1 + 0.1 * rng.normal(size=shape)
        else:  # biases, tokens, position embedding, LayerScale
            value = 0.1 * rng.normal(size=shape)
        return jnp.asarray(value, jnp.float64)

    x = jnp.asarray(rng.uniform(-1, 1, size=(2, *model.config.img_size, 3)), jnp.float64)  # normalised pixels
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x[0])["params"]
    return model, jax.tree_util.tree_map_with_path(draw, shapes), x, jnp.array([1, 3])


def _exact():
    stack = contextlib.ExitStack()
    stack.enter_context(jax.enable_x64(True))
    stack.enter_context(jax.default_matmul_precision("highest"))
    return stack


@pytest.fixture(scope="module")
def records():
    """(model, [per-image record as numpy]) from one jitted, vmapped `single_pass` (vanilla rules, logit)."""
    with _exact():
        model, params, x, y = _tiny_model()
        rules = get_rules("vanilla")
        target = core.target_function(rules, "logit")
        keys = ("attn", "attn_grad", "logits")
        run = jax.jit(
            jax.vmap(lambda xi, yi: {k: core.single_pass(model, params, xi, yi, rules, target)[k] for k in keys})
        )
        out = jax.tree.map(np.asarray, run(x, y))
    recs = [jax.tree.map(lambda v, i=i: v[i], out) for i in range(len(x))]
    return model, recs


def _maps(fn, model, rec, **kwargs) -> np.ndarray:
    with jax.enable_x64(True):
        return np.asarray(fn(jax.tree.map(jnp.asarray, rec), model, **kwargs))


def _head_mean(rec) -> list[np.ndarray]:
    return [a.mean(0) for a in rec["attn"]]


def _chefer_relu(rec) -> list[np.ndarray]:
    """Chefer's `avg_heads`: mean_h (∂f/∂A ⊙ A)^+ per layer, (N, N)."""
    return [np.clip(da * a, 0, None).mean(0) for a, da in zip(rec["attn"], rec["attn_grad"], strict=True)]


def _chefer_genatt(rec, start_layer: int) -> np.ndarray:
    """Chefer's `apply_self_attention_rules`: R = I; R += Ā_l @ R for l ≥ start_layer (forward order)."""
    mats = _chefer_relu(rec)
    r = np.eye(mats[0].shape[-1])
    for m in mats[start_layer:]:
        r = r + m @ r
    return r


def _reference_rollout(rec, start_layer: int) -> np.ndarray:
    """Chefer's `compute_rollout_attention` (generator version): (Â_l + I) / rowsum, joint = M_{L-1}···M_start."""
    mats = _head_mean(rec)
    joint = np.eye(mats[0].shape[-1])
    for m in mats[start_layer:]:
        m = m + np.eye(m.shape[-1])
        joint = (m / m.sum(-1, keepdims=True)) @ joint
    return joint


def test_model_is_nontrivial(records):
    """Guard: attention far from uniform and gradients with both signs, so the checks below can fail."""
    model, recs = records
    n = model.config.num_patches + model.config.num_prefix_tokens
    for rec in recs:
        assert len(rec["attn"]) == DEPTH
        for a, da in zip(rec["attn"], rec["attn_grad"], strict=True):
            assert a.shape[-1] == n and np.abs(a - 1 / n).max() > 0.1
            assert (a * da > 0).any() and (a * da < 0).any()


@pytest.mark.parametrize("start_layer", START_LAYERS)
def test_genatt_is_chefer_times_power_of_two(records, start_layer, highest_precision):
    """ours == 2^-(L - start) · Chefer row 0, every entry (CLS included) — an exact identity, not only ranking."""
    model, recs = records
    scale = 2.0 ** -(DEPTH - start_layer)
    for rec in recs:
        chefer = _chefer_genatt(rec, start_layer)
        ours = _maps(genatt, model, rec, start_layer=start_layer)
        np.testing.assert_allclose(ours, scale * chefer[0], rtol=1e-12, atol=0)
        # the constant is the only difference: the CLS entry carries the same factor as the patches
        np.testing.assert_allclose(ours / chefer[0], scale, rtol=1e-12)
        # so the visualised maps (patch columns, min-max) agree
        prefix = model.config.num_prefix_tokens
        p, c = ours[prefix:], chefer[0, prefix:]
        np.testing.assert_allclose((p - p.min()) / np.ptp(p), (c - c.min()) / np.ptp(c), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("start_layer", START_LAYERS)
def test_genatt_scaling_is_bit_exact_in_numpy(records, start_layer):
    """Float fact behind the identity: Π(½M + ½I) and 2^-k·Π(I + M) with the same op order are bit-equal."""
    _, recs = records
    for rec in recs:
        mats = _chefer_relu(rec)[start_layer:]
        eye = np.eye(mats[0].shape[-1])
        half, full = eye, eye
        for m in mats:
            half = (0.5 * m + 0.5 * eye) @ half
            full = (m + eye) @ full
        np.testing.assert_array_equal(half, full * 2.0 ** -len(mats))


def test_genatt_differs_from_chefer_only_by_the_start_layer_factor(records, highest_precision):
    """start_layer changes the product (not only the scale): guard that both start layers are really tested."""
    model, recs = records
    for rec in recs:
        s0, s1 = (_maps(genatt, model, rec, start_layer=s) for s in START_LAYERS)
        assert not np.allclose(s0 / s0.sum(), s1 / s1.sum(), rtol=1e-3)


@pytest.mark.parametrize("start_layer", START_LAYERS)
def test_rollout_layers_are_row_stochastic(records, start_layer, highest_precision):
    """½(Â_l + I) has rows summing to 1 (A's rows do), equals Chefer's row normalisation, and so does the product."""
    model, recs = records
    for rec in recs:
        joint = np.eye(rec["attn"][0].shape[-1])
        for a in _head_mean(rec)[start_layer:]:
            eye = np.eye(a.shape[-1])
            half = 0.5 * (a + eye)
            assert (half >= 0).all()
            np.testing.assert_allclose(half.sum(-1), 1.0, rtol=0, atol=1e-13)
            np.testing.assert_allclose(half, (a + eye) / (a + eye).sum(-1, keepdims=True), rtol=1e-13, atol=1e-15)
            joint = half @ joint
        np.testing.assert_allclose(joint.sum(-1), 1.0, rtol=0, atol=1e-13)
        ours = _maps(rollout, model, rec, start_layer=start_layer)
        assert (ours >= 0).all()
        np.testing.assert_allclose(ours.sum(), 1.0, rtol=0, atol=1e-13)


@pytest.mark.parametrize("start_layer", START_LAYERS)
def test_rollout_matches_reference(records, start_layer, highest_precision):
    """Our rollout == row-normalised (Â+I) product from start_layer, CLS row; Chefer's map is it with prefix dropped."""
    model, recs = records
    prefix = model.config.num_prefix_tokens
    for rec in recs:
        ref = _reference_rollout(rec, start_layer)
        ours = _maps(rollout, model, rec, start_layer=start_layer)
        np.testing.assert_allclose(ours[prefix:], ref[0, 1:], rtol=1e-12, atol=0)  # Chefer: joint[0, 1:]
        np.testing.assert_allclose(ours, ref[0], rtol=1e-12, atol=0)  # the whole row, CLS entry included


def test_rawatt_is_last_layer_head_mean_cls_row(records, highest_precision):
    """RawAtt == mean_h A_{L-1}[0] (Chefer's `attn_last_layer`, prefix dropped, is ours[1:])."""
    model, recs = records
    prefix = model.config.num_prefix_tokens
    for rec in recs:
        ref = rec["attn"][-1].mean(0)[0]
        ours = _maps(rawatt, model, rec)
        np.testing.assert_allclose(ours, ref, rtol=1e-13, atol=0)
        np.testing.assert_allclose(ours[prefix:], np.clip(rec["attn"][-1][:, 0, 1:].mean(0), 0, None), rtol=1e-13)
        np.testing.assert_allclose(ours.sum(), 1.0, rtol=0, atol=1e-13)


def test_attcat_of_a_one_block_model():
    """One block: the producer pairing has no term (a zero map, not a scalar); consumer = ā_0 ⊙ IxG_0."""
    model, params = tiny_model(depth=1)
    x = images(model, 2)
    y = jnp.array([0, 1])
    attcat = {
        p: attribution(model, "attcat", rules="libra", return_tokens=True, pairing=p) for p in ("producer", "consumer")
    }
    producer, consumer = (fn(params, x, y) for fn in attcat.values())
    ixg = attribution(model, "ixg", rules="libra", return_tokens=True)(params, x, y)
    np.testing.assert_array_equal(producer, np.zeros((2, model.config.num_tokens)))
    received = model.apply({"params": params}, x)[1]["blocks"][0]["attn"].mean(axis=(-3, -2))
    np.testing.assert_allclose(consumer, received * ixg, rtol=1e-5, atol=1e-7)
