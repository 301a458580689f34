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
    scale = display_scale(m, mode, outlier_quantile)
    if scale <= 0.0:
        return np.zeros(m.shape, np.float32)
    return np.clip(m / scale, -1.0 if mode == "signed" else 0.0, 1.0).astype(np.float32)


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


def to_pixels(maps, size: int | tuple[int, int], mode: Literal["bicubic", "bilinear"] = "bicubic"):
    """Patch maps (B, gh, gw) → pixel maps (B, H, W) with `size` = (H, W) (or one int for both).

    The interpolation the segmentation metrics use (`libra_jax.metrics.segmentation.upsample`: PyTorch's
    `F.interpolate(align_corners=False)`, bicubic as LibraGrad, bilinear as Chefer), so these pixels are the
    ones the metrics score. Signed values are kept; numpy in, numpy out; jax in, jax out.
    """
    from libra_jax.metrics.segmentation import upsample

    if np.ndim(maps) != 3:
        raise ValueError(f"to_pixels takes maps (B, gh, gw); got shape {np.shape(maps)} (one map: pass m[None])")
    if not np.issubdtype(maps.dtype, np.floating):
        maps = maps.astype(np.float32)
    return upsample(maps, size, mode)


def display_scale(attr_map: np.ndarray, mode: Mode = "signed", outlier_quantile: float = 0.01) -> float:
    """The value `normalize_for_display` maps to 1 (the colour bar's end): a robust maximum of |map| (or of its
    positive part); 0 for an all-zero map."""
    m = np.nan_to_num(np.asarray(attr_map, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if mode == "positive":
        m = np.maximum(m, 0.0)
    scale = np.quantile(np.abs(m), 1.0 - outlier_quantile) if m.size else 0.0
    if scale <= 0.0:  # a map whose mass sits in < q of its entries: fall back to the maximum
        scale = np.abs(m).max(initial=0.0)
    return float(scale)


def color_key(height: int, scale: float, signed: bool = True, width: int = 10) -> np.ndarray:
    """A vertical colour key, uint8 (height, W, 3): the colormap from +scale (top) to −scale (signed) or 0
    (bottom), labelled with those values and 0. W = `width` + room for the widest label, whatever `scale`."""
    font = _font(11)
    values = [scale, 0.0, -scale] if signed else [scale, 0.0]
    labels = [f"{v:+.3g}" if v else "0" for v in values] if signed else [f"{v:.3g}" for v in values]
    text_w = int(np.ceil(font.getlength("-8.88e-888")))  # the widest '.3g' label: one width for every scale
    ramp = np.linspace(1.0, -1.0 if signed else 0.0, height)
    strip = np.repeat(colorize(ramp, signed)[:, None], width, axis=1)
    canvas = Image.new("RGB", (width + 3 + text_w + 2, height), "white")
    canvas.paste(Image.fromarray(strip), (0, 0))
    draw = ImageDraw.Draw(canvas)
    text_h = font.getbbox("0")[3]
    for k, label in enumerate(labels):  # top, middle (0) and bottom, kept inside the strip's height
        y = round(k * (height - 1) / (len(labels) - 1) - text_h * k / (len(labels) - 1))
        draw.text((width + 3, min(max(y, 0), height - text_h)), label, fill="black", font=font)
    return np.asarray(canvas)


def overlay(
    image: np.ndarray,
    attr_map: np.ndarray,
    alpha: float = 0.5,
    signed: bool = True,
    outlier_quantile: float = 0.01,
    *,
    scale: Literal["per_image", "shared"] = "per_image",
    colorbar: bool = True,
) -> np.ndarray:
    """Blend colour-coded maps over images, each with a colour key of its values.

    Args:
      image: uint8 (H, W, 3), the image the model saw (after crop/resize), or a batch (B, H, W, 3).
      attr_map: (gh, gw) map (any scale, e.g. a patch map or `to_pixels` output), or a batch (B, gh, gw).
      alpha: weight of the map colours (0 = image only, 1 = map only).
      signed: diverging colours (blue < 0 < red, white at 0) for signed maps; False shows the positive
        part on the sequential map.
      outlier_quantile: see `normalize_for_display`.
      scale: "per_image" normalises every map by its own robust maximum; "shared" uses one for the
        whole batch, so equal colours mean equal values across images.
      colorbar: append a colour bar (`color_key`) labelled with the values at its ends to the right of every panel.
    Returns:
      uint8 (H, W', 3), or (B, H, W', 3) for a batch; W' = W (+ the colour bar's width).
    """
    image, attr_map = np.asarray(image), np.asarray(attr_map)
    batched = image.ndim == 4
    if image.dtype != np.uint8 or image.ndim not in (3, 4) or image.shape[-1] != 3:
        raise ValueError(f"image must be uint8 (H, W, 3) or (B, H, W, 3); got {image.dtype} {image.shape}")
    if attr_map.ndim != image.ndim - 1 or (batched and len(attr_map) != len(image)):
        raise ValueError(f"maps {attr_map.shape} do not match images {image.shape}: one (gh, gw) map per image")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1]; got {alpha}")
    if scale not in ("per_image", "shared"):
        raise ValueError(f"scale must be 'per_image' or 'shared'; got {scale!r}")
    mode: Mode = "signed" if signed else "positive"
    images, maps = (image, attr_map) if batched else (image[None], attr_map[None])
    shared = display_scale(maps, mode, outlier_quantile)
    panels = []
    for img, m in zip(images, maps, strict=True):
        s = shared if scale == "shared" else display_scale(m, mode, outlier_quantile)
        values = np.clip(np.nan_to_num(m.astype(np.float64), posinf=0.0, neginf=0.0) / (s or 1.0), -1.0, 1.0)
        values = values if signed else np.maximum(values, 0.0)
        colors = colorize(upsample_map(values, img.shape[:2]), signed).astype(np.float32)
        panel = np.round((1.0 - alpha) * img + alpha * colors).astype(np.uint8)
        if colorbar:
            panel = np.concatenate([panel, color_key(img.shape[0], s, signed)], axis=1)
        panels.append(panel)
    return np.stack(panels) if batched else panels[0]


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


def _font(size: int):
    """Pillow's built-in font at `size` px (scalable where Pillow has FreeType, else its bitmap font)."""
    return ImageFont.load_default(size=size)


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


# Tableau's 10 categorical colours: distinct hues of similar weight, told apart also in print
CATEGORICAL = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
               (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))  # fmt: skip
