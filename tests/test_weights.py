"""`libra_jax.weights` without torch: embedded models by name, libra-jax files loaded as stored, the atomic writer."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import safetensors
import safetensors.numpy

import libra_jax
from libra_jax.models import DataConfig, VisionTransformer, ViTConfig
from libra_jax.weights import embedded
from libra_jax.weights.atomic import write_atomic
from libra_jax.weights.keymap import CheckpointMismatchError, flatten, unflatten


@pytest.mark.parametrize("name", embedded.names())
def test_embedded_names_load_the_shipped_file(name):
    model, params = libra_jax.load(name)
    from_file, file_params = libra_jax.load(embedded.path(name))  # the file the command line reads
    assert model.config == from_file.config and model.data_config == from_file.data_config
    # The params are the file's tensors, read here by safetensors itself.
    stored = safetensors.numpy.load_file(str(embedded.path(name)))
    got = flatten(params)
    assert sorted(got) == sorted(stored) == sorted(flatten(file_params))
    for key, value in stored.items():
        np.testing.assert_array_equal(np.asarray(got[key]), value, err_msg=key)


def test_unknown_embedded_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="synthetic_vit"):
        embedded.path("synthetic_nope")


def tiny_model() -> VisionTransformer:
    config = ViTConfig(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_classes=3)
    return VisionTransformer(config, DataConfig(input_size=(16, 16)))


def test_a_libra_file_loads_directly_and_reports_its_own_keys(tmp_path):
    model = tiny_model()
    params = model.init(jax.random.key(0), np.zeros((16, 16, 3), np.float32))["params"]
    path = libra_jax.save_checkpoint(tmp_path / "tiny.safetensors", model, params)
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.safetensors"]  # no temporary file left
    loaded, loaded_params = libra_jax.load(path)
    assert loaded.config == model.config
    jax.tree.map(np.testing.assert_array_equal, loaded_params, params)

    # Loaded as stored, not via timm keys: a renamed tensor is reported under the file's own key.
    with safetensors.safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata()
    tensors = safetensors.numpy.load_file(str(path))
    tensors["blocks_0/attn/renamed"] = tensors.pop("blocks_0/attn/proj/kernel")
    edited = tmp_path / "edited.safetensors"
    safetensors.numpy.save_file(tensors, str(edited), metadata=metadata)
    with pytest.raises(CheckpointMismatchError) as err:
        libra_jax.load(edited)
    assert "- blocks_0/attn/proj/kernel" in str(err.value) and "+ blocks_0/attn/renamed" in str(err.value)


def test_flatten_keys_are_slash_paths():
    tree = {"a": {"b": {"c": 1}, "d": 2}}
    assert flatten(tree) == {"a/b/c": 1, "a/d": 2}
    assert unflatten(flatten(tree)) == tree


def test_write_atomic_replaces_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "out.bin"
    write_atomic(target, b"one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    with pytest.raises(TypeError):
        write_atomic(target, "not bytes")
    assert target.read_bytes() == b"two" and [p.name for p in target.parent.iterdir()] == ["out.bin"]
