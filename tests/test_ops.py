"""Each primitive: forward bitwise equal to the plain op, gradient equal to its stop-gradient
reference formulation, and parameter gradients correct."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from libra_jax import ops
from libra_jax.ops import reference as ref
from libra_jax.ops.activations import PLAIN
from libra_jax.ops.attention import attention_plain
from libra_jax.ops.norms import layer_norm_plain, rms_norm_plain

pytestmark = pytest.mark.usefixtures("highest_precision")

KEY = jax.random.PRNGKey(0)


def _normal(i, shape, scale=1.0):
    return scale * jax.random.normal(jax.random.fold_in(KEY, i), shape)


def _grads(fn, args):
    """Gradient of a random projection of fn's output w.r.t. every argument."""

    def loss(*a):
        out = fn(*a)
        out = out[0] if isinstance(out, tuple) else out
        return (out * _normal(99, out.shape)).sum()

    return jax.grad(loss, argnums=tuple(range(len(args))))(*args)


def _assert_close_trees(a, b, tol=1e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol * (1 + np.abs(np.asarray(y)).max()))


@pytest.mark.parametrize("kind", sorted(PLAIN))
@pytest.mark.parametrize("rule", ["plain", "detach"])
def test_activation(kind, rule):
    x = _normal(0, (5, 7), 2.0)
    fwd = jax.jit(lambda v: ops.activation(v, kind, rule))(x)
    np.testing.assert_array_equal(np.asarray(fwd), np.asarray(jax.jit(PLAIN[kind])(x)))
    _assert_close_trees(
        _grads(lambda v: ops.activation(v, kind, rule), (x,)),
        _grads(lambda v: ref.activation_reference(v, kind, rule), (x,)),
    )


def test_gelu_gate_rule_is_phi():
    x = jnp.linspace(-3, 3, 13)
    g = jax.grad(lambda v: ops.activation(v, "gelu", "detach").sum())(x)
    np.testing.assert_allclose(g, 0.5 * (1 + jax.scipy.special.erf(x / np.sqrt(2))), rtol=1e-6)


@pytest.mark.parametrize("rule", ["plain", "half"])
def test_gate_product(rule):
    a, b = _normal(1, (4, 6)), _normal(2, (4, 6))
    np.testing.assert_array_equal(jax.jit(lambda u, v: ops.gate_product(u, v, rule))(a, b), jax.jit(jnp.multiply)(a, b))
    _assert_close_trees(
        _grads(lambda u, v: ops.gate_product(u, v, rule), (a, b)),
        _grads(lambda u, v: ref.gate_product_reference(u, v, rule), (a, b)),
    )
    if rule == "half":
        da, db = _grads(lambda u, v: ops.gate_product(u, v, rule), (a, b))
        pa, pb = _grads(lambda u, v: ops.gate_product(u, v, "plain"), (a, b))
        np.testing.assert_allclose(da, 0.5 * pa, rtol=1e-6)
        np.testing.assert_allclose(db, 0.5 * pb, rtol=1e-6)


@pytest.mark.parametrize("rule", ["plain", "detach"])
@pytest.mark.parametrize("bias_shape", [(6,), (4, 6)])
def test_layer_norm(rule, bias_shape):
    x, scale, bias = _normal(3, (4, 6), 3.0) + 1.0, 1 + _normal(4, (6,), 0.1), _normal(5, bias_shape, 0.1)
    fwd = jax.jit(lambda *a: ops.layer_norm(*a, eps=1e-6, rule=rule))(x, scale, bias)
    np.testing.assert_array_equal(fwd, jax.jit(lambda *a: layer_norm_plain(*a, 1e-6))(x, scale, bias))
    ours = _grads(lambda *a: ops.layer_norm(*a, eps=1e-6, rule=rule), (x, scale, bias))
    _assert_close_trees(ours, _grads(lambda *a: ref.layer_norm_reference(*a, 1e-6, rule), (x, scale, bias)))
    # scale and bias enter linearly whatever the rule: their gradients are the plain ones.
    plain = _grads(lambda *a: layer_norm_plain(*a, 1e-6), (x, scale, bias))
    _assert_close_trees(ours[1:], plain[1:])


def test_layer_norm_detach_keeps_mean_gradient():
    x = _normal(6, (3, 8)) + 5.0
    g = jax.grad(lambda v: ops.layer_norm(v, jnp.ones(8), jnp.zeros(8), eps=1e-6, rule="detach")[:, 0].sum())(x)
    np.testing.assert_allclose(g.sum(-1), 0.0, atol=1e-5)  # shift invariance survives the rule
    std = np.sqrt(np.asarray(x).var(-1))
    np.testing.assert_allclose(g[:, 0], (1 - 1 / 8) / std, rtol=1e-5)


@pytest.mark.parametrize("rule", ["plain", "detach"])
def test_rms_norm(rule):
    x, scale = _normal(7, (4, 6), 2.0), 1 + _normal(8, (6,), 0.1)
    fwd = jax.jit(lambda *a: ops.rms_norm(*a, eps=1e-6, rule=rule))(x, scale)
    np.testing.assert_array_equal(fwd, jax.jit(lambda *a: rms_norm_plain(*a, 1e-6))(x, scale))
    _assert_close_trees(
        _grads(lambda *a: ops.rms_norm(*a, eps=1e-6, rule=rule), (x, scale)),
        _grads(lambda *a: ref.rms_norm_reference(*a, 1e-6, rule), (x, scale)),
    )


