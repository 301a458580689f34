"""Display helpers for attribution maps: normalisation, colormaps, overlays, labelled grids, PNG files.

Numpy and Pillow only (plus the project's PyTorch-exact resize). Normalisation here is for display
alone: metrics always read the raw signed maps. The two colormaps are computed in CIELAB so that
lightness changes uniformly along them: "diverging" (blue, white at zero, red) for signed maps,
"sequential" (dark violet to light yellow) for non-negative ones.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from libra_jax.weights.atomic import write_atomic
from libra_jax.weights.resize import resize

Mode = Literal["signed", "positive"]

# CIE XYZ of the D65 white point and the XYZ → linear sRGB matrix (IEC 61966-2-1).
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])
_XYZ_TO_SRGB = np.array(
    [
        [3.2404542, -1.5371385, -0.4985314],
        [-0.9692660, 1.8760108, 0.0415560],
        [0.0556434, -0.2040259, 1.0572252],
    ]
)


def normalize_for_display(attr_map: np.ndarray, mode: Mode = "signed", outlier_quantile: float = 0.01) -> np.ndarray:
    """Scale a map for display, robust to a few extreme values.

    Args:
      attr_map: any shape, e.g. (gh, gw); all entries are normalised together. NaN/inf count as 0.
      mode: "signed" divides by the (1 − q) quantile of |map| and clips to [-1, 1], so the sign of
        every entry is kept and 0 stays 0; "positive" keeps the positive part, divided by the
        (1 − q) quantile of that part, in [0, 1].
      outlier_quantile: q, the fraction of largest magnitudes that saturate.
    Returns:
      float32 array of the same shape.
    """
    if mode not in ("signed", "positive"):
        raise ValueError(f"mode must be 'signed' or 'positive'; got {mode!r}")
    if not 0.0 <= outlier_quantile < 1.0:
        raise ValueError(f"outlier_quantile must lie in [0, 1); got {outlier_quantile}")
    m = np.nan_to_num(np.asarray(attr_map, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo = -1.0 if mode == "signed" else 0.0
    if mode == "positive":
        m = np.maximum(m, 0.0)
    scale = np.quantile(np.abs(m), 1.0 - outlier_quantile) if m.size else 0.0
    if scale <= 0.0:  # a map whose mass sits in < q of its entries: fall back to the maximum
        scale = np.abs(m).max(initial=0.0)
    if scale <= 0.0:
        return np.zeros(m.shape, np.float32)
    return np.clip(m / scale, lo, 1.0).astype(np.float32)


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB (D65) → gamma-encoded sRGB, unclipped: (..., 3) → (..., 3), in-gamut values in [0, 1]."""
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], axis=-1)
    delta = 6.0 / 29.0
    xyz = np.where(f > delta, f**3, 3 * delta**2 * (f - 4.0 / 29.0)) * _WHITE_D65
    rgb = xyz @ _XYZ_TO_SRGB.T
    return np.where(rgb <= 0.0031308, 12.92 * rgb, 1.055 * np.abs(rgb) ** (1 / 2.4) - 0.055)


def _lch_in_gamut(lightness: np.ndarray, chroma: np.ndarray, hue_deg: np.ndarray) -> np.ndarray:
    """sRGB (n, 3) of LCh points, each with its chroma reduced (bisection) until it fits the gamut.

    Lightness and hue are kept exactly, so a ramp designed with uniform lightness steps stays uniform.
    """
    hue = np.deg2rad(hue_deg)

    def rgb(scale):
        c = chroma * scale
        return lab_to_srgb(np.stack([lightness, c * np.cos(hue), c * np.sin(hue)], axis=-1))

    def fits(scale):
        v = rgb(scale)
        return ((v >= -1e-9) & (v <= 1 + 1e-9)).all(-1)

    lo, hi = np.zeros_like(lightness), np.ones_like(lightness)
    ok = fits(hi)
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        good = fits(mid)
        lo, hi = np.where(good, mid, lo), np.where(good, hi, mid)
    return np.clip(rgb(np.where(ok, 1.0, lo)), 0.0, 1.0)


def _diverging(n: int) -> np.ndarray:
    """Blue → white → red with lightness linear in |t| on each side (t ∈ [-1, 1])."""
    t = np.linspace(-1.0, 1.0, n)
    lightness = 97.0 - 57.0 * np.abs(t)  # 97 at zero, 40 at both ends: equal weight to ±
    chroma = 75.0 * np.abs(t)
    hue = np.where(t < 0, 285.0, 35.0)
    return _lch_in_gamut(lightness, chroma, hue)


def _sequential(n: int) -> np.ndarray:
    """Dark violet → blue → green → light yellow, lightness linear from 15 to 95 (t ∈ [0, 1])."""
    t = np.linspace(0.0, 1.0, n)
    return _lch_in_gamut(15.0 + 80.0 * t, 35.0 + 35.0 * t, 300.0 - 210.0 * t)


_COLORMAPS = {"diverging": _diverging, "sequential": _sequential}


