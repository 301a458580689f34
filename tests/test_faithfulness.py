"""Deletion curves (MIF / LIF / SRG) against a NumPy re-implementation on a toy model whose token
contributions are known exactly, plus drop-mode shape checks on a real tiny ViT."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from helpers import TINY

from libra_jax.metrics import faithfulness as fa
from libra_jax.models import VisionTransformer, ViTConfig
from libra_jax.models.contract import TokenLayout

K_CLASSES, C_DIM, GRID = 4, 6, (4, 5)
N_PATCHES = GRID[0] * GRID[1]


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    num_prefix_tokens: int
    grid_size: tuple[int, int] = GRID


class TokenLinear(nn.Module):
    """logits = pool_t(h_t) @ W: token t adds exactly h_t @ W (sum pool), so the oracle ranking is known.

    "Images" are the patch features (B, n, C); `embed` prepends the learned prefix tokens.
    """

    config: ToyConfig
    pool: str = "sum"
    droppable_tokens: bool = True

    @property
    def layout(self) -> TokenLayout:
        return TokenLayout(self.config.num_prefix_tokens, self.config.grid_size, self.droppable_tokens)

    def setup(self):
        self.prefix = self.param("prefix", nn.initializers.zeros, (self.config.num_prefix_tokens, C_DIM))
        self.w = self.param("w", nn.initializers.zeros, (C_DIM, K_CLASSES))

    def embed(self, feats: jax.Array) -> jax.Array:
        prefix = jnp.broadcast_to(self.prefix, (feats.shape[0], *self.prefix.shape))
        return jnp.concatenate([prefix, feats], axis=1)

    def forward_tokens(self, tokens: jax.Array, rules=None) -> tuple[jax.Array, dict]:
        per_token = tokens @ self.w
        return (per_token.sum(1) if self.pool == "sum" else per_token.mean(1)), {}


def toy(num_prefix: int, pool: str = "mean", batch: int = 32, seed: int = 0, droppable: bool = True):
    """Integer-valued features and weights, so every logit is an exact float32 sum.

    Tests share one batch size and pool where they can: compilations are cached per model and shape.
    """
    rng = np.random.default_rng(seed)
    params = {
        "prefix": rng.integers(-2, 3, (num_prefix, C_DIM)).astype(np.float32),
        "w": rng.integers(-2, 3, (C_DIM, K_CLASSES)).astype(np.float32),
    }
    feats = rng.integers(-2, 3, (batch, N_PATCHES, C_DIM)).astype(np.float32)
    model = TokenLinear(ToyConfig(num_prefix), pool=pool, droppable_tokens=droppable)
    return model, params, feats


def reference_curves(params, feats, maps, labels, ratios, mode, pool):
    """Per-image loop in float64: rank by the signed map (stable: ties by index), keep the prefix."""
    prefix, w = params["prefix"].astype(np.float64), params["w"].astype(np.float64)

    def logp(tokens, label):
        z = tokens.astype(np.float64) @ w
        z = z.sum(0) if pool == "sum" else z.mean(0)
        lp = z - z.max() - np.log(np.exp(z - z.max()).sum())
        return lp[label], int(np.argmax(z) == label)

    out = {f"{v}_{m}": np.zeros((len(ratios), len(feats))) for v in fa.VARIANTS for m in fa.METRICS}
    n = feats.shape[1]
    for b, (f, m, y) in enumerate(zip(feats, maps.reshape(len(feats), -1), labels, strict=True)):
        lp0, _ = logp(np.concatenate([prefix, f]), y)
        order = np.argsort(-m, kind="stable")
        for i, r in enumerate(ratios):
            k = int(r * n)
            for variant, kept in (("mif", order[k:]), ("lif", order[:k])):
                if mode == "drop":
                    patches = f[np.sort(kept)]
                else:
                    patches = np.where(np.isin(np.arange(n), kept)[:, None], f, 0.0)
                lp, correct = logp(np.concatenate([prefix, patches]), y)
                vals = {"correct": correct, "prob": np.exp(lp), "aopc": np.exp(lp0) - np.exp(lp), "log_odds": lp0 - lp}
                for metric, value in vals.items():
                    out[f"{variant}_{metric}"][i, b] = value
    return out


def assert_matches_reference(curves, ref):
    for key, value in ref.items():
        if key.endswith("correct"):
            np.testing.assert_array_equal(curves[key], value, err_msg=key)
        else:
            np.testing.assert_allclose(curves[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("mode", ["drop", "zero"])
@pytest.mark.parametrize("num_prefix", [0, 1, 2])
@pytest.mark.parametrize("map_kind", ["normal", "ties"])
def test_matches_numpy_reference(mode, num_prefix, map_kind):
    # Mean pooling makes dropping and zeroing differ (the mean runs over fewer tokens when dropping).
    model, params, feats = toy(num_prefix)
    # All nine ratios once; fewer elsewhere (each kept length is one compilation in drop mode).
    ratios = fa.RATIOS if num_prefix == 1 else (0.1, 0.5, 0.9)
    rng = np.random.default_rng(1)
    if map_kind == "ties":
        maps = rng.integers(-1, 2, (len(feats), *GRID)).astype(np.float32)  # heavy ties, -0.0 vs 0.0 too
        maps[0] = 0.0
        maps[1] = -0.0
    else:
        maps = rng.normal(size=(len(feats), *GRID)).astype(np.float32)
    labels = rng.integers(0, K_CLASSES, len(feats))
    curves = fa.deletion_curves(model, params, feats, maps, labels, ratios=ratios, mode=mode)
    assert curves["mif_prob"].shape == (len(ratios), len(feats))
    assert_matches_reference(curves, reference_curves(params, feats, maps, labels, ratios, mode, "mean"))


def test_drop_and_zero_differ_and_mode_follows_the_model_attribute():
    model, params, feats = toy(1)
    maps = np.random.default_rng(2).normal(size=(len(feats), N_PATCHES)).astype(np.float32)
    labels = np.zeros(len(feats), int)
    drop = fa.deletion_curves(model, params, feats, maps, labels, mode="drop")
    zero = fa.deletion_curves(model, params, feats, maps, labels, mode="zero")
    assert not np.allclose(drop["mif_prob"], zero["mif_prob"])
    default = fa.deletion_curves(model, params, feats, maps, labels)
    np.testing.assert_array_equal(default["mif_prob"], drop["mif_prob"])
    frozen = model.clone(droppable_tokens=False)
    np.testing.assert_array_equal(fa.deletion_curves(frozen, params, feats, maps, labels)["mif_prob"], zero["mif_prob"])
    with pytest.raises(ValueError, match="mode"):
        fa.deletion_curves(model, params, feats, maps, labels, mode="blur")


def test_oracle_map_beats_random_map():
    # Sum pooling: patch t adds exactly h_t @ W to the logits, so dropping equals zeroing here.
    model, params, feats = toy(1, pool="sum", seed=3)
    w = params["w"]
    labels = ((params["prefix"].sum(0) + feats.sum(1)) @ w).argmax(-1)
    # Each patch's exact contribution to the label logit minus the mean logit (what decides the argmax).
    margin = w[:, labels].T - w.mean(1)[None]
    oracle = np.einsum("bnc,bc->bn", feats, margin)
    random = np.random.default_rng(4).normal(size=oracle.shape).astype(np.float32)
    s_oracle = fa.summarize(fa.deletion_curves(model, params, feats, oracle, labels, mode="zero"))
    s_random = fa.summarize(fa.deletion_curves(model, params, feats, random, labels, mode="zero"))
    assert s_oracle["orig_accuracy"] == 1.0
    assert s_oracle["mif"] < s_random["mif"] - 10
    assert s_oracle["lif"] > s_random["lif"] + 10
    assert s_oracle["srg"] > s_random["srg"]
    assert s_oracle["srg_aopc"] > s_random["srg_aopc"]
    assert s_oracle["srg_log_odds"] > s_random["srg_log_odds"]


def test_ties_rank_by_index_and_prefix_is_always_kept():
    maps = jnp.array([[0.0, 1.0, 1.0, 0.0, 1.0], [-0.0, 0.0, -0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(fa.patch_order(maps), [[1, 2, 4, 0, 3], [0, 1, 2, 3, 4]])
    order = fa.patch_order(maps)
    np.testing.assert_array_equal(fa.kept_patches(order, 2, "mif"), [[0, 3, 4], [2, 3, 4]])
    np.testing.assert_array_equal(fa.kept_patches(order, 2, "lif"), [[1, 2], [0, 1]])
    assert fa.ratio_counts(fa.RATIOS, 196) == (19, 39, 58, 78, 98, 117, 137, 156, 176)

    # A prefix token that alone decides the class (10⁴ on class 2 vs at most 24 from any patch):
    # every masked input keeps it, so MIF and LIF stay correct at every ratio, in both modes.
    model, params, feats = toy(1)
    w = params["w"].copy()
    w[0] = [0, 0, 1, 0]
    params = {"w": w, "prefix": np.eye(1, C_DIM, dtype=np.float32) * 1e4}
    labels = np.full(len(feats), 2)
    ones = np.ones((len(fa.RATIOS), len(feats)))
    for mode in ("drop", "zero"):
        curves = fa.deletion_curves(model, params, feats, np.zeros((len(feats), *GRID)), labels, mode=mode)
        np.testing.assert_array_equal(curves["mif_correct"], ones)
        np.testing.assert_array_equal(curves["lif_correct"], ones)
    # A token map that still holds the prefix is rejected rather than silently misaligned.
    with pytest.raises(ValueError, match="patch tokens"):
        fa.deletion_curves(model, params, feats, np.zeros((len(feats), N_PATCHES + 1)), labels)


def test_empty_sequence_is_rejected_without_prefix():
    model, params, feats = toy(0, batch=2)
    with pytest.raises(ValueError, match="empty sequence"):
        fa.deletion_curves(model, params, feats, np.zeros((2, N_PATCHES)), np.zeros(2, int), ratios=(0.01,))


def test_accumulator_merges_batches_and_summary_is_trapezoid():
    model, params, feats = toy(1, seed=5)
    rng = np.random.default_rng(6)
    maps = rng.normal(size=(len(feats), N_PATCHES)).astype(np.float32)
    labels = rng.integers(0, K_CLASSES, len(feats))
    whole = fa.deletion_curves(model, params, feats, maps, labels, mode="zero")
    acc = fa.DeletionAccumulator()
    half = len(feats) // 2
    for sl in (slice(0, half), slice(half, None)):
        acc.add(fa.deletion_curves(model, params, feats[sl], maps[sl], labels[sl], mode="zero"))
    merged = acc.curves()
    for key, value in whole.items():
        np.testing.assert_allclose(merged[key], value, rtol=1e-6, atol=1e-7, err_msg=key)
    summary = acc.summary()
    y = whole["mif_correct"].astype(np.float64).mean(1)
    expected = 100 * sum((y[i] + y[i + 1]) / 2 * 0.1 for i in range(len(y) - 1))
    assert summary["mif"] == pytest.approx(expected, abs=1e-9)
    assert summary["srg"] == pytest.approx(summary["lif_accuracy_auc"] - summary["mif_accuracy_auc"])
    assert summary["n_images"] == len(feats)
    with pytest.raises(ValueError, match="ratios"):
        fa.summarize(merged, ratios=(0.1, 0.5))


def test_bfloat16_logits_option_runs():
    model, params, feats = toy(1)
    maps = np.random.default_rng(7).normal(size=(len(feats), N_PATCHES)).astype(np.float32)
    labels = np.zeros(len(feats), int)
    curves = fa.deletion_curves(model, params, feats, maps, labels, mode="zero", logits_dtype=jnp.bfloat16)
    assert np.isfinite(curves["lif_log_odds"]).all()


@pytest.mark.parametrize("overrides", [{}, {"class_token": False, "global_pool": "avg"}], ids=["cls", "gap"])
def test_real_tiny_vit_drop_mode(overrides):
    model = VisionTransformer(ViTConfig(**TINY, **overrides))
    npt = model.config.num_prefix_tokens
    assert npt == (0 if overrides else 1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 32, 32, 3)).astype(np.float32)
    # Random weights from the parameter shapes: no init compilation, which is slow on CPU.
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(1), x)["params"]
    params = jax.tree.map(lambda s: jnp.asarray(0.2 * rng.normal(size=s.shape), s.dtype), shapes)
    maps = rng.normal(size=(3, *model.config.grid_size)).astype(np.float32)
    labels = np.array([0, 1, 2])
    # r = 0.5 only: MIF and LIF then keep 8 of 16 patches each, so one compilation serves both.
    curves = fa.deletion_curves(model, params, x, maps, labels, ratios=(0.5,))
    for key, value in curves.items():
        assert value.shape == ((3,) if key.startswith("orig") else (1, 3)), key
        assert np.isfinite(value).all(), key
    # Against hand-made shorter sequences (prefix, then the kept patches in grid order).
    h0 = model.apply({"params": params}, x, method="embed")
    order = np.argsort(-maps.reshape(3, 16), axis=1, kind="stable")
    forward = jax.jit(lambda t: model.apply({"params": params}, t, method="forward_tokens")[0])
    for variant, kept in (("mif", order[:, 8:]), ("lif", order[:, :8])):
        patches = jnp.take_along_axis(h0[:, npt:], jnp.asarray(np.sort(kept, 1))[..., None], 1)
        prob = jax.nn.softmax(forward(jnp.concatenate([h0[:, :npt], patches], 1)), -1)[np.arange(3), labels]
        np.testing.assert_allclose(curves[f"{variant}_prob"][0], prob, rtol=1e-5, atol=1e-6)
