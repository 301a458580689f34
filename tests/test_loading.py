"""`libra_jax.load` against upstream timm: forward parity per family, Hub, converter, resampling, errors.

Models are random-init, reduced-size timm models whose biases, norm affines, LayerScale gammas,
position embeddings, prefix tokens and MAP latent are re-randomised, so no parameter is a trivial
0 / 1 and a mis-mapped tensor changes the logits.
"""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

from libra_jax.weights.formats import CheckpointFileError, read_libra_checkpoint, save_checkpoint
from libra_jax.weights.hub import HubError
from libra_jax.weights.keymap import CheckpointMismatchError
from libra_jax.weights.loading import load
from libra_jax.weights.registry import UnknownModelError

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
safetensors_torch = pytest.importorskip("safetensors.torch")

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(depth=2, embed_dim=64, num_heads=2, num_classes=7)
TOL = 1e-4

FAMILIES = {
    "vit": ("vit_tiny_patch16_224", dict(depth=2, num_classes=7, img_size=32)),
    "deit3": ("deit3_small_patch16_224", dict(SMALL, img_size=32)),
    "flexivit": ("flexivit_small", dict(SMALL, img_size=48)),
    "clip": ("vit_base_patch16_clip_224", dict(SMALL, img_size=32)),
    "clip_quickgelu": ("vit_base_patch32_clip_quickgelu_224", dict(SMALL, img_size=64)),
    "siglip_map": ("vit_base_patch16_siglip_224", dict(SMALL, img_size=32)),
    "siglip_gap": ("vit_base_patch16_siglip_gap_224", dict(SMALL, img_size=32)),
    "siglip_gelu_tanh": ("vit_so400m_patch16_siglip_256", dict(SMALL, img_size=32)),
    "reg_gap": ("vit_medium_patch16_reg4_gap_256", dict(SMALL, img_size=32)),
    "dinov2_reg": ("vit_small_patch14_reg4_dinov2", dict(SMALL, img_size=42)),
    "dinov2": ("vit_small_patch14_dinov2", dict(SMALL, img_size=28)),
    "dinov2_swiglu": ("vit_giant_patch14_dinov2", dict(SMALL, embed_dim=96, img_size=28)),  # even GLU width
    "deit_distilled": ("deit_tiny_distilled_patch16_224", dict(depth=2, num_classes=7, img_size=32)),
}


def timm_model(name: str, seed: int = 0, **kwargs) -> "torch.nn.Module":
    """A timm model with every vector / token parameter re-randomised (torch.Generator, seeded)."""
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for key, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            leaf = key.rsplit(".", 1)[-1]
            if leaf == "bias":
                p.copy_(0.1 * noise)
            elif leaf == "weight" and p.ndim == 1:  # norm γ
                p.copy_(1 + 0.2 * noise)
            elif leaf == "gamma":  # LayerScale
                p.copy_(0.5 * noise)
            elif leaf in ("pos_embed", "cls_token", "reg_token", "dist_token", "latent"):
                p.copy_(0.2 * noise)
            elif key.startswith("head"):
                p.copy_(0.2 * noise)
    return model


def images(model: "torch.nn.Module", batch: int = 2, seed: int = 123) -> np.ndarray:
    h, w = model.patch_embed.img_size
    return np.random.default_rng(seed).standard_normal((batch, 3, h, w)).astype(np.float32)


