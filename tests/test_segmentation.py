"""Segmentation metrics against the reference libraries: torch `F.interpolate`, sklearn
`average_precision_score`, and a torch/sklearn transcription of Chefer's per-image evaluation."""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np
import pytest

from libra_jax.metrics import segmentation as seg


def sklearn_ap(scores, targets):
    metrics = pytest.importorskip("sklearn.metrics")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "No positive class found in y_true"
        return np.array(
            [metrics.average_precision_score(t.ravel(), s.ravel()) for s, t in zip(scores, targets, strict=True)]
        )


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
@pytest.mark.parametrize(("grid", "size"), [((14, 14), (224, 224)), ((7, 7), (224, 224)), ((5, 3), (37, 20))])
def test_upsample_matches_torch(mode, grid, size):
    torch = pytest.importorskip("torch")
    maps = np.random.default_rng(0).normal(size=(3, *grid)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(maps)[:, None], size=size, mode=mode, align_corners=False)
    ref = ref[:, 0].numpy()
    np.testing.assert_allclose(np.asarray(seg.upsample(jnp.asarray(maps), size, mode)), ref, atol=1e-5)
    np.testing.assert_allclose(seg.upsample(maps, size, mode), ref, atol=1e-5)
    if size[0] % grid[0] == 0 and grid[0] == grid[1]:
        # The official calls use scale_factor=res/g; for integer factors it is the same resize.
        by_scale = torch.nn.functional.interpolate(
            torch.from_numpy(maps)[:, None], scale_factor=size[0] // grid[0], mode=mode
        )
        np.testing.assert_allclose(by_scale[:, 0].numpy(), ref, atol=1e-6)


@pytest.mark.parametrize("n", [1, 2, 3, 10, 257, 4096])
@pytest.mark.parametrize("kind", ["continuous", "ties", "two_levels"])
def test_average_precision_matches_sklearn(n, kind):
    rng = np.random.default_rng(n)
    b = 16
    if kind == "continuous":
        scores = rng.normal(size=(b, n))
    elif kind == "ties":
        scores = rng.integers(-3, 4, (b, n)).astype(np.float64)
    else:
        scores = (rng.random((b, n)) < 0.5).astype(np.float64)
    scores = scores.astype(np.float32)
    targets = rng.random((b, n)) < rng.random((b, 1))  # positive rate varies per image
    targets[0] = False  # no positive: sklearn returns 0.0
    targets[1] = True  # all positive: 1.0
    np.testing.assert_allclose(seg.average_precision(scores, targets), sklearn_ap(scores, targets), atol=2e-6)


def test_average_precision_edge_cases():
    scores = np.array(
        [[0.0, -0.0, 0.0, -0.0], [0.5, 0.5, 0.5, 0.5], [3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]], np.float32
    )
    targets = np.array([[1, 0, 0, 1], [0, 1, 0, 1], [1, 1, 0, 0], [1, 1, 0, 0]], np.int64)
    ap = np.asarray(seg.average_precision(scores, targets))
    np.testing.assert_allclose(ap, sklearn_ap(scores, targets), atol=1e-7)
    np.testing.assert_allclose(ap[:3], [0.5, 0.5, 1.0])  # -0.0 ties with 0.0; one threshold → positive rate
    # Image axes are flattened: (B, H, W) equals (B, H·W); bool and {0, 1} masks agree.
    maps = np.random.default_rng(0).normal(size=(4, 8, 9)).astype(np.float32)
    masks = np.random.default_rng(1).random((4, 8, 9)) < 0.3
    flat = seg.average_precision(maps.reshape(4, -1), masks.reshape(4, -1).astype(np.int32))
    np.testing.assert_array_equal(seg.average_precision(maps, masks), flat)
    assert seg.mean_ap([0.5, np.nan, 1.0]) == pytest.approx(0.5)


