"""`libra_jax.weights.resize` against PyTorch's F.interpolate (align_corners=False)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from libra_jax.weights.resize import interpolation_matrix, resize

torch = pytest.importorskip("torch")
F = torch.nn.functional

IN_SIZES = [(7, 9), (16, 16), (5, 3), (1, 4)]
OUT_SIZES = [(14, 18), (8, 8), (3, 5), (1, 1), (48, 30), (2, 9)]


def torch_resize(x: np.ndarray, size, method, antialias) -> np.ndarray:
    t = torch.from_numpy(x)
    return F.interpolate(t, size=size, mode=method, align_corners=False, antialias=antialias).numpy()


@pytest.mark.parametrize("method", ["bilinear", "bicubic"])
@pytest.mark.parametrize("antialias", [False, True])
def test_matches_torch_up_and_down(method, antialias):
    rng = np.random.default_rng(0)
    for (h, w), (oh, ow) in itertools.product(IN_SIZES, OUT_SIZES):
        x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
        ref = torch_resize(x, (oh, ow), method, antialias)
        got = resize(x, (oh, ow), method, antialias)
        assert got.dtype == np.float32 and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=1e-5, err_msg=f"{(h, w)}->{(oh, ow)}")
        got_jax = resize(jnp.asarray(x), (oh, ow), method, antialias)
        assert isinstance(got_jax, jax.Array)
        np.testing.assert_allclose(np.asarray(got_jax), ref, atol=1e-5, err_msg=f"jax {(h, w)}->{(oh, ow)}")


@pytest.mark.parametrize("method", ["bilinear", "bicubic"])
@pytest.mark.parametrize("antialias", [False, True])
def test_matrix_is_exact_in_float64(method, antialias):
    """The 1-D matrix equals torch's resize of the identity to float64 rounding."""
    for n_in, n_out in [(5, 48), (16, 14), (24, 7), (3, 3)]:
        eye = torch.eye(n_in, dtype=torch.float64)[None, None]
        ref = F.interpolate(eye, size=(n_out, n_in), mode=method, align_corners=False, antialias=antialias)
        np.testing.assert_allclose(interpolation_matrix(n_in, n_out, method, antialias), ref[0, 0].numpy(), atol=1e-12)


def test_same_size_is_identity_and_int_size():
    x = np.random.default_rng(1).standard_normal((4, 6, 6)).astype(np.float32)
    for method, aa in itertools.product(["bilinear", "bicubic"], [False, True]):
        np.testing.assert_allclose(resize(x, 6, method, aa), x, atol=1e-6)


def test_jit_vmap_grad():
    x = jnp.asarray(np.random.default_rng(2).standard_normal((3, 5, 7)), jnp.float32)
    f = jax.jit(lambda a: resize(a, (10, 4), "bicubic", True))
    assert f(x).shape == (3, 10, 4)
    assert jax.vmap(f)(x[None]).shape == (1, 3, 10, 4)
    g = jax.grad(lambda a: resize(a, (10, 4)).sum())(x)
    assert g.shape == x.shape and bool(jnp.all(jnp.isfinite(g)))


def test_errors():
    with pytest.raises(ValueError, match="unsupported interpolation 'nearest'"):
        resize(np.zeros((4, 4), np.float32), (2, 2), "nearest")
    with pytest.raises(TypeError, match="floating"):
        resize(np.zeros((4, 4), np.uint8), (2, 2))
    with pytest.raises(ValueError, match=r"\(\.\.\., H, W\)"):
        resize(np.zeros((4,), np.float32), (2, 2))