# on / off lengths in pixels of the line styles, one per preset: solid, dashed, dotted, dash-dot
DASHES = ((), (14, 7), (3, 5), (14, 5, 3, 5))


def _dashed(draw: ImageDraw.ImageDraw, points, colour, pattern: Sequence[int], width: int) -> None:
    """A polyline in a dash `pattern` that runs on across the vertices (no restart at each segment)."""
    if not pattern:
        draw.line(points, fill=colour, width=width, joint="curve")
        return
    phase, on = 0.0, True  # distance into the current dash / gap
    index = 0
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:], strict=True):
        length, done = float(np.hypot(x1 - x0, y1 - y0)), 0.0
        while done < length:
            step = min(pattern[index] - phase, length - done)
            if on:
                a, b = done / length, (done + step) / length
                draw.line([(x0 + a * (x1 - x0), y0 + a * (y1 - y0)), (x0 + b * (x1 - x0), y0 + b * (y1 - y0))],
                          fill=colour, width=width)  # fmt: skip
            done, phase = done + step, phase + step
            if phase >= pattern[index]:
                phase, index, on = 0.0, (index + 1) % len(pattern), not on


def line_panels(
    panels: Sequence[tuple[str, str, dict[tuple[str, str], np.ndarray]]],
    x: Sequence[float],
    y_label: str,
    y_range: tuple[float, float] = (0.0, 1.0),
) -> np.ndarray:
    """Side-by-side line charts sharing the x values and one legend: uint8 (H, W, 3).

    Args:
      panels: (title, x-axis label, {(method, preset): y values (len(x),)}) per panel. Every method gets
        its own colour (`CATEGORICAL`, in order of first appearance), every preset its own line style
        (`DASHES`: solid, dashed, dotted, dash-dot), the same in all panels.
      x: the x values (ticks are drawn at them).
      y_label: the y-axis label; y ticks every 0.2 of `y_range`.
    """
    keys = list(dict.fromkeys(k for _, _, series in panels for k in series))
    methods, presets = list(dict.fromkeys(m for m, _ in keys)), list(dict.fromkeys(p for _, p in keys))
    if len(methods) > len(CATEGORICAL) or len(presets) > len(DASHES):
        raise ValueError(
            f"at most {len(CATEGORICAL)} methods and {len(DASHES)} presets per figure; got {len(methods)} and "
            f"{len(presets)}: plot fewer at a time"
        )
    keys.sort(key=lambda k: (methods.index(k[0]), presets.index(k[1])))  # the legend grouped by method
    font, small = _font(16), _font(13)
    pw, ph, left, top, bottom, gap = 440, 330, 64, 40, 56, 40  # plot area, margins
    legend_w = 28 + max(int(small.getlength(f"{m} / {p}")) for m, p in keys) + 60
    width = left + len(panels) * (pw + gap) + legend_w
    img = Image.new("RGB", (width, max(top + ph + bottom, top + 20 * len(keys) + 16)), "white")
    draw = ImageDraw.Draw(img)
    x = np.asarray(x, np.float64)
    lo, hi = y_range

    for n, (title, x_label, series) in enumerate(panels):
        x0 = left + n * (pw + gap)

        def at(xv, yv, x0=x0):
            return x0 + (xv - x[0]) / (x[-1] - x[0]) * pw, top + ph - (yv - lo) / (hi - lo) * ph

        for t in np.linspace(lo, hi, 6):  # horizontal grid and y ticks
            _, yy = at(x[0], t)
            draw.line([(x0, yy), (x0 + pw, yy)], fill=(225, 225, 225))
            draw.text((x0 - 6, yy), f"{t:.1f}", fill="black", font=small, anchor="rm")
        for xv in x:
            xx, _ = at(xv, lo)
            draw.line([(xx, top + ph), (xx, top + ph + 5)], fill="black")
            draw.text((xx, top + ph + 7), f"{xv:g}", fill="black", font=small, anchor="mt")
        draw.rectangle([x0, top, x0 + pw, top + ph], outline="black")
        draw.text((x0 + pw / 2, top - 10), title, fill="black", font=font, anchor="mb")
        draw.text((x0 + pw / 2, top + ph + 30), x_label, fill="black", font=small, anchor="mt")
        for (m, p), y in series.items():
            colour = CATEGORICAL[methods.index(m)]
            points = [at(xv, yv) for xv, yv in zip(x, np.asarray(y, np.float64), strict=True)]
            _dashed(draw, points, colour, DASHES[presets.index(p)], 3)
            for px, py in points:
                draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
    y_mid = top + ph / 2  # the y label, rotated
    label = Image.new("RGB", (int(font.getlength(y_label)) + 4, 20), "white")
    ImageDraw.Draw(label).text((2, 0), y_label, fill="black", font=font)
    rotated = label.rotate(90, expand=True)
    img.paste(rotated, (4, int(y_mid - rotated.height / 2)))

    lx = left + len(panels) * (pw + gap)
    for i, (m, p) in enumerate(keys):  # one entry per series: its line sample in colour and style
        ly = top + 8 + 20 * i
        _dashed(draw, [(lx, ly), (lx + 44, ly)], CATEGORICAL[methods.index(m)], DASHES[presets.index(p)], 3)
        draw.text((lx + 52, ly), f"{m} / {p}", fill="black", font=small, anchor="lm")
    return np.asarray(img)


def show(panels: np.ndarray, pad: int = 4) -> Image.Image:
    """uint8 panels (H, W, 3), or a batch (B, H, W, 3) such as `overlay`'s output, → one PIL image with the batch
    side by side (`pad` white pixels apart). A notebook cell ending in it displays it inline (PIL renders PNG)."""
    panels = np.asarray(panels)
    if panels.dtype != np.uint8 or panels.ndim not in (3, 4) or panels.shape[-1] != 3:
        raise ValueError(f"show needs uint8 (H, W, 3) or (B, H, W, 3) panels; got {panels.dtype} {panels.shape}")
    if panels.ndim == 3:
        return Image.fromarray(panels)
    gap = np.full((panels.shape[1], pad, 3), 255, np.uint8)
    row = [part for panel in panels for part in (panel, gap)][:-1]
    return Image.fromarray(np.concatenate(row, axis=1))


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