@pytest.mark.parametrize("rule", ["plain", "detach", "attnlrp"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_attention(rule, with_bias):
    q, k, v = (_normal(10 + i, (2, 3, 5, 4)) for i in range(3))
    bias = _normal(14, (3, 5, 5)) if with_bias else None
    probe = jnp.zeros((2, 3, 5, 5))

    def ours(q, k, v, p, b=None):
        return ops.attention(q, k, v, b, p, scale=0.5, rule=rule)

    def oracle(q, k, v, p, b=None):
        return ref.attention_reference(q, k, v, b, p, 0.5, rule)

    args = (q, k, v, probe) + ((bias,) if with_bias else ())
    out, attn = jax.jit(ours)(*args)
    want_out, want_attn = jax.jit(
        lambda *a: attention_plain(a[0], a[1], a[2], a[4] if with_bias else None, a[3], scale=0.5)
    )(*args)
    np.testing.assert_array_equal(out, want_out)
    np.testing.assert_array_equal(attn, want_attn)
    _assert_close_trees(_grads(ours, args), _grads(oracle, args))


def test_attention_detach_has_no_qk_gradient_and_probe_is_dA():
    q, k, v = (_normal(20 + i, (3, 5, 4)) for i in range(3))
    probe = jnp.zeros((3, 5, 5))
    w = _normal(30, (3, 5, 4))
    loss = lambda q, k, v, p: (ops.attention(q, k, v, None, p, scale=0.5, rule="detach")[0] * w).sum()  # noqa: E731
    dq, dk, dv, dp = jax.grad(loss, argnums=(0, 1, 2, 3))(q, k, v, probe)
    assert not np.any(np.asarray(dq)) and not np.any(np.asarray(dk))
    np.testing.assert_allclose(dp, jnp.einsum("hqd,hkd->hqk", w, v), rtol=1e-5, atol=1e-6)


def _finite_difference(f, x, eps=1e-3):
    x = np.asarray(x, np.float64)
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[idx] = eps
        g[idx] = (f(x + d) - f(x - d)) / (2 * eps)
    return g


def test_parameter_gradients_match_finite_differences():
    """With rules off the primitives are the true op: compare parameter gradients to FD in float64."""
    with jax.enable_x64(True):
        x = np.random.default_rng(0).normal(size=(3, 5))
        scale = 1 + 0.1 * np.random.default_rng(1).normal(size=5)
        bias = 0.1 * np.random.default_rng(2).normal(size=5)
        w = np.random.default_rng(3).normal(size=(3, 5))

        def f(s, b):
            y = ops.layer_norm(jnp.asarray(x), jnp.asarray(s), jnp.asarray(b), eps=1e-6, rule="plain")
            return float((ops.activation(y, "gelu", "plain") * w).sum())

        gs, gb = jax.grad(
            lambda s, b: (ops.activation(ops.layer_norm(jnp.asarray(x), s, b, eps=1e-6), "gelu") * w).sum(),
            argnums=(0, 1),
        )(jnp.asarray(scale), jnp.asarray(bias))
        np.testing.assert_allclose(gs, _finite_difference(lambda s: f(s, bias), scale), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(gb, _finite_difference(lambda b: f(scale, b), bias), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("rule", ["plain", "detach"])
def test_layer_norm_of_bfloat16_is_computed_in_float32(rule):
    """bf16 compute: the statistics are float32 (the result is the float32 LayerNorm rounded once)."""
    x = (3 + jax.random.normal(jax.random.PRNGKey(0), (4, 64))).astype(jnp.bfloat16)
    scale, bias = jnp.linspace(0.5, 1.5, 64), jnp.linspace(-1, 1, 64)
    y = ops.layer_norm(x, scale.astype(jnp.bfloat16), bias.astype(jnp.bfloat16), eps=1e-6, rule=rule)
    wide = ops.layer_norm(x.astype(jnp.float32), scale.astype(jnp.bfloat16).astype(jnp.float32),
                          bias.astype(jnp.bfloat16).astype(jnp.float32), eps=1e-6, rule=rule)  # fmt: skip
    assert y.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(wide.astype(jnp.bfloat16), np.float32))
    g = jax.grad(lambda v: ops.layer_norm(v, scale, bias, eps=1e-6, rule=rule).astype(jnp.float32).sum())(x)
    assert g.dtype == jnp.bfloat16


def test_attention_probabilities_of_bfloat16_are_a_float32_softmax():
    """bf16 compute: logits accumulate and the softmax normalises in float32, rounded to bf16 once."""
    q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (2, 5, 8)).astype(jnp.bfloat16) for i in range(3))
    _, attn = ops.attention(q, k, v, None, None, scale=8**-0.5, rule="detach")
    wide = jax.nn.softmax(jnp.einsum("hqd,hkd->hqk", (q * 8**-0.5).astype(jnp.float32), k.astype(jnp.float32)), -1)
    assert attn.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(attn, np.float32), np.asarray(wide), rtol=2**-8, atol=0)