def chefer_reference(pixel_map, mask):
    """Chefer's per-image evaluation transcribed step by step with torch ops and sklearn (batch of 1)."""
    torch = pytest.importorskip("torch")
    metrics = pytest.importorskip("sklearn.metrics")
    res = torch.from_numpy(pixel_map)[None, None]
    labels = torch.from_numpy(mask.astype(np.int64))
    res = (res - res.min()) / (res.max() - res.min())
    thr = res.mean()
    fg_hard, bg_hard = res.gt(thr).float(), res.le(thr).float()
    bg_soft = 1 - res
    fg_soft = res.clone()
    for t in (fg_hard, bg_hard, fg_soft, bg_soft):
        t[t != t] = 0
    hard = torch.cat((bg_hard, fg_hard), 1)[0]
    soft = torch.cat((bg_soft, fg_soft), 1)[0]
    pred = torch.max(hard, 0)[1].numpy() + 1
    target = labels.numpy() + 1
    correct, labeled = np.sum((pred == target) * (target > 0)), np.sum(target > 0)
    pred = pred * (target > 0)
    inter = np.histogram(pred * (pred == target), bins=2, range=(1, 2))[0]
    union = np.histogram(pred, bins=2, range=(1, 2))[0] + np.histogram(target, bins=2, range=(1, 2))[0] - inter
    onehot = np.stack([mask == 0, mask == 1]).astype(np.int64)
    ap = np.nan_to_num(metrics.average_precision_score(onehot.ravel(), soft.numpy().ravel()))
    return correct, labeled, inter, union, ap


def test_chefer_segmentation_matches_reference_transcription():
    rng = np.random.default_rng(3)
    maps = rng.normal(size=(6, 16, 16)).astype(np.float32)
    maps[1] = np.round(maps[1])  # ties
    maps[2] = 0.7  # constant map: NaN path
    masks = (rng.random((6, 16, 16)) < rng.random((6, 1, 1))).astype(np.int64)
    masks[3] = 0  # no foreground
    out = {k: np.asarray(v) for k, v in seg.chefer_segmentation(maps, masks).items()}
    for i in range(len(maps)):
        correct, labeled, inter, union, ap = chefer_reference(maps[i], masks[i])
        assert out["correct"][i] == correct and out["labeled"][i] == labeled
        np.testing.assert_array_equal(out["intersection"][i], inter)
        np.testing.assert_array_equal(out["union"][i], union)
        assert out["ap"][i] == pytest.approx(ap, abs=2e-6)
    assert out["ap"][2] == pytest.approx(0.5)  # constant map: both soft channels 0 → AP = positive rate
    assert out["correct"][2] == (masks[2] == 0).sum()  # ... and everything predicted background

    # Dataset-level reduction over two batches: sums of counts, not per-image means.
    parts = [seg.chefer_segmentation(maps[:3], masks[:3]), seg.chefer_segmentation(maps[3:], masks[3:])]
    summary = seg.chefer_summary(parts)
    iou = out["intersection"].sum(0) / out["union"].sum(0)
    assert summary["miou"] == pytest.approx(iou.mean(), rel=1e-12)
    assert summary["pixel_accuracy"] == pytest.approx(out["correct"].sum() / out["labeled"].sum(), rel=1e-12)
    assert summary["map"] == pytest.approx(out["ap"].mean(), rel=1e-6)
    assert seg.chefer_summary(out) == summary


def test_class_discrimination_ap():
    rng = np.random.default_rng(4)
    mask_a = np.zeros((2, 12, 12), bool)
    mask_b = np.zeros((2, 12, 12), bool)
    mask_a[:, :, :5] = True
    mask_b[:, :, 7:] = True
    # Class a's map: high on object a, a little signal on b, noise elsewhere.
    maps = 2.0 * mask_a + 0.5 * mask_b + 0.1 * rng.normal(size=mask_a.shape)
    out = seg.class_discrimination_ap(maps.astype(np.float32), mask_a, mask_b)
    np.testing.assert_allclose(out["own"], sklearn_ap(maps, mask_a), atol=1e-6)
    np.testing.assert_allclose(out["other"], sklearn_ap(maps, mask_b), atol=1e-6)
    assert (np.asarray(out["own"]) > 0.99).all() and (np.asarray(out["other"]) < 0.8).all()
