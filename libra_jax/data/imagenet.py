"""ImageNet evaluation sets, geometrically transformed to the model input: class folders, ImageNet-S, ImageNet-Seg.

Every dataset yields uint8 RGB images already resized and cropped for a `DataConfig` (the geometry of
`libra_jax.preprocess`, without normalising: apply `normalise`), an int label (or None) and a boolean
ground-truth mask transformed with nearest-neighbour sampling through the same resize and crop, so mask
pixels stay aligned with image pixels.

  ImageFolderDataset  '<root>/<class>/<image>' (e.g. ImageNet val sorted into wnid folders), no masks.
  ImageNetSDataset    ImageNet-S919 validation segmentation, LibraGrad protocol.
  ImageNetSegDataset  `gtsegs_ijcv.mat` of ImageNet-Segmentation, Chefer protocol.

`open_dataset('imagenet:PATH' | 'imagenet-s:PATH' | 'imagenet-seg:PATH', data_config)` picks one by spec.
A file that cannot be decoded (or a mask whose size differs from its image) raises `BadFileError` on
indexing; `iter_batches` skips it and records it in `dataset.skipped`.
"""

from __future__ import annotations

import abc
import json
import math
import os
import pathlib
from collections.abc import Iterator, Mapping

import numpy as np
from PIL import Image

from libra_jax.models.config import DataConfig
from libra_jax.preprocess import PIL_FILTERS, _center_crop, _keep_ratio_size, _resize, _shorter_side_size

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""torchvision ImageFolder's image extensions (matched case-insensitively)."""

OTHER, IGNORED = 0, 1000
"""ImageNet-S pixel ids that are no class: 'other' and 'ignored' (both negatives in every mask)."""

Item = dict  # image uint8 (H, W, 3), label int | None, mask bool (H, W) | None, path str


class BadFileError(ValueError):
    """One unusable example: an undecodable image / mask, or a mask whose size differs from its image."""


def eval_geometry(img: Image.Image, dc: DataConfig, nearest: bool = False) -> np.ndarray:
    """timm's eval resize + center crop for `dc` (as `libra_jax.preprocess`, without normalising).

    Args:
      img: an RGB image or, with nearest=True, a single-channel label image (PIL mode 'L' or 'I').
      nearest: PIL NEAREST instead of dc.interpolation, for masks (torchvision maps NEAREST and
        NEAREST_EXACT to it for PIL images). Label images are padded ('border' mode) with 0, RGB images
        with the mean colour as in preprocess.
    Returns:
      (h, w, 3) for RGB or (h, w) for a label image, dtype of the image, (h, w) = dc.input_size.
    """
    interpolation = "nearest" if nearest else dc.interpolation
    if interpolation not in PIL_FILTERS:
        raise ValueError(f"unsupported interpolation {interpolation!r}; expected one of {sorted(PIL_FILTERS)}")
    size, (h, w) = dc.input_size, (img.height, img.width)
    scale = (math.floor(size[0] / dc.crop_pct), math.floor(size[1] / dc.crop_pct))
    fill = (0, 0, 0)
    if dc.crop_mode == "squash":
        target = scale
    elif dc.crop_mode == "border":
        target = _keep_ratio_size(h, w, scale, longest=1.0)
        fill = tuple(round(255 * m) for m in dc.mean)
    elif dc.crop_mode == "center":
        square = scale[0] == scale[1]
        target = _shorter_side_size(h, w, scale[0]) if square else _keep_ratio_size(h, w, scale, longest=0.0)
    else:
        raise ValueError(f"unsupported crop_mode {dc.crop_mode!r}; expected 'center', 'squash' or 'border'")
    x = np.asarray(_resize(img, target, interpolation))
    if x.ndim == 2:
        return np.array(_center_crop(x[..., None], size, (0,))[..., 0])
    return np.array(_center_crop(x, size, fill))


