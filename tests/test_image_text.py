"""Image–text models (`libra_jax.image_text`): upstream parity, the N2U rule, completeness, several prompts.

* Forward parity ≤ 1e-4 of image and text embeddings against random-init, reduced-size
  `transformers` `CLIPModel` (GELU with eos-id pooling; QuickGELU with legacy argmax pooling),
  `SiglipModel` and `open_clip` `CLIP` (QuickGELU), each saved as its upstream files in a fake HF
  cache and loaded through `load_image_text("hf-hub:...")` with HF_HUB_OFFLINE.
* The N2U op (‖x‖ constant) against its stop-gradient reference.
* Completeness: under `libra_logit` rules Σ_t FullGrad = 100·⟨n(image embedding), t⟩ to float precision.
* T prompts in one call (y (B, T, E): one image forward) equal T separate calls.
"""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import randomize
from test_loading import make_hub_cache, offline  # noqa: F401 (fixture)

import libra_jax
from libra_jax import image_text, ops
from libra_jax.methods import api
from libra_jax.models import ViTConfig
from libra_jax.models.image_text import ImageTextModel
from libra_jax.models.text import TextConfig
from libra_jax.ops import reference as ref
from libra_jax.weights.keymap import CheckpointMismatchError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
open_clip = pytest.importorskip("open_clip")
safetensors_torch = pytest.importorskip("safetensors.torch")

pytestmark = pytest.mark.usefixtures("highest_precision")

VOCAB, CONTEXT, IMG = 64, 16, 32
EMBED = 16


