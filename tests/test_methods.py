"""Attribution API: jit == eager, batch == per-example, one multi-method pass == separate calls,
multi-target, IG/SmoothGrad properties and clear errors on bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import images, tiny_model

import libra_jax
from libra_jax.methods import api, maps

pytestmark = pytest.mark.usefixtures("highest_precision")

SINGLE = sorted(maps.SINGLE_PASS)
TOL = {"xgradcam": 1e-4}
"""Per-method tolerance where 1e-5 is below float32 rounding: plain XGradCAM divides by Σ_t h, a signed sum that
cancels on some residual-stream channels (to 1.3e-3 of Σ_t|h| here), so its rounding is ~eps₃₂/1.3e-3 ≈ 1e-4 of the
map (measured ≤ 3.4e-5 between batch sizes)."""


@pytest.fixture(scope="module")
def setup():
    model, params = tiny_model()
    x = images(model, 8)
    logits, _ = model.apply({"params": params}, x)
    y = jnp.argmax(logits, -1)
    return model, params, x, y


def _close(a, b, tol=1e-5):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * (np.abs(b).max() + 1e-12))


def test_named_constructor_under_jit(setup):
    model, params, x, y = setup
    libra_fullgrad_plus = libra_jax.methods.libra_fullgrad_plus(model)
    maps_ = jax.jit(libra_fullgrad_plus)(params, x, y)
    assert maps_.shape == (8, *model.config.grid_size)
    assert np.isfinite(np.asarray(maps_)).all()


@pytest.mark.parametrize("rules", ["vanilla", "libra", "attnlrp"])
def test_jit_equals_eager_and_batch_equals_single(setup, rules):
    model, params, x, y = setup
    fn = libra_jax.attribution(model, SINGLE, rules=rules, return_tokens=True)
    jitted = jax.jit(fn)(params, x, y)
    eager = fn(params, x, y)
    for name in SINGLE:
        _close(eager[name], jitted[name], TOL.get(name, 1e-5))
    for i in range(x.shape[0]):
        one = jax.jit(fn)(params, x[i : i + 1], y[i : i + 1])
        for name in SINGLE:
            _close(one[name][0], jitted[name][i], TOL.get(name, 1e-5))


def test_vmap_of_fn_equals_loop(setup):
    model, params, x, y = setup
    fn = libra_jax.methods.libra_fullgrad(model, return_tokens=True)
    stacked = jax.vmap(fn, in_axes=(None, 0, 0))(params, x[:, None], y[:, None])
    for i in range(4):
        _close(stacked[i, 0], fn(params, x[i : i + 1], y[i : i + 1])[0])


def test_multi_method_equals_separate_calls(setup):
    model, params, x, y = setup
    names = [*SINGLE, "ig"]
    together = jax.jit(libra_jax.attribution(model, names, rules="libra", steps=4))(params, x, y)
    for name in names:
        opts = {"steps": 4} if name == "ig" else {}
        alone = jax.jit(libra_jax.attribution(model, name, rules="libra", **opts))(params, x, y)
        _close(together[name], alone, TOL.get(name, 1e-5))


def test_multi_target_reuses_forward(setup):
    model, params, x, y = setup
    ys = jnp.stack([y, (y + 1) % 5, (y + 2) % 5], axis=1)
    fn = libra_jax.attribution(model, ["fullgrad", "genatt", "ig"], rules="libra", steps=3)
    multi = jax.jit(fn)(params, x, ys)
    assert multi["fullgrad"].shape == (8, 3, *model.config.grid_size)
    for t in range(3):
        single = jax.jit(fn)(params, x, ys[:, t])
        for name in single:
            _close(multi[name][:, t], single[name])


def test_class_weights_target_is_linear(setup):
    model, params, x, y = setup
    fn = libra_jax.attribution(model, "fullgrad", rules="libra_logit", return_tokens=True)
    w = jax.nn.one_hot(y, 5) * 0.3 + jax.nn.one_hot((y + 1) % 5, 5) * 0.7
    mixed = fn(params, x, w)
    _close(mixed, 0.3 * fn(params, x, y) + 0.7 * fn(params, x, (y + 1) % 5), 1e-4)


def test_callable_target(setup):
    model, params, x, y = setup
    fn = libra_jax.attribution(model, "ixg", rules="libra", target=lambda z, yi: z[yi] - z.mean(), return_tokens=True)
    logit = libra_jax.attribution(model, "ixg", rules="libra", target="logit", return_tokens=True)
    _close(
        fn(params, x, y),
        logit(params, x, y) - np.mean([np.asarray(logit(params, x, jnp.full_like(y, k))) for k in range(5)], 0),
    )


def test_ig_completeness_and_paper_variant(setup):
    model, params, x, y = setup
    fn = libra_jax.attribution(
        model, ["ig", "ig_tokenspace_paper"], rules="vanilla", target="logit", return_tokens=True, steps=256
    )
    out = fn(params, x[:2], y[:2])
    logits, _ = model.apply({"params": params}, x[:2])
    h0 = model.apply({"params": params}, x[:2], method="embed")
    zero_logits, _ = model.apply({"params": params}, jnp.zeros_like(h0), method="forward_tokens")
    want = logits[jnp.arange(2), y[:2]] - zero_logits[jnp.arange(2), y[:2]]
    np.testing.assert_allclose(out["ig"].sum(-1), want, rtol=2e-2, atol=2e-2 * np.abs(want).max())
    assert not np.allclose(out["ig"], out["ig_tokenspace_paper"], rtol=1e-2)


def test_smoothgrad_is_deterministic_and_batch_invariant(setup):
    model, params, x, y = setup
    fn = libra_jax.attribution(model, "smoothgrad", rules="libra", samples=4)
    a = fn(params, x[:3], y[:3])
    b = fn(params, x[1:2], y[1:2])
    _close(a[1], b[0])
    no_noise = libra_jax.attribution(model, ["smoothgrad", "ixg"], rules="libra", samples=2, noise_level=0.0)(
        params, x, y
    )
    _close(no_noise["smoothgrad"], no_noise["ixg"])


def test_resolve_method_names():
    assert api.resolve_method("libra_fullgrad_plus") == ("fullgrad_plus", "libra")
    assert api.resolve_method("gradcam") == ("gradcam", "vanilla")
    assert api.resolve_method("attnlrp") == ("ixg", "attnlrp")
    with pytest.raises(ValueError, match="unknown method"):
        api.resolve_method("fullgrads")


def test_lrp_conveniences_are_ixg_under_their_presets(setup):
    model, params, x, y = setup
    for name in ("attnlrp", "cp_lrp", "decompx"):
        _close(
            getattr(libra_jax.methods, name)(model)(params, x, y),
            libra_jax.attribution(model, "ixg", rules=name)(params, x, y),
        )


class TestBadInput:
    def test_nchw(self, setup):
        model, params, x, y = setup
        with pytest.raises(ValueError, match="NCHW"):
            libra_jax.methods.ixg(model)(params, x.transpose(0, 3, 1, 2), y)

    def test_wrong_size(self, setup):
        model, params, x, y = setup
        with pytest.raises(ValueError, match="model expects"):
            libra_jax.methods.ixg(model)(params, x[:, :16, :16], y)

    def test_uint8(self, setup):
        model, params, x, y = setup
        with pytest.raises(ValueError, match="preprocess"):
            libra_jax.methods.ixg(model)(params, np.zeros(x.shape, np.uint8), y)

    @pytest.mark.parametrize("bad", [np.nan, np.inf])
    def test_non_finite_eager(self, setup, bad):
        model, params, x, y = setup
        with pytest.raises(ValueError, match="NaN or inf"):
            libra_jax.methods.ixg(model)(params, x.at[0, 0, 0, 0].set(bad), y)

    def test_non_finite_under_jit(self, setup):
        model, params, x, y = setup
        with pytest.raises(Exception, match="images contain NaN or inf"):
            jax.block_until_ready(jax.jit(libra_jax.methods.ixg(model))(params, x.at[1, 2, 3, 0].set(np.nan), y))

    @pytest.mark.parametrize("jit", [False, True])
    def test_class_out_of_range(self, setup, jit):
        model, params, x, y = setup
        fn = libra_jax.methods.libra_fullgrad(model)
        fn = jax.jit(fn) if jit else fn
        with pytest.raises(Exception, match=r"class index out of range.*\[0, 5\)"):
            jax.block_until_ready(fn(params, x, y.at[0].set(5)))

    def test_wrong_target_batch(self, setup):
        model, params, x, y = setup
        with pytest.raises(ValueError, match="leading batch axis"):
            libra_jax.methods.ixg(model)(params, x, y[:3])

    def test_unknown_method_and_option(self, setup):
        model = setup[0]
        with pytest.raises(ValueError, match="known methods"):
            libra_jax.attribution(model, "fullgradd")
        with pytest.raises(ValueError, match="under the 'libra' rules, but rules='vanilla'"):
            libra_jax.attribution(model, "libra_ixg", rules="vanilla")
        with pytest.raises(TypeError, match="steps"):
            libra_jax.attribution(model, "ixg", steps=3)
        with pytest.raises(ValueError, match="unknown rule preset"):
            libra_jax.attribution(model, "ixg", rules="libbra")

    def test_attention_row_methods_need_class_token(self):
        model, _ = tiny_model(class_token=False, global_pool="avg")
        with pytest.raises(ValueError, match="class-token row"):
            libra_jax.attribution(model, "genatt")
