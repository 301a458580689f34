"""PyTorch-exact `F.interpolate` (bilinear / bicubic, align_corners=False) as separable matrices.

A resize along one axis is a linear map, so it is an (out, in) matrix; a 2-D resize is
`W_h · x · W_wᵀ`. The matrices follow PyTorch's CPU kernels (`UpSampleKernel.cpp`):

* plain: source coordinate s = (i + ½)·in/out − ½; bilinear clamps s ≥ 0 and blends the two
  neighbours; bicubic blends four neighbours with the Keys kernel a = −0.75, indices clamped
  to the border.
* antialias=True (both modes, up- and down-sampling): each output pixel averages the inputs
  within `support` of its centre with a kernel stretched by the scale when downsampling
  (triangle for bilinear, Keys a = −0.5 for bicubic, as PIL), weights normalised to sum 1.

`jax.image.resize`'s bicubic uses a different kernel and edge handling, hence this module.
The matrices are built in float64 with numpy (cached per size) and applied with one matmul per
axis, so the resize runs on numpy and jax arrays alike (and under jit / vmap / grad).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

METHODS = ("bilinear", "bicubic")


def _keys_cubic(x: np.ndarray, a: float) -> np.ndarray:
    """Keys cubic convolution kernel at distances x (any sign)."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((x - 5) * x + 8) * x * a - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def _triangle(x: np.ndarray) -> np.ndarray:
    return np.maximum(1.0 - np.abs(x), 0.0)


def _plain_matrix(in_size: int, out_size: int, method: str) -> np.ndarray:
    scale = in_size / out_size
    src = (np.arange(out_size) + 0.5) * scale - 0.5
    m = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    if method == "bilinear":
        src = np.maximum(src, 0.0)
        i0 = np.floor(src).astype(np.int64)
        i1 = np.minimum(i0 + 1, in_size - 1)
        t = src - i0
        np.add.at(m, (rows, i0), 1.0 - t)
        np.add.at(m, (rows, i1), t)
    else:
        i0 = np.floor(src).astype(np.int64)
        t = src - i0
        for k in range(-1, 3):
            # Out-of-range taps read the border pixel (PyTorch's clamped access).
            idx = np.clip(i0 + k, 0, in_size - 1)
            np.add.at(m, (rows, idx), _keys_cubic(t - k, -0.75))
    return m


def _antialias_matrix(in_size: int, out_size: int, method: str) -> np.ndarray:
    scale = in_size / out_size
    half_width = 1.0 if method == "bilinear" else 2.0
    support = half_width * scale if scale >= 1.0 else half_width
    inv_scale = 1.0 / scale if scale >= 1.0 else 1.0
    m = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = scale * (i + 0.5)
        # PyTorch truncates (int64 cast) after adding ½; clamping to 0 makes truncation = floor.
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        j = np.arange(lo, hi)
        d = (j - center + 0.5) * inv_scale
        w = _triangle(d) if method == "bilinear" else _keys_cubic(d, -0.5)
        total = w.sum()
        m[i, lo:hi] = w / total if total != 0 else w
    return m


@functools.lru_cache(maxsize=256)
def _matrix(in_size: int, out_size: int, method: str, antialias: bool) -> np.ndarray:
    m = _antialias_matrix(in_size, out_size, method) if antialias else _plain_matrix(in_size, out_size, method)
    m.setflags(write=False)
    return m


def interpolation_matrix(in_size: int, out_size: int, method: str = "bicubic", antialias: bool = False) -> np.ndarray:
    """The (out_size, in_size) float64 matrix of a 1-D PyTorch interpolation (align_corners=False).

    `y = M @ x` resizes a length-`in_size` signal x the way `F.interpolate(mode=method,
    antialias=antialias)` resizes each row / column.
    """
    if method not in METHODS:
        raise ValueError(f"unsupported interpolation {method!r}; expected one of {METHODS}")
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got in_size={in_size}, out_size={out_size}")
    return _matrix(int(in_size), int(out_size), method, bool(antialias))


def resize(x, size: int | tuple[int, int], method: str = "bicubic", antialias: bool = False):
    """Resize the last two axes of x (..., H, W) → (..., h, w) exactly like PyTorch's `F.interpolate`.

    Args:
      x: floating numpy or jax array, layout (..., H, W) (channels-first, like torch).
      size: output (h, w), or one int for both.
      method: 'bilinear' or 'bicubic' (align_corners=False).
      antialias: PyTorch's `antialias` flag.
    Returns:
      Array of the same kind and dtype as x, shape (..., h, w).
    """
    h, w = (size, size) if isinstance(size, int) else size
    if x.ndim < 2:
        raise ValueError(f"resize needs (..., H, W) input, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"resize needs a floating array, got {x.dtype}; convert first (e.g. x.astype(np.float32))")
    mh = interpolation_matrix(x.shape[-2], h, method, antialias)
    mw = interpolation_matrix(x.shape[-1], w, method, antialias)
    if isinstance(x, jax.Array):
        # HIGHEST: the default GPU/TPU matmul precision would round the weights (TF32 / bf16).
        mm = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)
        return mm(mm(jnp.asarray(mh, x.dtype), x), jnp.asarray(mw.T, x.dtype))
    return mh.astype(x.dtype) @ x @ mw.T.astype(x.dtype)