def _read_rgb(path: str | os.PathLike) -> Image.Image:
    """Decoded RGB image; any failure to read or decode becomes a BadFileError naming the file."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadFileError(f"cannot decode {path}: {type(e).__name__}: {e}") from e


def _existing(path: str | os.PathLike, what: str) -> pathlib.Path:
    p = pathlib.Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{what} {str(p)!r} does not exist")
    return p


def _stack(items: list[Item]) -> dict:
    """Items → {images (B, H, W, 3) uint8, labels (B,) int64 | None, masks (B, H, W) bool | None, paths}."""
    first = items[0]
    return {
        "images": np.stack([it["image"] for it in items]),
        "labels": None if first["label"] is None else np.array([it["label"] for it in items], np.int64),
        "masks": None if first["mask"] is None else np.stack([it["mask"] for it in items]),
        "paths": [it["path"] for it in items],
    }


class EvalDataset(abc.ABC):
    """Base of the datasets below: indexing, batching and the record of skipped files."""

    root: pathlib.Path | None = None
    """The folder `source_of` names files relative to (None: a source is the example's `path_of`)."""

    def __init__(self, data_config: DataConfig):
        self.data_config = data_config
        self.skipped: list[tuple[str, str]] = []  # (path, reason), each bad file once

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def path_of(self, i: int) -> str:
        """Where example i comes from (without decoding it)."""

    def source_of(self, i: int) -> str:
        """Example i's name in run results: its file relative to `root` ('n01440764/x.JPEG'), else `path_of(i)`."""
        path = self.path_of(i)
        return path if self.root is None else pathlib.Path(os.path.relpath(path, self.root)).as_posix()

    @abc.abstractmethod
    def _load(self, i: int) -> Item:
        """Example i (0 ≤ i < len); raises BadFileError when its files are unusable."""

    def __getitem__(self, i: int) -> Item:
        """dict(image=uint8 (H, W, 3), label=int | None, mask=bool (H, W) | None, path=str)."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} examples")
        return self._load(i % n)

    def _skip(self, path: str, reason: str) -> None:
        if (path, reason) not in self.skipped:
            self.skipped.append((path, reason))

    def iter_batches(self, batch_size: int, limit: int | None = None) -> Iterator[dict]:
        """Consecutive batches in dataset order, skipping (and recording) unusable examples.

        Args:
          batch_size: examples per batch (the last batch may be smaller).
          limit: stop after this many usable examples.
        Yields:
          dict(images=uint8 (B, H, W, 3), labels=int64 (B,) or None, masks=bool (B, H, W) or None,
          paths=list of B str).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        items, served = [], 0
        for i in range(len(self)):
            if limit is not None and served + len(items) >= limit:
                break
            try:
                items.append(self._load(i))
            except BadFileError as e:
                self._skip(self.path_of(i), str(e))
                continue
            if len(items) == batch_size:
                yield _stack(items)
                served, items = served + len(items), []
        if items:
            yield _stack(items)


class ImageFolderDataset(EvalDataset):
    """Images in class subfolders, `<root>/<class>/**/<image>` (torchvision ImageFolder), without masks.

    Classes are indexed in sorted folder order unless `class_to_idx` is given; with ImageNet's wnid
    folders, sorted order is the standard ImageNet-1k index (n01440764 → 0). Files are found recursively
    under each class folder, sorted, with the extensions in IMG_EXTENSIONS.

    Args:
      root: the folder of class folders.
      data_config: the model's preprocessing (resize + crop; see `eval_geometry`).
      class_to_idx: folder name → label; every class folder must be in it (keys without a folder are fine).
    """

    def __init__(self, root: str | os.PathLike, data_config: DataConfig, class_to_idx: Mapping[str, int] | None = None):
        super().__init__(data_config)
        self.root = _existing(root, "image folder")
        folders = sorted(e.name for e in os.scandir(self.root) if e.is_dir())
        if not folders:
            raise ValueError(
                f"{self.root} has no class subfolders; expected the ImageFolder layout <root>/<class>/<image>"
            )
        if class_to_idx is None:
            class_to_idx = {c: i for i, c in enumerate(folders)}
        unknown = [c for c in folders if c not in class_to_idx]
        if unknown:
            raise ValueError(f"class folders {unknown[:5]} of {self.root} are not in class_to_idx")
        self.class_to_idx = {c: int(class_to_idx[c]) for c in folders}
        self.samples: list[tuple[str, int]] = [
            (os.path.join(d, f), self.class_to_idx[c])
            for c in folders
            for d, _, files in sorted(os.walk(self.root / c, followlinks=True))
            for f in sorted(files)
            if f.lower().endswith(IMG_EXTENSIONS)
        ]
        if not self.samples:
            raise ValueError(f"no images ({', '.join(IMG_EXTENSIONS)}) in the class folders of {self.root}")

    def __len__(self) -> int:
        return len(self.samples)

    def path_of(self, i: int) -> str:
        return self.samples[i][0]

    def _load(self, i: int) -> Item:
        path, label = self.samples[i]
        return {"image": eval_geometry(_read_rgb(path), self.data_config), "label": label, "mask": None, "path": path}


def _read_class_map(class_map: Mapping[int, int] | str | os.PathLike, wnid_to_index: Mapping[str, int] | None):
    """ImageNet-S id (1..919) → ImageNet-1k index, from a dict, a .json object or ImageNet-S's category .txt."""
    if isinstance(class_map, Mapping):
        return {int(k): int(v) for k, v in class_map.items()}
    path = _existing(class_map, "class_map file")
    if path.suffix == ".json":
        return {int(k): int(v) for k, v in json.loads(path.read_text()).items()}
    if path.suffix != ".txt":
        raise ValueError(f"class_map {path} must be a .json {{id: index}} or a .txt of wnids, one per line")
    if wnid_to_index is None:
        raise ValueError(f"class_map {path} lists wnids; pass wnid_to_index to turn them into ImageNet-1k indices")
    wnids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    missing = [w for w in wnids if w not in wnid_to_index]
    if missing:
        raise ValueError(f"wnids {missing[:5]} of {path} ({len(missing)} in all) are not in wnid_to_index")
    return {k: int(wnid_to_index[w]) for k, w in enumerate(wnids, start=1)}


def _read_ids(path: str | os.PathLike) -> np.ndarray:
    """ImageNet-S class ids (H, W) int32 of a segmentation PNG: R + 256·G."""
    rgb = np.asarray(_read_rgb(path), np.int32)
    return rgb[..., 0] + 256 * rgb[..., 1]


def _largest_class(ids: np.ndarray, min_fraction: float) -> int | None:
    """The class (not OTHER / IGNORED) with the most pixels if it covers ≥ min_fraction of them, else None.

    Ties go to the smallest id.
    """
    values, counts = np.unique(ids, return_counts=True)
    keep = (values != OTHER) & (values != IGNORED)
    values, counts = values[keep], counts[keep]
    if not len(values) or counts.max() < min_fraction * ids.size:
        return None
    return int(values[np.argmax(counts)])


class ImageNetSDataset(EvalDataset):
    """ImageNet-S919 validation segmentation with the LibraGrad protocol.

    Layout: masks `<root>/validation-segmentation/<wnid>/<name>.png`, images `<root>/validation/<wnid>/<name>.JPEG`.
    A mask pixel's ImageNet-S class id is R + 256·G: 1..919 are classes, 0 'other' and 1000 'ignored'.

    Protocol, as in LibraGrad's `imagenet_s_all_get` / `imagenet_s_load`:
      1. all mask PNGs (recursively) sorted by file name without extension, then permuted with
         `np.random.default_rng(seed).permutation` (seed 42);
      2. in that order, each mask is transformed like the image (`eval_geometry`, nearest); the image
         is kept if its largest class other than 0 / 1000 covers ≥ min_fraction of the transformed
         (cropped) pixels: that class is the label and its pixels the mask, so 0 and 1000 pixels are
         negatives. Ties go to the smallest ImageNet-S id. An image file that does not exist is skipped;
      3. scanning stops after `limit` kept images (the paper uses the first 5000).
    Images dropped by the area rule are counted in `num_filtered`; missing images and unreadable masks
    are listed in `skipped`.

    Class ids map to ImageNet-1k labels through, in this order of preference:
      - class_map: a dict {ImageNet-S id: ImageNet-1k index}; a .json file holding that object; or
        ImageNet-S's `data/categories/ImageNetS_categories_im919.txt` (line k, 1-based, is the wnid of
        id k), which also needs wnid_to_index.
      - wnid_to_index alone: the label is the index of the mask's wnid folder (the image's ImageNet
        class). The mask is still the largest segment, so this equals the protocol only where that
        segment is of the folder's class; pass class_map for the exact protocol.
    wnid_to_index maps wnids to ImageNet-1k indices, e.g. `ImageFolderDataset(imagenet_val).class_to_idx`
    with all 1000 wnid folders (not ImageNet-S's own 919 `validation` folders, whose sorted order gives other indices).

    Args:
      root: the ImageNetS919 folder.
      data_config: the model's preprocessing (resize + crop).
      class_map, wnid_to_index: see above; one of them is required.
      min_fraction: least area of the largest class, as a fraction of the transformed mask.
      seed: of the permutation.
      limit: most images to keep (None: all).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        data_config: DataConfig,
        min_fraction: float = 0.05,
        seed: int = 42,
        limit: int | None = None,
        *,
        class_map: Mapping[int, int] | str | os.PathLike | None = None,
        wnid_to_index: Mapping[str, int] | None = None,
    ):
        super().__init__(data_config)
        self.root = _existing(root, "ImageNet-S root")
        seg_dir, img_dir = self.root / "validation-segmentation", self.root / "validation"
        if not (seg_dir.is_dir() and img_dir.is_dir()):
            raise ValueError(
                f"{self.root} is not an ImageNet-S919 folder: expected masks in validation-segmentation/<wnid>/"
                "<name>.png and images in validation/<wnid>/<name>.JPEG"
            )
        if class_map is None and wnid_to_index is None:
            raise ValueError(
                "ImageNet-S needs class_map (ImageNet-S id → ImageNet-1k index, or ImageNet-S's"
                " ImageNetS_categories_im919.txt with wnid_to_index) or wnid_to_index (label = the wnid folder's index)"
            )
        id_to_index = None if class_map is None else _read_class_map(class_map, wnid_to_index)
        masks = sorted(seg_dir.rglob("*.png"), key=lambda p: (p.stem, str(p)))
        if not masks:
            raise ValueError(f"no mask PNGs under {seg_dir}; expected validation-segmentation/<wnid>/<name>.png")
        self.num_filtered = 0
        self.samples: list[tuple[str, str, int, int]] = []  # image path, mask path, ImageNet-S id, label
        for j in np.random.default_rng(seed).permutation(len(masks)):
            if limit is not None and len(self.samples) >= limit:
                break
            mask_path = masks[j]
            image_path = img_dir / mask_path.relative_to(seg_dir).with_suffix(".JPEG")
            if not image_path.exists():
                self._skip(str(image_path), f"image missing (mask {mask_path})")
                continue
            try:
                cls = _largest_class(self._transformed(_read_ids(mask_path)), min_fraction)
            except BadFileError as e:
                self._skip(str(mask_path), str(e))
                continue
            if cls is None:
                self.num_filtered += 1
                continue
            if id_to_index is not None:
                if cls not in id_to_index:
                    raise ValueError(f"class id {cls} of {mask_path} is not in class_map")
                label = id_to_index[cls]
            elif mask_path.parent.name in wnid_to_index:
                label = int(wnid_to_index[mask_path.parent.name])
            else:
                raise ValueError(f"wnid folder {mask_path.parent.name!r} of {mask_path} is not in wnid_to_index")
            self.samples.append((str(image_path), str(mask_path), cls, label))

    def _transformed(self, ids: np.ndarray) -> np.ndarray:
        """Class ids (H, W) → (h, w) after the model's resize + crop, nearest (LibraGrad: NEAREST_EXACT)."""
        return eval_geometry(Image.fromarray(ids), self.data_config, nearest=True)

    def __len__(self) -> int:
        return len(self.samples)

    def path_of(self, i: int) -> str:
        return self.samples[i][0]

    def _load(self, i: int) -> Item:
        image_path, mask_path, cls, label = self.samples[i]
        img, ids = _read_rgb(image_path), _read_ids(mask_path)
        if ids.shape != (img.height, img.width):
            raise BadFileError(
                f"mask {mask_path} is {ids.shape[0]}x{ids.shape[1]} (HxW)"
                f" but image {image_path} is {img.height}x{img.width}"
            )
        mask = self._transformed(ids) == cls
        return {"image": eval_geometry(img, self.data_config), "label": label, "mask": mask, "path": image_path}


def _import_h5py():
    try:
        import h5py
    except ImportError as e:
        raise ImportError(
            "ImageNetSegDataset reads gtsegs_ijcv.mat (MATLAB v7.3 = HDF5) with h5py, which is not installed:"
            " pip install h5py (or pip install 'libra-jax[test]')"
        ) from e
    return h5py


class ImageNetSegDataset(EvalDataset):
    """ImageNet-Segmentation (Guillaumin et al. 2014; 4,276 images): `gtsegs_ijcv.mat`, Chefer's protocol.

    The MATLAB v7.3 file is HDF5 (read with h5py): `/value/img` and `/value/gt` are (N, 1) object
    references; image i is `f[f['/value/img'][i, 0]]`, stored (3, W, H) uint8, and its mask is
    `f[f[f['/value/gt'][i, 0]][0, 0]]`, stored (W, H) with values {0, 1}; both are transposed back to
    (H, W[, 3]) (MATLAB is column-major). There are no class labels: `label` is None and the class
    explained is the model's top-1 prediction (Chefer's protocol).

    Args:
      mat_path: the gtsegs_ijcv.mat file.
      data_config: the model's input size (and, with protocol='eval', its resize + crop).
      protocol: 'chefer' (as in `imagenet_seg_eval.py`): both sides straight to data_config.input_size,
        image bilinear, mask nearest, no crop; 'eval': the model's eval resize + center crop (`eval_geometry`).
    """

    def __init__(self, mat_path: str | os.PathLike, data_config: DataConfig, protocol: str = "chefer"):
        super().__init__(data_config)
        h5py = _import_h5py()
        if protocol not in ("chefer", "eval"):
            raise ValueError(f"unknown protocol {protocol!r}; expected 'chefer' or 'eval'")
        self.protocol = protocol
        self.path = _existing(mat_path, "ImageNet-Segmentation file")
        expected = "a MATLAB v7.3 gtsegs_ijcv.mat with (N, 1) object-reference datasets /value/img and /value/gt"
        try:
            f = h5py.File(self.path, "r")
        except OSError as e:
            raise ValueError(f"{self.path} is not an HDF5 file; expected {expected}") from e
        with f:
            img, gt = f.get("value/img"), f.get("value/gt")
            ok = all(isinstance(d, h5py.Dataset) and d.ndim == 2 and h5py.check_dtype(ref=d.dtype) for d in (img, gt))
            if not ok or img.shape != gt.shape:
                raise ValueError(f"{self.path} does not have the expected datasets; expected {expected}")
            self._n = img.shape[0]

    def __len__(self) -> int:
        return self._n

    def path_of(self, i: int) -> str:
        return f"{self.path}#{i}"

    def _arrays(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Image (H, W[, 3]) and mask (H, W) of entry i, as stored (transposed back from MATLAB order)."""
        with _import_h5py().File(self.path, "r") as f:
            try:
                image = f[f["value/img"][i, 0]][()].T
                mask = f[f[f["value/gt"][i, 0]][0, 0]][()].T
            except (KeyError, ValueError, TypeError, OSError) as e:
                raise BadFileError(f"cannot read entry {i} of {self.path}: {type(e).__name__}: {e}") from e
        if mask.shape != image.shape[:2]:
            raise BadFileError(
                f"mask /value/gt[{i}] is {mask.shape} but image /value/img[{i}] is {image.shape[:2]} (HxW)"
                f" in {self.path}"
            )
        return image, mask

    def _load(self, i: int) -> Item:
        image, mask = self._arrays(i)
        try:
            img = Image.fromarray(image).convert("RGB")
        except (TypeError, ValueError) as e:
            raise BadFileError(f"cannot decode image {i} of {self.path} ({image.dtype} {image.shape}): {e}") from e
        target = Image.fromarray((mask != 0).astype(np.uint8))
        if self.protocol == "chefer":
            size = self.data_config.input_size
            img_t, mask_t = np.asarray(_resize(img, size, "bilinear")), np.asarray(_resize(target, size, "nearest"))
        else:
            img_t, mask_t = eval_geometry(img, self.data_config), eval_geometry(target, self.data_config, nearest=True)
        return {"image": np.array(img_t), "label": None, "mask": mask_t != 0, "path": self.path_of(i)}


SCHEMES = {"imagenet": ImageFolderDataset, "imagenet-s": ImageNetSDataset, "imagenet-seg": ImageNetSegDataset}


def open_dataset(spec: str, data_config: DataConfig, **kwargs) -> EvalDataset:
    """A dataset from 'imagenet:PATH', 'imagenet-s:PATH' or 'imagenet-seg:PATH'; kwargs go to its constructor."""
    scheme, sep, path = spec.partition(":")
    if not sep or scheme not in SCHEMES or not path:
        raise ValueError(f"unknown dataset spec {spec!r}; expected one of " + ", ".join(f"'{s}:PATH'" for s in SCHEMES))
    return SCHEMES[scheme](path, data_config, **kwargs)
