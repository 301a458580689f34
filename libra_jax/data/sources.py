"""Datasets named by a spec string, for `libra-jax run`: image folders, list files, ImageNet-style sets, the benchmark.

    folder:PATH       every image under PATH (recursively, sorted by path), no labels
    list:FILE         one image per line, 'PATH' or 'PATH LABEL' (PATH relative to FILE's folder; '#' comments)
    imagenet:PATH     class folders <PATH>/<class>/<image>, labels in sorted folder order
    imagenet-s:PATH, imagenet-seg:PATH   ImageNet-S / ImageNet-Segmentation (see `libra_jax.data.imagenet`)
    benchmark[:SPLIT] the synthetic benchmark split (default 'test'), at the model's input size

A bare directory means folder:, a bare file list:. Every dataset is an `EvalDataset`: images come out
resized and cropped for the model (uint8), and an image that cannot be decoded raises `BadFileError`.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

from libra_jax.data import imagenet, synthetic
from libra_jax.data.imagenet import IMG_EXTENSIONS, EvalDataset, Item, eval_geometry
from libra_jax.models.config import DataConfig


class ImageListDataset(EvalDataset):
    """Images given by path, with optional integer labels.

    Args:
      paths: image files (a path that does not exist or cannot be decoded is skipped when read).
      data_config: the model's preprocessing (resize + crop; see `eval_geometry`).
      labels: one label per path, or None.
      root: the folder run results name the files relative to (None: as given).
    """

    def __init__(
        self,
        paths: Sequence[str],
        data_config: DataConfig,
        labels: Sequence[int] | None = None,
        root: str | os.PathLike | None = None,
    ):
        super().__init__(data_config)
        self.root = None if root is None else pathlib.Path(root)
        if not paths:
            raise ValueError("no images given")
        if labels is not None and len(labels) != len(paths):
            raise ValueError(f"{len(labels)} labels for {len(paths)} images")
        self.paths, self.labels = list(paths), None if labels is None else [int(v) for v in labels]

    @classmethod
    def from_folder(cls, root: str | os.PathLike, data_config: DataConfig) -> ImageListDataset:
        """Every file with an image extension under `root`, recursively, in sorted path order."""
        root = pathlib.Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
        paths = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())
        if not paths:
            raise ValueError(f"no images ({', '.join(IMG_EXTENSIONS)}) under {root}")
        return cls(paths, data_config, root=root)

    @classmethod
    def from_list(cls, list_file: str | os.PathLike, data_config: DataConfig) -> ImageListDataset:
        """A text file, one 'PATH' or 'PATH LABEL' per line (all lines alike); blank lines and '#' lines ignored."""
        list_file = pathlib.Path(list_file)
        if not list_file.is_file():
            raise FileNotFoundError(f"list file {str(list_file)!r} does not exist")
        rows = []
        for number, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.rsplit(maxsplit=1)
            labelled = len(parts) == 2 and parts[1].lstrip("-").isdigit()
            rows.append((number, parts[0] if labelled else line, int(parts[1]) if labelled else None))
        if not rows:
            raise ValueError(f"list file {list_file} names no images")
        if len({label is None for _, _, label in rows}) > 1:
            number = next(n for n, _, label in rows if (label is None) != (rows[0][2] is None))
            raise ValueError(f"line {number} of {list_file}: either every line has a label or none does")
        paths = [str(list_file.parent / path) for _, path, _ in rows]
        labels = None if rows[0][2] is None else [label for _, _, label in rows]
        return cls(paths, data_config, labels, root=list_file.parent)

    def __len__(self) -> int:
        return len(self.paths)

    def path_of(self, i: int) -> str:
        return self.paths[i]

    def _load(self, i: int) -> Item:
        image = eval_geometry(imagenet._read_rgb(self.paths[i]), self.data_config)
        label = None if self.labels is None else self.labels[i]
        return {"image": image, "label": label, "mask": None, "path": self.paths[i]}


class BenchmarkDataset(EvalDataset):
    """A split of the synthetic benchmark (images at the benchmark's size, which must be the model's).

    Args:
      config: the benchmark generator settings.
      split: 'train', 'val', 'test' (single object) or 'pairs' (label and mask of the first object).
      size: number of examples (the split is unbounded).
    """

    def __init__(
        self, config: synthetic.BenchmarkConfig, data_config: DataConfig, split: str = "test", size: int = 1000
    ):
        super().__init__(data_config)
        if split not in synthetic.SPLITS:
            raise ValueError(f"unknown benchmark split {split!r}; expected one of {sorted(synthetic.SPLITS)}")
        if (config.image_size, config.image_size) != tuple(data_config.input_size):
            raise ValueError(
                f"the benchmark makes {config.image_size}px images; the model takes {tuple(data_config.input_size)}"
            )
        self.config, self.split, self.size = config, split, size

    def __len__(self) -> int:
        return self.size

    def path_of(self, i: int) -> str:
        return f"benchmark:{self.split}#{i}"

    def _load(self, i: int) -> Item:
        data = synthetic.make_split(self.config, self.split, 1, i)
        label, mask = data["labels"][0], data["masks"][0]
        if self.split == "pairs":
            label, mask = label[0], mask[0]
        return {"image": data["images"][0], "label": int(label), "mask": mask, "path": self.path_of(i)}


def open_source(
    spec: str,
    data_config: DataConfig,
    benchmark: synthetic.BenchmarkConfig | None = None,
    size: int = 1000,
    **kwargs,
) -> EvalDataset:
    """The dataset named by `spec` (see the module docstring).

    benchmark: generator settings for 'benchmark' (default: 8 classes at the model's input size);
    size: examples of a benchmark split; kwargs: for imagenet-s (class_map=...).
    """
    scheme, sep, rest = spec.partition(":")
    if scheme == "benchmark":
        config = benchmark or synthetic.BenchmarkConfig(image_size=data_config.input_size[0])
        return BenchmarkDataset(config, data_config, rest or "test", size)
    if sep and scheme in imagenet.SCHEMES:
        return imagenet.open_dataset(spec, data_config, **kwargs)
    if sep and scheme == "folder":
        return ImageListDataset.from_folder(rest, data_config)
    if sep and scheme == "list":
        return ImageListDataset.from_list(rest, data_config)
    if os.path.isdir(spec):
        return ImageListDataset.from_folder(spec, data_config)
    if os.path.isfile(spec):
        return ImageListDataset.from_list(spec, data_config)
    raise ValueError(
        f"unknown dataset {spec!r}: expected folder:PATH, list:FILE, imagenet:PATH, imagenet-s:PATH,"
        " imagenet-seg:PATH, benchmark[:SPLIT], or an existing folder / list file"
    )
