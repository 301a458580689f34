"""Class names: the shipped ImageNet-1k table (equal to timm's), a checkpoint's id2label / label_names."""

from __future__ import annotations

import json

import pytest

from libra_jax.labels import class_names, imagenet1k_names


def test_shipped_table_equals_timm():
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    assert imagenet1k_names() == info.label_descriptions()
    assert class_names(num_classes=1000, short=True)[688] == "oscilloscope"


def test_hf_id2label(tmp_path):
    from transformers import ViTConfig

    config = ViTConfig(id2label={0: "cat, house cat", 1: "dog"}).to_dict()  # transformers writes string keys
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert class_names(tmp_path, 2) == ["cat, house cat", "dog"]
    assert class_names(tmp_path / "config.json", 2, short=True) == ["cat", "dog"]


def test_timm_label_names_with_and_without_descriptions():
    synsets = ["n01443537", "n01440764"]
    config = {"architecture": "vit", "num_classes": 2, "pretrained_cfg": {"label_names": synsets}}
    assert class_names(config, 2) == ["goldfish, Carassius auratus", "tench, Tinca tinca"]  # from the shipped table
    described = {**config, "label_descriptions": {"n01443537": "my goldfish"}}
    assert class_names(described, 2)[0] == "my goldfish"
    assert class_names({"label_names": {"1": "b", "0": "a"}}) == ["a", "b"]


def test_no_names():
    assert class_names(None, 10) is None
    assert class_names({"architecture": "vit"}, 8) is None
    assert len(class_names({"architecture": "vit"}, 1000)) == 1000


def test_bad_configs(tmp_path):
    with pytest.raises(ValueError, match="names 2 classes but the model has 5"):
        class_names({"label_names": ["a", "b"]}, 5)
    with pytest.raises(ValueError, match="every class index 0..1"):
        class_names({"id2label": {"0": "a", "2": "b"}})
    with pytest.raises(FileNotFoundError, match="no config.json"):
        class_names(tmp_path)
