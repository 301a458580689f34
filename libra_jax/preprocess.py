"""Images → the normalised NHWC batch a model expects: timm's eval transform, reproduced with PIL.

timm (`transforms_imagenet_eval`) resizes with PIL to input_size / crop_pct, center-crops to
input_size, scales to [0, 1] and normalises with the checkpoint's mean / std. crop_mode:
  'center'  resize the shorter side (keeping the aspect ratio), center crop;
  'squash'  resize both sides to input_size / crop_pct, center crop;
  'border'  resize the longer side, center crop / pad with the mean colour.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from libra_jax.models.config import DataConfig
from libra_jax.models.vit import VisionTransformer

PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}


def _resize(img: Image.Image, size: tuple[int, int], interpolation: str) -> Image.Image:
    """Resize to (h, w); a same-size resize is skipped (torchvision does)."""
    if (img.height, img.width) == size:
        return img
    return img.resize((size[1], size[0]), PIL_FILTERS[interpolation])


def _shorter_side_size(h: int, w: int, short: int) -> tuple[int, int]:
    """torchvision `Resize(int)`: shorter side → `short`, longer side scaled and truncated."""
    if w <= h:
        return int(short * h / w), short
    return short, int(short * w / h)


def _keep_ratio_size(h: int, w: int, target: tuple[int, int], longest: float) -> tuple[int, int]:
    """timm `ResizeKeepRatio`: one ratio for both sides, blending the larger (longest=1) and smaller ratio."""
    rh, rw = h / target[0], w / target[1]
    ratio = max(rh, rw) * longest + min(rh, rw) * (1.0 - longest)
    return round(h / ratio), round(w / ratio)


def _center_crop(x: np.ndarray, size: tuple[int, int], fill: Sequence[int]) -> np.ndarray:
    """torchvision `center_crop` on (H, W, C): pad with `fill` where smaller, then crop around the centre."""
    (ch, cw), (h, w) = size, x.shape[:2]
    if ch > h or cw > w:
        top, left = max(ch - h, 0) // 2, max(cw - w, 0) // 2
        padded = np.empty((max(ch, h), max(cw, w), x.shape[2]), x.dtype)
        padded[...] = np.asarray(fill, x.dtype)
        padded[top : top + h, left : left + w] = x
        x, (h, w) = padded, padded.shape[:2]
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return x[top : top + ch, left : left + cw]


def normalise(images: np.ndarray, data_config: DataConfig) -> np.ndarray:
    """uint8 (..., H, W, 3) → float32 (x / 255 − mean) / std, the last step of `preprocess`."""
    x = np.asarray(images)
    if x.dtype != np.uint8 or x.shape[-1] != 3:
        raise TypeError(f"normalise takes uint8 RGB images (..., H, W, 3), got {x.dtype} {x.shape}")
    x = x.astype(np.float32) / np.float32(255)
    return (x - np.asarray(data_config.mean, np.float32)) / np.asarray(data_config.std, np.float32)


def _transform(img: Image.Image, dc: DataConfig) -> np.ndarray:
    """One RGB PIL image → normalised float32 (h, w, 3)."""
    if dc.interpolation not in PIL_FILTERS:
        raise ValueError(f"unsupported interpolation {dc.interpolation!r}; expected one of {sorted(PIL_FILTERS)}")
    size = dc.input_size
    scale = (math.floor(size[0] / dc.crop_pct), math.floor(size[1] / dc.crop_pct))
    fill = (0, 0, 0)
    if dc.crop_mode == "squash":
        img = _resize(img, scale, dc.interpolation)
    elif dc.crop_mode == "border":
        img = _resize(img, _keep_ratio_size(img.height, img.width, scale, longest=1.0), dc.interpolation)
        fill = tuple(round(255 * m) for m in dc.mean)
    elif dc.crop_mode == "center":
        if scale[0] == scale[1]:
            img = _resize(img, _shorter_side_size(img.height, img.width, scale[0]), dc.interpolation)
        else:
            img = _resize(img, _keep_ratio_size(img.height, img.width, scale, longest=0.0), dc.interpolation)
    else:
        raise ValueError(f"unsupported crop_mode {dc.crop_mode!r}; expected 'center', 'squash' or 'border'")
    return normalise(_center_crop(np.asarray(img), size, fill), dc)


def _check_pixels(a: np.ndarray, what: str) -> None:
    if a.dtype != np.uint8:
        raise TypeError(
            f"{what} has dtype {a.dtype}; preprocess takes uint8 pixels 0..255. Already normalised input goes"
            " straight to the model; [0, 1] floats convert with (x * 255).round().astype(np.uint8)"
        )
    if a.ndim != 3 or a.shape[-1] != 3:
        hint = " (channels first? use np.moveaxis(x, -3, -1))" if a.ndim == 3 and a.shape[0] == 3 else ""
        raise ValueError(f"{what} has shape {a.shape}; expected an RGB image (H, W, 3){hint}")


def _as_images(images) -> list[Image.Image]:
    if isinstance(images, Image.Image):
        return [images.convert("RGB")]
    if isinstance(images, (list, tuple)):
        out = []
        for i, im in enumerate(images):
            if isinstance(im, Image.Image):
                out.append(im.convert("RGB"))
            else:
                a = np.asarray(im)
                _check_pixels(a, f"image {i}")
                out.append(Image.fromarray(a))
        return out
    a = np.asarray(images)
    if a.ndim == 4:
        if a.shape[-1] != 3 and a.shape[1] == 3:
            raise ValueError(
                f"batch has shape {a.shape}; expected (B, H, W, 3) (channels first? use np.moveaxis(x, 1, -1))"
            )
        for i in range(a.shape[0]):
            _check_pixels(a[i], f"image {i}")
        return [Image.fromarray(im) for im in a]
    _check_pixels(a, "image")
    return [Image.fromarray(a)]


def preprocess(model_or_config: VisionTransformer | DataConfig, images) -> np.ndarray:
    """timm eval preprocessing of uint8 images for a model.

    Args:
      model_or_config: a libra-jax image model (its `data_config` is used) or a `DataConfig`.
      images: a uint8 RGB image (H, W, 3), a batch (B, H, W, 3), a PIL image, or a list of
        PIL images / (H, W, 3) arrays (sizes may differ).
    Returns:
      float32 numpy batch (B, h, w, 3) with (h, w) = data_config.input_size, normalised.
    """
    dc = model_or_config if isinstance(model_or_config, DataConfig) else model_or_config.data_config
    pictures = _as_images(images)
    if not pictures:
        raise ValueError("no images given")
    for i, img in enumerate(pictures):
        if img.width == 0 or img.height == 0:
            raise ValueError(f"image {i} is empty ({img.height}×{img.width} pixels); pass images with pixels in them")
    batch = [_transform(img, dc) for img in pictures]
    return np.stack(batch)
