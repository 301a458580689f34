"""Class names for a model's outputs: the checkpoint's own, else ImageNet-1k's for a 1000-class head.

A checkpoint names its classes in its `config.json`: Hugging Face transformers as `id2label`
({"0": "tench, Tinca tinca", ...}); timm as `label_names` (at the top level or in `pretrained_cfg`),
often WordNet synset ids ("n01440764") with their text in `label_descriptions`. Synset ids without
descriptions are looked up in the ImageNet-1k table shipped in `libra_jax/assets/imagenet1k_labels.tsv`
(generated from timm's ImageNet info files by `convert/gen_imagenet_labels.py`).
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import re
from collections.abc import Mapping

IMAGENET1K_FILE = pathlib.Path(__file__).parent / "assets" / "imagenet1k_labels.tsv"
_SYNSET = re.compile(r"n\d{8}")


@functools.cache
def _imagenet1k() -> tuple[tuple[str, str], ...]:
    """((synset, lemmas), ...) of the 1000 ImageNet-1k classes in class-index order."""
    return tuple(tuple(line.split("\t", 1)) for line in IMAGENET1K_FILE.read_text(encoding="utf-8").splitlines())


def imagenet1k_names() -> list[str]:
    """The 1000 ImageNet-1k class names ('tench, Tinca tinca', ...) in class-index order."""
    return [lemmas for _, lemmas in _imagenet1k()]


def _read_config(source: str | os.PathLike) -> dict:
    path = pathlib.Path(source)
    if path.is_dir():
        path = path / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"no config.json at {path}: pass a model folder or its config.json") from None
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} holds no JSON object")
    return config


def _as_list(names, where: str) -> list[str] | None:
    """A list, or an {index: name} dict with the indices 0..n-1, as a list; None for no names."""
    if names is None:
        return None
    if isinstance(names, list):
        return [str(n) for n in names]
    if isinstance(names, Mapping):
        try:
            indexed = {int(k): str(v) for k, v in names.items()}
        except ValueError:
            raise ValueError(f"{where} must map class indices to names; got keys like {next(iter(names))!r}") from None
        if sorted(indexed) != list(range(len(indexed))):
            raise ValueError(f"{where} must name every class index 0..{len(indexed) - 1} exactly once")
        return [indexed[i] for i in range(len(indexed))]
    raise ValueError(f"{where} must be a list or an {{index: name}} mapping; got {type(names).__name__}")


def _from_config(config: Mapping) -> list[str] | None:
    pretrained = config.get("pretrained_cfg") if isinstance(config.get("pretrained_cfg"), Mapping) else {}
    if "id2label" in config:
        return _as_list(config["id2label"], "id2label")
    names = _as_list(config.get("label_names", pretrained.get("label_names")), "label_names")
    if names is None:
        return None
    described = config.get("label_descriptions", pretrained.get("label_descriptions")) or {}
    known = dict(_imagenet1k()) | (dict(described) if isinstance(described, Mapping) else {})
    return [known.get(n, n) if _SYNSET.fullmatch(n) else n for n in names]


def class_names(
    config: Mapping | str | os.PathLike | None = None, num_classes: int | None = None, *, short: bool = False
) -> list[str] | None:
    """Names of a model's classes, index by index.

    Args:
      config: the checkpoint's `config.json` as a dict, its path, or the folder holding it; None: none.
      num_classes: the model's number of classes (`model.config.num_classes`); with no names in the
        config, 1000 gives the ImageNet-1k names.
      short: keep only the first of several comma-separated names ('tench' for 'tench, Tinca tinca').
    Returns:
      A list of `num_classes` names, or None when there are none to give.
    Raises:
      ValueError when the config's names do not fit (`num_classes` differs, indices missing).
    """
    if isinstance(config, (str, os.PathLike)):
        config = _read_config(config)
    names = _from_config(config) if config is not None else None
    if names is None and num_classes == 1000:
        names = imagenet1k_names()
    if names is None:
        return None
    if num_classes is not None and len(names) != num_classes:
        raise ValueError(
            f"the config names {len(names)} classes but the model has {num_classes}"
            " (a re-trained head: pass the names of its classes yourself)"
        )
    return [n.split(",")[0].strip() for n in names] if short else names
