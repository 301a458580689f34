"""Display helpers: colormaps, normalisation, overlays, grids and atomic PNG writes."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from libra_jax import viz


def _luminance(rgb_uint8: np.ndarray) -> np.ndarray:
    """Relative luminance Y of sRGB colours (..., 3) uint8."""
    c = rgb_uint8 / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return linear @ np.array([0.2126, 0.7152, 0.0722])


@pytest.mark.parametrize("name", ["diverging", "sequential"])
def test_colormap_shape_and_range(name):
    lut = viz.colormap(name)
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert viz.colormap(name, 11).shape == (11, 3)
    assert len(np.unique(lut, axis=0)) > 200  # a ramp, not a few flat bands


def test_sequential_lightness_increases():
    y = _luminance(viz.colormap("sequential"))
    assert np.all(np.diff(y) > -1e-3) and y[-1] - y[0] > 0.7


def test_diverging_is_light_at_zero_and_balanced():
    lut = viz.colormap("diverging", 257)
    y = _luminance(lut)
    assert y.argmax() == 128 and np.all(lut[128] > 235)
    assert np.all(np.diff(y[:129]) > -1e-3) and np.all(np.diff(y[128:]) < 1e-3)
    assert abs(y[0] - y[-1]) < 0.05  # the same lightness for −1 and +1: neither sign dominates
    assert lut[0, 2] > lut[0, 0] and lut[-1, 0] > lut[-1, 2]  # blue for negative, red for positive


def test_unknown_colormap():
    with pytest.raises(ValueError, match="unknown colormap"):
        viz.colormap("jet")


def test_normalize_signed_keeps_sign_and_zero():
    m = np.array([[-4.0, -1.0, 0.0], [0.5, 2.0, 8.0]])
    out = viz.normalize_for_display(m, "signed", outlier_quantile=0.0)
    assert out.dtype == np.float32 and out.shape == m.shape
    np.testing.assert_array_equal(np.sign(out), np.sign(m))
    np.testing.assert_allclose(out, m / 8.0)


def test_normalize_clips_outliers():
    m = np.ones(1000)
    m[0] = 1000.0  # one token in a thousand: above the 0.99 quantile
    out = viz.normalize_for_display(m, "signed", outlier_quantile=0.01)
    assert out[0] == 1.0 and np.all(out[1:] > 0.9)


def test_normalize_positive_and_degenerate_maps():
    m = np.array([-3.0, 0.0, 1.0, 2.0])
    np.testing.assert_allclose(viz.normalize_for_display(m, "positive", 0.0), [0.0, 0.0, 0.5, 1.0])
    np.testing.assert_array_equal(viz.normalize_for_display(np.zeros((2, 3))), np.zeros((2, 3)))
    np.testing.assert_array_equal(viz.normalize_for_display(np.array([np.nan, -2.0, np.inf])), [0.0, -1.0, 0.0])
    sparse = np.zeros(1000)
    sparse[3] = -5.0  # quantile is 0: fall back to the maximum
    assert viz.normalize_for_display(sparse)[3] == -1.0
    with pytest.raises(ValueError, match="mode"):
        viz.normalize_for_display(m, "abs")


def test_colorize_maps_zero_to_the_centre():
    rgb = viz.colorize(np.array([-1.0, 0.0, 1.0, 7.0]))
    assert rgb.shape == (4, 3) and rgb.dtype == np.uint8
    lut = viz.colormap("diverging")
    np.testing.assert_array_equal(rgb[[0, 2, 3]], lut[[0, 255, 255]])
    assert viz.colorize(np.zeros((2, 5)), signed=False).shape == (2, 5, 3)


@pytest.mark.parametrize("method", ["bicubic", "bilinear"])
def test_upsample_map(method):
    up = viz.upsample_map(np.full((3, 4), 0.25), (30, 40), method)
    assert up.shape == (30, 40) and up.dtype == np.float32
    np.testing.assert_allclose(up, 0.25, atol=1e-6)
    with pytest.raises(ValueError):
        viz.upsample_map(np.zeros((2, 3, 4)), (8, 8))


def test_overlay_shapes_dtypes_and_alpha():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    attr = rng.standard_normal((3, 4))
    out = viz.overlay(image, attr, colorbar=False)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(viz.overlay(image, attr, alpha=0.0, colorbar=False), image)
    assert viz.overlay(image, attr, alpha=1.0, signed=False, colorbar=False).shape == image.shape
    with pytest.raises(ValueError, match="uint8"):
        viz.overlay(image.astype(np.float32), attr)
    with pytest.raises(ValueError, match="one \\(gh, gw\\) map per image"):
        viz.overlay(image[None].repeat(2, 0), attr[None])


def test_overlay_colour_bar_and_shared_scale():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    maps = np.stack([rng.standard_normal((5, 5)), 10 * rng.standard_normal((5, 5))])
    per_image, shared = viz.overlay(images, maps, alpha=1.0), viz.overlay(images, maps, alpha=1.0, scale="shared")
    assert per_image.shape == shared.shape and per_image.shape[:3] == (2, 40, per_image.shape[2])
    assert per_image.shape[2] > 40  # the colour bar to the right of each panel
    # the top of the bar is the colour of +scale, the bottom of -scale; white (0) in the middle
    lut = viz.colormap("diverging")
    np.testing.assert_array_equal(per_image[0, 0, 42], lut[-1])
    np.testing.assert_array_equal(per_image[0, -1, 42], lut[0])
    np.testing.assert_array_equal(shared[0, :, 40:], shared[1, :, 40:])  # one scale: the same labelled key
    assert (per_image[0, :, 40:] != per_image[1, :, 40:]).any()  # two scales: two labels
    faint = np.abs(shared[0, :, :40].astype(int) - 255).mean()
    assert faint < np.abs(per_image[0, :, :40].astype(int) - 255).mean()  # the small map fades when shared
    with pytest.raises(ValueError, match="scale must be"):
        viz.overlay(images, maps, scale="global")


def test_show_tiles_a_batch_for_notebooks():
    rng = np.random.default_rng(1)
    panels = viz.overlay(rng.integers(0, 256, (3, 20, 20, 3), dtype=np.uint8), rng.standard_normal((3, 4, 4)))
    shown = viz.show(panels, pad=2)
    assert isinstance(shown, Image.Image) and shown.size == (3 * panels.shape[2] + 2 * 2, 20)
    np.testing.assert_array_equal(np.asarray(shown)[:, panels.shape[2] + 2 :][:, : panels.shape[2]], panels[1])
    assert shown._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"  # what a notebook displays inline
    assert viz.show(panels[0]).size == (panels.shape[2], 20)
    with pytest.raises(ValueError, match="uint8"):
        viz.show(panels.astype(np.float32))


def test_color_key_labels_its_ends():
    key = viz.color_key(64, 0.0123)
    assert key.dtype == np.uint8 and key.shape[0] == 64 and key.shape[1] > 10
    assert (key[:, 12:] < 128).any()  # the labels are drawn
    assert viz.color_key(64, 2.0, signed=False).shape[0] == 64


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_to_pixels_is_the_metrics_upsampling(mode):
    from libra_jax.metrics.segmentation import upsample

    maps = np.random.default_rng(3).standard_normal((2, 4, 4)).astype(np.float32)
    pixels = viz.to_pixels(maps, (64, 48), mode)
    assert pixels.shape == (2, 64, 48)
    np.testing.assert_array_equal(pixels, upsample(maps, (64, 48), mode))
    np.testing.assert_allclose(viz.to_pixels(np.full((1, 3, 3), 2.0), 12), 2.0, rtol=1e-6)
    with pytest.raises(ValueError, match="pass m\\[None\\]"):
        viz.to_pixels(maps[0], 64)


def test_curves_png_smoke(tmp_path):
    from libra_jax.report import plot_curves

    r = np.linspace(0.1, 0.9, 9)
    curves = {
        (m, p): {"mif_correct": np.tile((1 - r * k)[:, None], 2), "lif_correct": np.tile((r * k)[:, None], 2)}
        for k, (m, p) in enumerate([(m, p) for m in ("ixg", "gradcam", "ig") for p in ("vanilla", "libra")], 1)
        for k in [k / 8]
    }
    plot_curves(curves, tmp_path / "curves.png", r)
    image = np.asarray(Image.open(tmp_path / "curves.png").convert("RGB"))
    colours = {tuple(c) for c in image.reshape(-1, 3)}
    assert all(c in colours for c in viz.CATEGORICAL[:3]) and viz.CATEGORICAL[3] not in colours  # one per method
    with pytest.raises(ValueError, match="at most 10 methods"):
        viz.line_panels([("t", "x", {(f"m{i}", "p"): r for i in range(11)})], r, "y")


def test_grid_layout():
    a = np.zeros((20, 30, 3), np.uint8)
    b = np.full((10, 12), 255, np.uint8)
    plain = viz.grid([[a, b], [a]], pad=2)
    assert plain.dtype == np.uint8 and plain.shape == (2 + 2 * (20 + 2), 2 + 2 * (30 + 2), 3)
    labelled = viz.grid([[a, b], [a]], [["a very long caption that will not fit", "b"], ["c"]], pad=2)
    assert labelled.shape[1] == plain.shape[1] and labelled.shape[0] > plain.shape[0]
    assert viz.grid([[a, b], [a]], [["x", "y"], ["z"]], pad=2).shape == labelled.shape
    with pytest.raises(ValueError, match="nested"):
        viz.grid([[a, b]], [["only one"]])


def test_save_png_roundtrip_leaves_no_temp_file(tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    path = tmp_path / "sub" / "out.png"
    viz.save_png(path, image)
    viz.save_png(path, image[::-1].copy())  # overwrite in place
    np.testing.assert_array_equal(np.asarray(Image.open(path)), image[::-1])
    assert os.listdir(path.parent) == ["out.png"]


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        viz.save_png(tmp_path / "out.png", np.zeros((4, 4), np.uint8))
    assert os.listdir(tmp_path) == []


def test_save_png_rejects_bad_arrays(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        viz.save_png(tmp_path / "x.png", np.zeros((4, 4, 3), np.float32))
    assert os.listdir(tmp_path) == []


def test_note_under_a_completeness_column():
    from libra_jax.report import table_note

    assert "FullGrad+" in table_note({("fullgrad_plus", "libra"): {"completeness_error": 11.4, "mif": 0.3}})
    assert table_note({("gradcam", "libra"): {"completeness_error": float("nan"), "mif": 0.3}}) == ""
