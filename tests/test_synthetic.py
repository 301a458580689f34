"""The synthetic shapes benchmark: determinism, exact masks, pair layout, balance, colour-blindness."""

from __future__ import annotations

import numpy as np
import pytest

from libra_jax.data import CLASSES, SPLITS, BenchmarkConfig, class_names, make_pair, make_single, make_split, scene
from libra_jax.data.synthetic import AREA, LUMA, paint

CONFIG = BenchmarkConfig()
ALL_CLASSES = BenchmarkConfig(num_classes=len(CLASSES))


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("make", [make_single, make_pair])
def test_deterministic_and_sliceable(make):
    full = make(CONFIG, 6, seed=7)
    _same(full, make(CONFIG, 6, seed=7))
    # Example i depends only on (seed, i): a slice generated on its own equals the same rows of a batch.
    _same({k: v[3:5] for k, v in full.items()}, make(CONFIG, 2, seed=7, start=3))
    _same({k: v[4:5] for k, v in full.items()}, make(CONFIG, 1, seed=7, start=4))
    other = make(CONFIG, 6, seed=8)
    assert not np.array_equal(full["images"], other["images"])
    assert not np.array_equal(full["masks"], other["masks"])


def test_shapes_and_dtypes():
    single, pair = make_single(CONFIG, 3, 0), make_pair(CONFIG, 3, 0)
    h = CONFIG.image_size
    assert single["images"].shape == (3, h, h, 3) and single["images"].dtype == np.uint8
    assert single["labels"].shape == (3,) and single["labels"].dtype == np.int32
    assert single["masks"].shape == (3, h, h) and single["masks"].dtype == bool
    assert pair["images"].shape == (3, h, h, 3) and pair["labels"].shape == (3, 2)
    assert pair["masks"].shape == (3, 2, h, h)


def test_named_splits():
    assert len(set(SPLITS.values())) == len(SPLITS)
    _same(make_split(CONFIG, "test", 2, start=5), make_single(CONFIG, 2, SPLITS["test"], start=5))
    _same(make_split(CONFIG, "pairs", 2), make_pair(CONFIG, 2, SPLITS["pairs"]))
    with pytest.raises(ValueError, match="unknown split"):
        make_split(CONFIG, "holdout", 1)


def test_class_names_and_config_checks():
    assert class_names(CONFIG) == ("disc", "ring", "square", "triangle", "plus", "star", "crescent", "hexagon")
    assert len(class_names(ALL_CLASSES)) == len(CLASSES)
    # Shape and texture both differ between every two classes.
    assert len({c.shape for c in CLASSES}) == len({c.texture for c in CLASSES}) == len(CLASSES)
    with pytest.raises(ValueError, match="num_classes"):
        BenchmarkConfig(num_classes=5)
    with pytest.raises(ValueError, match="too large"):
        BenchmarkConfig(max_scale=0.45)
    with pytest.raises(ValueError, match="dark_luma"):
        BenchmarkConfig(dark_luma=(80.0, 40.0))


def test_object_colours_are_one_dark_one_light_in_random_order():
    dark_first = []
    for index in range(80):
        (obj,) = scene(CONFIG, 9, index, pair=False).objects
        ya, yb = np.asarray(obj.colour_a) @ LUMA, np.asarray(obj.colour_b) @ LUMA
        dark, light = sorted((ya, yb))
        assert CONFIG.dark_luma[0] - 1e-3 <= dark <= CONFIG.dark_luma[1] + 1e-3
        assert CONFIG.light_luma[0] - 1e-3 <= light <= CONFIG.light_luma[1] + 1e-3
        assert all(0 <= c <= 255 for c in (*obj.colour_a, *obj.colour_b))
        dark_first.append(ya < yb)
    # Which colour a texture's "first" colour is does not depend on anything: polarity is random.
    assert 0.3 < np.mean(dark_first) < 0.7