def colormap(name: Literal["diverging", "sequential"], n: int = 256) -> np.ndarray:
    """The lookup table of a built-in colormap: (n, 3) uint8, entry 0 = lowest value."""
    if name not in _COLORMAPS:
        raise ValueError(f"unknown colormap {name!r}; known: {sorted(_COLORMAPS)}")
    return np.round(_COLORMAPS[name](n) * 255.0).astype(np.uint8)


def colorize(values: np.ndarray, signed: bool = True) -> np.ndarray:
    """Normalised values (...) → uint8 RGB (..., 3): signed values in [-1, 1] on the diverging map,
    non-negative ones in [0, 1] on the sequential map (values outside are clipped)."""
    lut = colormap("diverging" if signed else "sequential")
    v = np.asarray(values, dtype=np.float64)
    t = (np.clip(v, -1.0, 1.0) + 1.0) / 2.0 if signed else np.clip(v, 0.0, 1.0)
    return lut[np.round(t * (len(lut) - 1)).astype(np.intp)]


def upsample_map(
    attr_map: np.ndarray, size: tuple[int, int], method: Literal["bicubic", "bilinear"] = "bicubic"
) -> np.ndarray:
    """Resize a patch map (gh, gw) to pixels (H, W) = `size`, float32.

    PyTorch-exact upsampling (`libra_jax.weights.resize`), so the pixels shown are the pixels
    the segmentation metrics score.
    """
    m = np.asarray(attr_map, dtype=np.float32)
    if m.ndim != 2:
        raise ValueError(f"expected a (gh, gw) map; got shape {m.shape}")
    return resize(m, tuple(size), method)


def overlay(
    image: np.ndarray,
    attr_map: np.ndarray,
    alpha: float = 0.5,
    signed: bool = True,
    outlier_quantile: float = 0.01,
) -> np.ndarray:
    """Blend a colour-coded map over an image.

    Args:
      image: uint8 (H, W, 3), the image the model saw (after crop/resize).
      attr_map: (gh, gw) map, any scale.
      alpha: weight of the map colours (0 = image only, 1 = map only).
      signed: diverging colours for signed maps; False shows the positive part on the sequential map.
      outlier_quantile: see `normalize_for_display`.
    Returns:
      uint8 (H, W, 3).
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be uint8 (H, W, 3); got {image.dtype} {image.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1]; got {alpha}")
    values = normalize_for_display(attr_map, "signed" if signed else "positive", outlier_quantile)
    colors = colorize(upsample_map(values, image.shape[:2]), signed).astype(np.float32)
    return np.round((1.0 - alpha) * image + alpha * colors).astype(np.uint8)


def grid(
    images: Sequence[Sequence[np.ndarray]], labels: Sequence[Sequence[str]] | None = None, pad: int = 4
) -> np.ndarray:
    """Tile panels into one uint8 (H, W, 3) image, each with an optional caption strip above it.

    Args:
      images: rows of uint8 panels, (h, w, 3) or (h, w); every cell is as large as the largest
        panel, rows may have different lengths (missing cells stay white).
      labels: a caption per panel, nested like `images` (text too wide for its cell is shortened).
      pad: white margin in pixels around every cell.
    """
    rows = [[_as_rgb(p) for p in row] for row in images]
    if not rows or not any(rows):
        raise ValueError("grid needs at least one image")
    if labels is not None and [len(r) for r in labels] != [len(r) for r in rows]:
        raise ValueError("labels must be nested exactly like images")
    cell_h = max(p.shape[0] for row in rows for p in row)
    cell_w = max(p.shape[1] for row in rows for p in row)
    font = ImageFont.load_default()
    # a fixed strip height from the font metrics, so the layout does not depend on the text
    strip = font.getbbox("Ag")[3] + pad if labels is not None else 0
    step_y, step_x = cell_h + strip + pad, cell_w + pad
    canvas = Image.new("RGB", (pad + step_x * max(map(len, rows)), pad + step_y * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, row in enumerate(rows):
        for j, panel in enumerate(row):
            x0, y0 = pad + j * step_x, pad + i * step_y
            canvas.paste(Image.fromarray(panel), (x0, y0 + strip))
            if labels is not None:
                draw.text((x0, y0), _fit(draw, font, labels[i][j], cell_w), fill="black", font=font)
    return np.asarray(canvas)


def _as_rgb(panel: np.ndarray) -> np.ndarray:
    panel = np.asarray(panel)
    if panel.dtype != np.uint8 or panel.ndim not in (2, 3) or (panel.ndim == 3 and panel.shape[-1] != 3):
        raise ValueError(f"panels must be uint8 (h, w, 3) or (h, w); got {panel.dtype} {panel.shape}")
    return np.repeat(panel[..., None], 3, axis=-1) if panel.ndim == 2 else panel


def _fit(draw: ImageDraw.ImageDraw, font, text: str, width: int) -> str:
    """`text`, cut and ended with '..' if it is wider than `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "..", font=font) > width:
        text = text[:-1]
    return text + ".."


def save_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save a uint8 image, (H, W), (H, W, 3) or (H, W, 4), as PNG atomically (see `write_atomic`)."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
        raise ValueError(
            f"save_png needs a uint8 (H, W), (H, W, 3) or (H, W, 4) array; got {array.dtype} {array.shape}"
        )
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    write_atomic(path, buffer.getvalue())