def timm_logits(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def jax_logits(model, params, x: np.ndarray) -> np.ndarray:
    with jax.default_matmul_precision("highest"):
        logits, _ = model.apply({"params": params}, x.transpose(0, 2, 3, 1))
    return np.asarray(logits)


def save_timm(model, path: Path) -> Path:
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        safetensors_torch.save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def vit_tiny(tmp_path_factory):
    """(timm model, safetensors path, kwargs) of the reduced ViT-Ti used by several tests."""
    name, kwargs = FAMILIES["vit"]
    model = timm_model(name, **kwargs)
    path = save_timm(model, tmp_path_factory.mktemp("vit") / "vit.safetensors")
    return model, path, kwargs


@pytest.mark.parametrize("family", list(FAMILIES))
def test_forward_parity_with_timm(family, tmp_path):
    name, kwargs = FAMILIES[family]
    ref_model = timm_model(name, **kwargs)
    x = images(ref_model)
    ref = timm_logits(ref_model, x)
    assert ref.shape == (2, 7) and np.abs(ref).max() > 0.1
    for suffix in (".safetensors", ".pth"):
        path = save_timm(ref_model, tmp_path / f"ckpt{suffix}")
        model, params = load(name, checkpoint=path, **kwargs)
        assert all(isinstance(v, jax.Array) and v.dtype == np.float32 for v in jax.tree.leaves(params))
        np.testing.assert_allclose(jax_logits(model, params, x), ref, atol=TOL, rtol=0, err_msg=f"{family} {suffix}")


def test_pth_wrappers_and_libra_round_trip(vit_tiny, tmp_path):
    ref_model, _, kwargs = vit_tiny
    x = images(ref_model)
    ref = timm_logits(ref_model, x)
    wrapped = tmp_path / "train_ckpt.pth"
    torch.save({"model": ref_model.state_dict(), "epoch": 3}, wrapped)
    model, params = load("vit_tiny_patch16_224", checkpoint=wrapped, **kwargs)
    np.testing.assert_allclose(jax_logits(model, params, x), ref, atol=TOL, rtol=0)

    out = save_checkpoint(tmp_path / "vit.safetensors", model, params, source="vit_tiny_patch16_224")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # temp file renamed away
    ck = read_libra_checkpoint(out)
    assert ck.config == model.config and ck.data_config == model.data_config and ck.source == "vit_tiny_patch16_224"
    assert "blocks_0/attn/qkv/kernel" in ck.params
    model2, params2 = load(out)
    assert model2.config == model.config and model2.data_config == model.data_config
    np.testing.assert_array_equal(jax_logits(model2, params2, x), jax_logits(model, params, x))


def make_hub_cache(root: Path, repo: str, files: dict) -> None:
    """A Hugging Face cache holding `files` (name → bytes) for model repo `repo` at refs/main."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    base = root / f"models--{repo.replace('/', '--')}"
    snapshot = base / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(commit)
    for filename, data in files.items():
        (snapshot / filename).write_bytes(data)


@pytest.fixture
def offline(monkeypatch):
    hf_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)


def test_hub_load_from_cache(offline, tmp_path):
    name = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    ref_model = timm_model("vit_tiny_patch16_224", depth=2, img_size=32, num_classes=7)
    mean, std = [0.48, 0.45, 0.4], [0.27, 0.26, 0.28]
    config = {
        "architecture": "vit_tiny_patch16_224",
        "num_classes": 7,
        "num_features": 192,
        "global_pool": "token",
        "pretrained_cfg": {
            "tag": "augreg_in21k_ft_in1k",
            "input_size": [3, 32, 32],
            "fixed_input_size": True,
            "interpolation": "bilinear",
            "crop_pct": 0.875,
            "crop_mode": "center",
            "mean": mean,
            "std": std,
            "num_classes": 7,
        },
        "model_args": {"depth": 2},
    }
    weights = save_timm(ref_model, tmp_path / "w.safetensors").read_bytes()
    cache = tmp_path / "hub"
    make_hub_cache(cache, f"timm/{name}", {"config.json": json.dumps(config).encode(), "model.safetensors": weights})
    x = images(ref_model)
    ref = timm_logits(ref_model, x)
    for ref_name in (name, f"hf-hub:timm/{name}", f"timm/{name}"):
        model, params = load(ref_name, cache_dir=cache)
        assert (model.config.depth, model.config.num_classes, model.config.img_size) == (2, 7, (32, 32))
        dc = model.data_config
        assert (dc.mean, dc.std, dc.crop_pct, dc.interpolation) == (tuple(mean), tuple(std), 0.875, "bilinear")
        np.testing.assert_allclose(jax_logits(model, params, x), ref, atol=TOL, rtol=0, err_msg=ref_name)

    # a repo with only pytorch_model.bin (older timm uploads) loads through torch
    bin_name = "deit3_small_patch16_224.fb_in1k"
    deit = timm_model("deit3_small_patch16_224", **SMALL, img_size=32)
    config_bin = dict(config, architecture="deit3_small_patch16_224", model_args=dict(SMALL))
    bin_bytes = save_timm(deit, tmp_path / "w.pth").read_bytes()
    files = {"config.json": json.dumps(config_bin).encode(), "pytorch_model.bin": bin_bytes}
    make_hub_cache(cache, f"timm/{bin_name}", files)
    model, params = load(bin_name, cache_dir=cache)
    np.testing.assert_allclose(jax_logits(model, params, x), timm_logits(deit, x), atol=TOL, rtol=0)


def test_converter_cli_round_trip(tmp_path):
    name, kwargs = FAMILIES["deit3"]
    ref_model = timm_model(name, **kwargs)
    pth = save_timm(ref_model, tmp_path / "deit3.pth")
    out = tmp_path / "deit3_flax.safetensors"
    kw = [a for k, v in kwargs.items() for a in ("--kw", f"{k}={v}")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    script = REPO_ROOT / "convert" / "timm_to_flax.py"
    cmd = [sys.executable, str(script), str(pth), "--model", name, "-o", str(out), *kw]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and out.is_file()
    model, params = load(out)
    x = images(ref_model)
    np.testing.assert_allclose(jax_logits(model, params, x), timm_logits(ref_model, x), atol=TOL, rtol=0)


@pytest.mark.parametrize(
    "name, kwargs, new",
    [
        # FlexiViT: timm resamples with bilinear, no antialias
        ("flexivit_small", dict(SMALL, img_size=48), dict(img_size=64, patch_size=8)),
        # other ViTs: bicubic + antialias; cls-token slot kept; non-square target grid
        ("vit_tiny_patch16_224", dict(depth=2, num_classes=7, img_size=32), dict(img_size=(40, 56), patch_size=8)),
        # no_embed_class + LayerScale, downsampled patches
        ("deit3_small_patch16_224", dict(SMALL, img_size=64), dict(img_size=48, patch_size=24)),
    ],
)
def test_resampling_matches_timm(name, kwargs, new, tmp_path):
    path = save_timm(timm_model(name, **kwargs), tmp_path / "ckpt.safetensors")
    target = dict(kwargs, **new)
    # timm's own path: build at the new sizes, load the file through its checkpoint filter
    ref_model = timm.create_model(
        name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=7), **target
    ).eval()
    x = images(ref_model)
    model, params = load(name, checkpoint=path, **target)
    assert model.config.patch_size == ref_model.patch_embed.patch_size
    np.testing.assert_allclose(jax_logits(model, params, x), timm_logits(ref_model, x), atol=TOL, rtol=0)


def test_num_classes_override_reinitialises_head(vit_tiny):
    ref_model, path, kwargs = vit_tiny
    with pytest.warns(UserWarning, match=r"head \(7 classes in the checkpoint\) re-initialised for num_classes=5"):
        model, params = load("vit_tiny_patch16_224", checkpoint=path, **dict(kwargs, num_classes=5))
    x = images(ref_model)
    with jax.default_matmul_precision("highest"):
        logits, aux = model.apply({"params": params}, x.transpose(0, 2, 3, 1))
    assert logits.shape == (2, 5)
    with torch.no_grad():
        pooled = ref_model.forward_head(ref_model.forward_features(torch.from_numpy(x)), pre_logits=True).numpy()
    np.testing.assert_allclose(np.asarray(aux["pooled"]), pooled, atol=TOL, rtol=0)


def test_siglip_without_map_head_drops_pool_and_classifier(tmp_path):
    """timm's SigLIP embedding setup (global_pool='avg', num_classes=0) from a MAP checkpoint."""
    name, kwargs = FAMILIES["siglip_map"]
    ref_model = timm_model(name, **kwargs)
    path = save_timm(ref_model, tmp_path / "siglip.safetensors")
    with pytest.warns(UserWarning) as record:
        model, params = load(name, checkpoint=path, **dict(kwargs, global_pool="avg", fc_norm=False, num_classes=0))
    messages = " | ".join(str(w.message) for w in record)
    assert "head (7 classes) dropped: num_classes=0" in messages and "attn_pool.*" in messages
    x = images(ref_model)
    with torch.no_grad():
        pooled = ref_model.forward_features(torch.from_numpy(x)).mean(1).numpy()
    np.testing.assert_allclose(jax_logits(model, params, x), pooled, atol=TOL, rtol=0)


# ---------------------------------------------------------------------------------------------- errors


def test_unknown_model_name(vit_tiny):
    _, path, kwargs = vit_tiny
    with pytest.raises(UnknownModelError, match="Close matches: vit_tiny_patch16_224"):
        load("vit_tiny_ptch16_224", checkpoint=path, **kwargs)


def edited_checkpoint(model, path: Path, drop=(), add=None, replace=None) -> Path:
    state = {k: v for k, v in model.state_dict().items() if k not in drop}
    state.update(add or {})
    state.update(replace or {})
    return save_timm_state(state, path)


def save_timm_state(state: dict, path: Path) -> Path:
    safetensors_torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def test_missing_keys_are_listed(vit_tiny, tmp_path):
    model, _, kwargs = vit_tiny
    path = edited_checkpoint(model, tmp_path / "m.safetensors", drop=("blocks.1.mlp.fc2.weight", "norm.bias"))
    with pytest.raises(CheckpointMismatchError, match=r"missing from the checkpoint \(2\)") as e:
        load("vit_tiny_patch16_224", checkpoint=path, **kwargs)
    assert "blocks_1/mlp/fc2/kernel" in str(e.value) and "norm/bias" in str(e.value)


def test_fork_only_keys_strict_and_non_strict(vit_tiny, tmp_path):
    model, _, kwargs = vit_tiny
    fork = {"blocks.0.attn.value.weight": torch.randn(192, 192), "blocks.0.attn.value.bias": torch.randn(192)}
    path = edited_checkpoint(model, tmp_path / "fork.safetensors", add=fork)
    with pytest.raises(CheckpointMismatchError, match=r"unexpected in the checkpoint \(2\)") as e:
        load("vit_tiny_patch16_224", checkpoint=path, **kwargs)
    assert "blocks.0.attn.value.weight" in str(e.value)
    dropped = r"dropped 2 checkpoint keys.*blocks\.0\.attn\.value\.bias, blocks\.0\.attn\.value\.weight"
    with pytest.warns(UserWarning, match=dropped):
        jmodel, params = load("vit_tiny_patch16_224", checkpoint=path, strict=False, **kwargs)
    x = images(model)
    np.testing.assert_allclose(jax_logits(jmodel, params, x), timm_logits(model, x), atol=TOL, rtol=0)


def test_shape_mismatch_names_the_key(vit_tiny, tmp_path):
    model, _, kwargs = vit_tiny
    path = edited_checkpoint(model, tmp_path / "s.safetensors", replace={"blocks.0.mlp.fc1.bias": torch.zeros(100)})
    named = r"blocks\.0\.mlp\.fc1\.bias -> blocks_0/mlp/fc1/bias: checkpoint \(100,\)"
    with pytest.raises(CheckpointMismatchError, match=named):
        load("vit_tiny_patch16_224", checkpoint=path, strict=False, **kwargs)


def test_corrupt_and_foreign_files(vit_tiny, tmp_path):
    _, path, kwargs = vit_tiny
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(CheckpointFileError, match="truncated or corrupt"):
        load("vit_tiny_patch16_224", checkpoint=truncated, **kwargs)
    with pytest.raises(CheckpointFileError, match="truncated or corrupt"):
        load(truncated)
    with pytest.raises(ValueError, match=r"not a libra-jax checkpoint.*load\('<timm model name>', checkpoint="):
        load(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load("vit_tiny_patch16_224", checkpoint=tmp_path / "nope.safetensors", **kwargs)


def test_torch_missing_message(vit_tiny, tmp_path, monkeypatch):
    model, _, kwargs = vit_tiny
    pth = save_timm(model, tmp_path / "m.pth")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(ImportError, match=r"needs PyTorch \(pip install"):
        load("vit_tiny_patch16_224", checkpoint=pth, **kwargs)


def test_offline_hub_without_cache(offline, tmp_path):
    with pytest.raises(HubError, match=r"timm/vit_tiny_patch16_224\.augreg_in21k_ft_in1k.*HF_HUB_OFFLINE is set"):
        load("vit_tiny_patch16_224", cache_dir=tmp_path / "empty")
    with pytest.raises(HubError, match=r"config\.json of HF repo timm/vit_tiny_patch16_224\.x is not in the local"):
        load("hf-hub:timm/vit_tiny_patch16_224.x", cache_dir=tmp_path / "empty")


def test_no_warnings_on_clean_load(vit_tiny):
    _, path, kwargs = vit_tiny
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load("vit_tiny_patch16_224", checkpoint=path, **kwargs)