@pytest.mark.parametrize("pair", [False, True])
def test_masks_are_exactly_the_painted_pixels(pair):
    size = ALL_CLASSES.image_size
    seen = set()
    for index in range(40):
        sc = scene(ALL_CLASSES, seed=3, index=index, pair=pair)
        image, masks = sc.render()
        # Painted on a sentinel canvas (a value no colour takes), an object changes exactly its coverage.
        for obj in sc.objects:
            painted, _ = paint((obj,), np.full((size, size, 3), -1.0, np.float32))
            np.testing.assert_array_equal((painted != -1).any(-1), obj.coverage(size))
            cover = obj.coverage(size)
            # Every shape has area AREA·s² up to pixelisation.
            assert abs(cover.sum() / (AREA * obj.scale**2) - 1) < 0.2
            seen.add(obj.label)
        # Final pixels: the object's texture inside its mask, the untouched clutter everywhere else.
        for obj, mask in zip(sc.objects, masks, strict=True):
            expected = np.clip(np.rint(obj.colours(size)), 0, 255).astype(np.uint8)
            np.testing.assert_array_equal(image[mask], expected[mask])
        background = np.clip(np.rint(sc.background), 0, 255).astype(np.uint8)
        outside = ~masks.any(0)
        np.testing.assert_array_equal(image[outside], background[outside])
    assert seen == set(range(len(CLASSES)))


def test_public_arrays_match_scenes():
    data = make_pair(CONFIG, 4, seed=11, start=20)
    for j in range(4):
        sc = scene(CONFIG, 11, 20 + j, pair=True)
        image, masks = sc.render()
        np.testing.assert_array_equal(data["images"][j], image)
        np.testing.assert_array_equal(data["masks"][j], masks)
        assert list(data["labels"][j]) == [o.label for o in sc.objects]


def test_pairs_are_distinct_disjoint_and_separated():
    data = make_pair(CONFIG, 60, seed=5)
    assert np.all(data["labels"][:, 0] != data["labels"][:, 1])
    assert not np.any(data["masks"][:, 0] & data["masks"][:, 1])
    assert np.all(data["masks"].sum((2, 3)) > 0)
    size = CONFIG.image_size
    for j in range(60):
        a, b = (o.coverage(size) for o in scene(CONFIG, 5, j, pair=True).objects)
        assert (a & b).sum() <= CONFIG.max_overlap * min(a.sum(), b.sum())


def test_objects_stay_inside_the_image():
    data = make_single(ALL_CLASSES, 200, seed=2)
    border = np.ones(data["masks"].shape[1:], bool)
    border[1:-1, 1:-1] = False
    # Placement keeps each whole shape inside; a pixel on the border is at most touched, never cut off.
    assert data["masks"][:, border].sum() < 0.01 * data["masks"].sum()


def _colour_histograms(images: np.ndarray, bins: int = 4) -> np.ndarray:
    """Normalised joint RGB histograms (n, bins³) of whole images (n, H, W, 3)."""
    q = images.astype(np.int64) * bins // 256
    codes = ((q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]).reshape(len(images), -1)
    hist = np.stack([np.bincount(c, minlength=bins**3) for c in codes]).astype(np.float64)
    return hist / hist.sum(1, keepdims=True)


def _nearest_class_mean_accuracy(features: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fit class means on the first half, score the second half."""
    half = len(labels) // 2
    means = np.stack([features[:half][labels[:half] == c].mean(0) for c in range(k)])
    pred = np.argmin(((features[half:, None] - means[None]) ** 2).sum(-1), axis=1)
    return float(np.mean(pred == labels[half:]))


def test_class_balance_and_colour_does_not_tell_the_class():
    k = CONFIG.num_classes
    data = make_single(CONFIG, 800, seed=21)
    labels = data["labels"]
    counts = np.bincount(labels, minlength=k)
    assert counts.min() > 0.6 * 800 / k and counts.max() < 1.4 * 800 / k
    # Colour-only classifiers stay near chance (1/8; 0.22 is ~6 standard errors above it): the colour
    # histogram of the image, and the object's own mean colour.
    assert _nearest_class_mean_accuracy(_colour_histograms(data["images"]), labels, k) < 0.22
    m = data["masks"][..., None]
    object_colour = (data["images"] * m).sum((1, 2)) / m.sum((1, 2))
    assert _nearest_class_mean_accuracy(object_colour, labels, k) < 0.22