def perturb(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Re-draw every parameter around its init so that no bias is zero and no norm affine is trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith("logit_scale") or name.endswith("logit_bias"):
                continue
            p.copy_(1 + 0.2 * noise if p.ndim == 1 and "norm" in name else p + 0.1 * noise)
    return module.eval()


def token_ids(eos: int | None, seed: int = 0) -> np.ndarray:
    """(3, CONTEXT) ids: random words, then `eos` (when given) at different positions, then padding 0."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, VOCAB - 2, (3, CONTEXT))
    if eos is not None:
        for row, n in enumerate((4, 9, CONTEXT - 1)):
            ids[row, n] = eos
            ids[row, n + 1 :] = 0
    return ids


def images(batch: int = 2) -> np.ndarray:
    return np.random.default_rng(5).standard_normal((batch, 3, IMG, IMG)).astype(np.float32)


def hub_load(cache, repo: str, files: dict) -> tuple[ImageTextModel, dict]:
    make_hub_cache(cache, repo, files)
    return image_text.load_image_text(f"hf-hub:{repo}", cache_dir=cache)


def saved(module: torch.nn.Module) -> bytes:
    return safetensors_torch.save({k: v.contiguous() for k, v in module.state_dict().items()})


def assert_parity(model, params, image_ref, text_ref, x, ids):
    ours_img = model.apply({"params": params}, jnp.asarray(x.transpose(0, 2, 3, 1)), method="encode_image")
    ours_txt = model.apply({"params": params}, jnp.asarray(ids), method="encode_text")
    assert np.abs(image_ref).max() > 0.1 and np.abs(text_ref).max() > 0.1
    np.testing.assert_allclose(ours_img, image_ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(ours_txt, text_ref, atol=1e-4, rtol=0)


def pooled(out) -> np.ndarray:
    """transformers 5 returns a model output from get_*_features; earlier versions a tensor."""
    return (out if isinstance(out, torch.Tensor) else out.pooler_output).numpy()


HF_VISION = dict(image_size=IMG, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2)
HF_TEXT = dict(
    vocab_size=VOCAB, hidden_size=24, intermediate_size=48, num_hidden_layers=2, max_position_embeddings=CONTEXT
)


@pytest.mark.parametrize("act, eos", [("gelu", 30), ("quick_gelu", 2)], ids=["gelu-eos_id", "quickgelu-argmax"])
def test_hf_clip_parity(offline, tmp_path, act, eos):  # noqa: F811
    cfg = transformers.CLIPConfig(
        vision_config=dict(HF_VISION, num_attention_heads=2, hidden_act=act),
        text_config=dict(HF_TEXT, num_attention_heads=2, hidden_act=act, eos_token_id=eos),
        projection_dim=EMBED,
    )
    hf = perturb(transformers.CLIPModel(cfg))
    files = {"config.json": json.dumps(cfg.to_dict()).encode(), "model.safetensors": saved(hf)}
    model, params = hub_load(tmp_path / "hub", "org/tiny-clip", files)
    assert model.text_config.pool == ("eot" if eos == 2 else "eos_id") and model.config.act == act
    x, ids = images(), token_ids(eos if eos != 2 else None)
    if eos == 2:
        ids[:, 5] = VOCAB - 1  # the largest id marks the pooled token (legacy configs)
    with torch.no_grad():
        img = pooled(hf.get_image_features(pixel_values=torch.from_numpy(x)))
        txt = pooled(hf.get_text_features(input_ids=torch.from_numpy(ids)))
    assert_parity(model, params, img, txt, x, ids)
    np.testing.assert_allclose(params["logit_scale"], hf.logit_scale.item(), rtol=1e-6)


def test_hf_siglip_parity(offline, tmp_path):  # noqa: F811
    cfg = transformers.SiglipConfig(
        vision_config=dict(HF_VISION, num_attention_heads=2),
        text_config=dict(HF_TEXT, num_attention_heads=2, projection_size=32),
    )
    hf = perturb(transformers.SiglipModel(cfg))
    files = {"config.json": json.dumps(cfg.to_dict()).encode(), "model.safetensors": saved(hf)}
    model, params = hub_load(tmp_path / "hub", "org/tiny-siglip", files)
    assert model.config.global_pool == "map" and not model.image_proj and model.config.act == "gelu_tanh"
    x, ids = images(), token_ids(None)
    with torch.no_grad():
        img = pooled(hf.get_image_features(pixel_values=torch.from_numpy(x)))
        txt = pooled(hf.get_text_features(input_ids=torch.from_numpy(ids)))
    assert_parity(model, params, img, txt, x, ids)
    np.testing.assert_allclose(params["logit_bias"], hf.logit_bias.item(), rtol=1e-6)


OPEN_CLIP_CFG = dict(
    embed_dim=EMBED,
    quick_gelu=True,
    vision_cfg=dict(image_size=IMG, layers=2, width=32, head_width=16, patch_size=8),
    text_cfg=dict(context_length=CONTEXT, vocab_size=VOCAB, width=24, heads=2, layers=2),
)


def open_clip_model():
    cfg = OPEN_CLIP_CFG
    return perturb(
        open_clip.model.CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"], quick_gelu=cfg["quick_gelu"])
    )


def test_open_clip_parity(offline, tmp_path):  # noqa: F811
    oc = open_clip_model()
    files = {
        "open_clip_config.json": json.dumps({"model_cfg": OPEN_CLIP_CFG, "preprocess_cfg": {}}).encode(),
        "open_clip_model.safetensors": saved(oc),
    }
    model, params = hub_load(tmp_path / "hub", "timm/tiny-clip.openai", files)
    assert model.config.act == "quick_gelu" and model.text_config.act == "quick_gelu"
    x, ids = images(), token_ids(VOCAB - 1)
    with torch.no_grad():
        img, txt = oc.encode_image(torch.from_numpy(x)).numpy(), oc.encode_text(torch.from_numpy(ids)).numpy()
    assert_parity(model, params, img, txt, x, ids)


def test_checkpoint_mismatch_is_reported_with_a_diff(tmp_path):
    state = {k: v.numpy() for k, v in open_clip_model().state_dict().items() if k != "visual.ln_post.weight"}
    state["visual.extra.weight"] = np.zeros((2, 2), np.float32)
    path = tmp_path / "w.safetensors"
    safetensors_torch.save_file({k: torch.from_numpy(v).contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(
        CheckpointMismatchError, match=r"(?s)missing.*- norm/scale.*unexpected.*\+ visual\.extra\.weight"
    ):
        image_text.load_image_text(path, config=OPEN_CLIP_CFG)


@pytest.mark.parametrize("rule", ["plain", "detach"])
def test_unit_norm_op_matches_its_reference(rule):
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 7))
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 7))
    np.testing.assert_array_equal(ops.unit_norm(x, rule=rule), ops.unit_norm(x))  # forward independent of the rule
    ours = jax.grad(lambda v: (ops.unit_norm(v, rule=rule) * w).sum())(x)
    want = jax.grad(lambda v: (ref.unit_norm_reference(v, rule) * w).sum())(x)
    np.testing.assert_allclose(ours, want, rtol=1e-6, atol=1e-7)
    if rule == "detach":  # ‖x‖ constant: ∂y/∂x = I/‖x‖, so y is linear in x for the backward
        np.testing.assert_allclose(ours, w / jnp.linalg.norm(x, axis=-1, keepdims=True), rtol=1e-6)


TOWERS = {
    "clip": (dict(pre_norm=True, norm_eps=1e-5, act="quick_gelu"), dict(embed_dim=12)),
    "siglip": (
        dict(class_token=False, global_pool="map"),
        dict(embed_dim=32, causal=False, pool="last", proj_bias=True),
    ),
}


def tiny_model(kind: str = "clip"):
    """A small random CLIP (class token, norm_pre, projection) or SigLIP (MAP head, no projection) and its params."""
    vision_kw, text_kw = TOWERS[kind]
    vision = ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0, **vision_kw)
    text = TextConfig(vocab_size=VOCAB, context_length=CONTEXT, width=16, heads=2, layers=1, mlp_hidden=32, **text_kw)
    model = ImageTextModel(vision, text_config=text, image_proj=kind == "clip", logit_bias=kind == "siglip")
    init = jax.jit(functools.partial(model.init, method="init_all"))  # eager init compiles every op on its own
    variables = init(jax.random.PRNGKey(0), jnp.zeros((32, 32, 3)), jnp.zeros((CONTEXT,), jnp.int32))
    return model, randomize(variables["params"], jax.random.PRNGKey(1))


def unit_texts(shape, key=3, dim=12):
    return ops.unit_norm(jax.random.normal(jax.random.PRNGKey(key), (*shape, dim)))


@pytest.mark.parametrize("kind", sorted(TOWERS))
def test_fullgrad_is_complete_for_the_similarity_under_libra_logit(kind):
    """Σ_t FullGrad (biases of every block, the final norm, the MAP head included) = scale·cos; the logit
    bias (SigLIP) is a constant no token holds."""
    model, params = tiny_model(kind)
    x = jax.random.uniform(jax.random.PRNGKey(2), (2, 32, 32, 3), minval=-1.0, maxval=1.0)
    text = unit_texts((2,), dim=model.embed_dim)
    emb = model.apply({"params": params}, x, method="encode_image")
    sim = 100 * (ops.unit_norm(emb) * text).sum(-1)
    errors = {}
    for preset in ("libra_logit", "vanilla_logit"):
        target = image_text.similarity_target(preset, bias=-3.0)
        fn = libra_jax.attribution(model, "fullgrad", preset, target=target, return_tokens=True)
        maps = jax.jit(fn)(params, x, text)
        errors[preset] = np.abs(np.asarray(maps.sum(-1) - sim)).max()
    assert np.abs(sim).max() > 1.0
    assert errors["libra_logit"] < 2e-6 * np.abs(sim).max(), errors
    assert errors["vanilla_logit"] > 1e-2 * np.abs(sim).max(), errors


def test_several_prompts_in_one_call_equal_separate_calls():
    model, params = tiny_model()
    x = jax.random.uniform(jax.random.PRNGKey(2), (2, 32, 32, 3), minval=-1.0, maxval=1.0)
    text = unit_texts((2, 3))  # 3 prompts per image
    methods = ["fullgrad_plus", "gradcam", "legrad"]
    fn = libra_jax.attribution(model, methods, "libra", target=image_text.similarity_target("libra"))
    together = jax.jit(fn)(params, x, text)
    for name in methods:
        assert together[name].shape == (2, 3, 4, 4)
        for t in range(3):
            np.testing.assert_allclose(together[name][:, t], fn(params, x, text[:, t])[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", sorted(TOWERS))
def test_every_supported_method_takes_a_text_target(kind):
    """Each method defined for the image tower explains the similarity: finite (B, T, gh, gw) maps, one call."""
    model, params = tiny_model(kind)
    x = jax.random.uniform(jax.random.PRNGKey(2), (2, 32, 32, 3), minval=-1.0, maxval=1.0)
    methods = [m for m in api.METHODS if api.supports(model, m)]
    assert {"fullgrad_plus", "ig", "legrad", "gradcam"} <= set(methods)
    fn = libra_jax.attribution(model, methods, "libra", target=image_text.similarity_target("libra"), steps=2)
    out = jax.jit(fn)(params, x, unit_texts((2, 2), dim=model.embed_dim))
    for name in methods:
        assert out[name].shape == (2, 2, 4, 4) and np.isfinite(np.asarray(out[name])).all(), name


def test_sigmoid_target_and_model_scale():
    model, params = tiny_model()
    target = image_text.model_target(params, "libra", sigmoid=True)
    assert target.sigmoid and np.isclose(target.scale, np.exp(float(params["logit_scale"])))
    e, t = jnp.arange(12.0), unit_texts(())
    logit = target.scale * jnp.dot(e / jnp.linalg.norm(e), t)
    np.testing.assert_allclose(target(e, t), jax.nn.sigmoid(logit), rtol=1e-6)


def test_cli_explains_several_prompts(tmp_path, capsys):
    """`libra-jax explain --prompt ... --prompt ...` on an open_clip folder: one overlay row per image × prompt."""
    from PIL import Image

    from libra_jax import cli, viz

    cfg = {**OPEN_CLIP_CFG, "text_cfg": {**OPEN_CLIP_CFG["text_cfg"], "vocab_size": 49408, "context_length": 77}}
    oc = perturb(open_clip.model.CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"], quick_gelu=True))
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    (tmp_path / "open_clip_model.safetensors").write_bytes(saved(oc))
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "heat.png"
    args = ["explain", "--model", str(tmp_path), "--image", str(image), "--out", str(out)]
    args += ["--prompt", "a photo of a zebra", "--prompt", "a horse", "--method", "libra_fullgrad_plus", "legrad"]
    assert cli.main(args) == 0
    stdout = capsys.readouterr().out
    assert "a photo of a zebra" in stdout and "a horse" in stdout and "explaining 2 prompt(s)" in stdout
    blank = np.zeros((IMG, IMG, 3), np.uint8)
    panels = [blank, viz.overlay(blank, np.zeros((2, 2))), viz.overlay(blank, np.zeros((2, 2)))]
    with Image.open(out) as heat:  # two rows (one per prompt): the input, then two overlays with colour bars
        assert np.asarray(heat).shape == viz.grid([panels] * 2, [[""] * 3] * 2).shape
    assert cli.main([*args[:-5], "--prompt", "x", "--target", "3"]) == 2  # --target makes no sense with prompts
