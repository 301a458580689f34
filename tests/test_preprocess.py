"""`preprocess` against timm's eval transform (PIL resize + center crop + normalise)."""

import numpy as np
import pytest
from PIL import Image

from libra_jax.models.config import DataConfig, ViTConfig
from libra_jax.models.vit import VisionTransformer
from libra_jax.preprocess import preprocess

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def timm_eval(dc: DataConfig, img: np.ndarray) -> np.ndarray:
    """timm's own transform for the same DataConfig, as an NHWC float32 image."""
    data = pytest.importorskip("timm.data")
    tf = data.create_transform(
        input_size=(3, *dc.input_size),
        interpolation=dc.interpolation,
        mean=dc.mean,
        std=dc.std,
        crop_pct=dc.crop_pct,
        crop_mode=dc.crop_mode,
    )
    return tf(Image.fromarray(img)).numpy().transpose(1, 2, 0)


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "dc",
    [
        DataConfig(input_size=(32, 32), crop_pct=0.875, interpolation="bicubic"),
        DataConfig(mean=CLIP_MEAN, std=CLIP_STD, input_size=(48, 48), crop_pct=1.0, interpolation="bilinear"),
        DataConfig(input_size=(32, 48), crop_pct=0.9, interpolation="bicubic"),
        DataConfig(input_size=(40, 40), crop_pct=0.95, interpolation="bicubic", crop_mode="squash"),
        DataConfig(mean=CLIP_MEAN, std=CLIP_STD, input_size=(36, 36), crop_pct=1.0, crop_mode="border"),
    ],
    ids=["center", "center-crop1", "center-nonsquare", "squash", "border"],
)
def test_matches_timm_transform(dc):
    for i, (h, w) in enumerate([(50, 70), (91, 40), (32, 32), (20, 25), (36, 36)]):
        img = random_image(h, w, seed=i)
        got = preprocess(dc, img)
        assert got.shape == (1, *dc.input_size, 3) and got.dtype == np.float32
        np.testing.assert_allclose(got[0], timm_eval(dc, img), atol=1e-6, err_msg=f"image {(h, w)}")


def test_batch_pil_and_list_inputs():
    model = VisionTransformer(
        ViTConfig(img_size=32, patch_size=16, depth=1, embed_dim=32, num_heads=2), DataConfig(input_size=(32, 32))
    )
    imgs = np.stack([random_image(40, 48, seed=s) for s in range(3)])
    batch = preprocess(model, imgs)
    assert batch.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(preprocess(model, Image.fromarray(imgs[1]))[0], batch[1])
    mixed = preprocess(model, [imgs[0], Image.fromarray(random_image(64, 30)).convert("L")])
    assert mixed.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(mixed[0], batch[0])


def test_layout_and_dtype_errors():
    dc = DataConfig(input_size=(32, 32))
    with pytest.raises(ValueError, match="channels first"):
        preprocess(dc, random_image(40, 40).transpose(2, 0, 1))
    with pytest.raises(ValueError, match=r"channels first\? use np.moveaxis\(x, 1, -1\)"):
        preprocess(dc, np.zeros((2, 3, 40, 40), np.uint8))
    with pytest.raises(TypeError, match="uint8 pixels"):
        preprocess(dc, random_image(40, 40).astype(np.float32) / 255)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        preprocess(dc, np.zeros((40, 40, 4), np.uint8))
    with pytest.raises(ValueError, match="crop_mode"):
        preprocess(DataConfig(crop_mode="random"), random_image(40, 40))


def test_empty_images_are_named():
    dc = DataConfig(input_size=(32, 32))
    with pytest.raises(ValueError, match=r"image 0 is empty \(0×0 pixels\)"):
        preprocess(dc, np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(ValueError, match=r"image 1 is empty \(5×0 pixels\)"):
        preprocess(dc, [random_image(40, 40), np.zeros((5, 0, 3), np.uint8)])
    with pytest.raises(ValueError, match="no images given"):
        preprocess(dc, [])
