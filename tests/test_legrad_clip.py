"""LeGrad on image–text models against the official LeGrad wrapper (golden case `legrad_clip`).

The tiny random open_clip models of the golden case are loaded through `load_image_text`
(open_clip `CLIP` with exact GELU, the same weights with QuickGELU, the same at 448 px with the
position embedding resampled, and a `CustomTextCLIP` with a timm SigLIP-style MAP trunk). Every
golden key is checked: text / image embeddings and cosines, the per-layer maps E_l before
upsampling, the per-layer image embeddings e_l, the scale of Σ_l up16(E_l) and the final maps;
for SigLIP the MAP-pooler maps, the empty-prompt correction and the corrected maps. Tolerance: rtol
1e-4 with atol 1e-6·max|golden| (float32 reaches it; the README's float32-vs-float64 spread is ~1e-6).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import golden_dir

from libra_jax import image_text
from libra_jax.methods import api
from libra_jax.methods.legrad import layer_maps as legrad_layer_maps
from libra_jax.methods.legrad import upsampled
from libra_jax.models import ViTConfig
from libra_jax.models.vit import VANILLA
from libra_jax.ops import unit_norm
from libra_jax.resize import resize
from libra_jax.rules import get_rules

pytestmark = pytest.mark.usefixtures("highest_precision")

CASE = "legrad_clip"
OPENAI_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
OPENAI_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
COSINE = image_text.similarity_target("vanilla", scale=1.0)  # LeGrad's score ⟨t, normalize(e_l)⟩
SIGLIP_TRUNK = ViTConfig(
    img_size=224, patch_size=16, embed_dim=64, depth=2, num_heads=2, class_token=False, global_pool="map", num_classes=0
)


def close(ours, want, where: str) -> None:
    want = np.asarray(want)
    np.testing.assert_allclose(np.asarray(ours), want, rtol=1e-4, atol=1e-6 * np.abs(want).max(), err_msg=where)


@functools.cache
def golden():
    path = golden_dir(CASE)
    return path, np.load(path / "inputs.npz"), np.load(path / "outputs.npz")


def normalise(images_u8: np.ndarray, mean, std) -> np.ndarray:
    """The README's bit-exact recipe (NHWC here)."""
    return ((images_u8.astype(np.float32) / np.float32(255)) - mean) / std


@functools.cache
def clip_model(quick_gelu: bool = False, img_size: int = 224):
    path = golden()[0]
    return image_text.load_image_text(
        path / "model.safetensors", config=path / "open_clip_config.json", quick_gelu=quick_gelu, img_size=img_size
    )


def layer_maps(model, params, x, text, layer_index, **options):
    """(B, P, L, gh, gw) per-layer maps for every image × prompt."""
    run = functools.partial(
        legrad_layer_maps, model, params, rules=get_rules("vanilla"), target=COSINE, layer_index=layer_index, **options
    )
    per_image = jax.vmap(lambda xi: jax.vmap(lambda t: run(xi, t))(text))
    return api.to_grid(jax.jit(per_image)(jnp.asarray(x)), model)


def layer_embeddings(model, params, x, layers):
    """e_l = normalize(proj(ln_post(mean over all tokens of block l's output))), (B, L, E)."""
    _, aux = model.apply({"params": params}, jnp.asarray(x))
    means = jnp.stack([aux["blocks"][i]["out"].mean(-2) for i in layers], 1)
    emb = model.apply({"params": params}, means, method=lambda m, z: m.project(m.norm(z, VANILLA)))
    return unit_norm(emb)


def check_clip_setting(prefix, suffix, model, params, x, text, layers, out, with_final=True):
    maps = layer_maps(model, params, x, text, layers[0])  # (B, P, L, gh, gw)
    close(maps.transpose(0, 2, 1, 3, 4), out[f"{prefix}layer_maps_patch{suffix}"], "layer maps")
    close(layer_embeddings(model, params, x, layers), out[f"{prefix}layer_embeddings{suffix}"], "layer embeddings")
    size = tuple(model.config.img_size)
    total = resize(maps, size, "bilinear").sum(2)  # Σ_l up16(E_l): (B, P, H, W)
    close(total.min((-2, -1)), out[f"{prefix}sum_before_minmax_min{suffix}"], "min of the layer sum")
    close(total.max((-2, -1)), out[f"{prefix}sum_before_minmax_max{suffix}"], "max of the layer sum")
    if with_final:
        close(upsampled(maps[0], size), out[f"{prefix}final_map{suffix}_img0"], "final maps")


@pytest.mark.parametrize("quick_gelu", [False, True], ids=["gelu", "quickgelu"])
def test_clip_embeddings_and_legrad_match_golden(quick_gelu):
    _, inputs, out = golden()
    prefix = "quickgelu_" if quick_gelu else ""
    model, params = clip_model(quick_gelu)
    x = normalise(inputs["images_uint8_hwc"], OPENAI_MEAN, OPENAI_STD)
    text_raw = model.apply({"params": params}, jnp.asarray(inputs["text_tokens"]), method="encode_text")
    image_raw = model.apply({"params": params}, jnp.asarray(x), method="encode_image")
    close(text_raw, out[f"{prefix}text_embedding_unnormalized"], "text embedding")
    close(image_raw, out[f"{prefix}image_embedding_unnormalized"], "image embedding")
    text = image_text.text_embeddings(model, params, jnp.asarray(inputs["text_tokens"]))
    close(text, out[f"{prefix}text_embedding"], "unit text embedding")
    close(unit_norm(image_raw), out[f"{prefix}image_embedding"], "unit image embedding")
    close(unit_norm(image_raw) @ text.T, out[f"{prefix}cosine_image_text"], "cosines")
    check_clip_setting(prefix, "_all", model, params, x, text, range(4), out, with_final=False)
    if not quick_gelu:
        check_clip_setting(prefix, "_default", model, params, x, text, range(2, 4), out)


def test_clip_legrad_at_448_matches_golden():
    """LeGrad's demo resolution: the position embedding resampled (bicubic, antialiased) to a 28×28 grid."""
    _, inputs, out = golden()
    model, params = clip_model(img_size=448)
    close(params["pos_embed"][0, :29], out["r448_pos_embed_resampled_first29"], "resampled position embedding")
    x = normalise(inputs["images448_uint8_hwc"], OPENAI_MEAN, OPENAI_STD)
    image_raw = model.apply({"params": params}, jnp.asarray(x), method="encode_image")
    close(image_raw, out["r448_image_embedding_unnormalized"], "image embedding at 448")
    text = image_text.text_embeddings(model, params, jnp.asarray(inputs["text_tokens"]))
    maps = layer_maps(model, params, x, text, -2)[0]  # (P, L, 28, 28)
    close(maps.transpose(1, 0, 2, 3), out["r448_layer_maps_patch_default"], "layer maps at 448")
    close(layer_embeddings(model, params, x, range(2, 4))[0], out["r448_layer_embeddings_default"], "layer embeddings")
    total = resize(maps, (448, 448), "bilinear").sum(1)
    close(total.min((-2, -1)), out["r448_sum_before_minmax_min_default"], "min of the layer sum")
    close(total.max((-2, -1)), out["r448_sum_before_minmax_max_default"], "max of the layer sum")
    final = upsampled(maps, (448, 448))
    close(final[0, 0], out["r448_final_map_prompt0_row0_default"], "first row of the final map")
    close(final.mean((-2, -1)), out["r448_final_map_mean_default"], "final map means")


def test_siglip_map_legrad_matches_golden():
    """The attention-pooler variant: gradients w.r.t. the MAP pool's attention, trunk norm skipped, and the
    empty-prompt correction; the (seeded, random) text embeddings come from the golden inputs."""
    path, inputs, out = golden()
    model, params = image_text.load_image_text(
        path / "siglip_model.safetensors", config=path / "open_clip_siglip_config.json", vision=SIGLIP_TRUNK
    )
    x = jnp.asarray(normalise(inputs["images_uint8_hwc"], 0.5, 0.5))
    close(model.apply({"params": params}, x, method="encode_image"), out["siglip_image_embedding_unnormalized"], "emb")
    text, empty = jnp.asarray(inputs["siglip_text_embedding"]), jnp.asarray(inputs["siglip_empty_embedding"][0])
    options = dict(pool_norm=False)
    maps = layer_maps(model, params, x, text, 0, **options)  # (B, P, L, 14, 14)
    close(maps, out["siglip_layer_maps_patch"], "layer maps")
    close(layer_maps(model, params, x, empty[None], 0, **options)[:, 0], out["siglip_layer_maps_patch_empty"], "empty")
    _, aux = model.apply({"params": params}, x)
    pooled = [
        model.apply({"params": params}, b["out"], VANILLA, method=lambda m, z, r: m.attn_pool(z, r)[0])
        for b in aux["blocks"]
    ]
    close(unit_norm(jnp.stack(pooled, 1)), out["siglip_layer_pooled_normalized"], "per-layer pooled embeddings")
    null = upsampled(layer_maps(model, params, x, empty[None], 0, **options)[:, 0], (14, 14))
    close(null, out["siglip_empty_minmax"], "empty-prompt min-max")

    def ours(empty_or_none, normalize):
        fn = api.attribution(
            model,
            "legrad",
            "vanilla",
            target=COSINE,
            layer_index=0,
            normalize=normalize,
            empty=empty_or_none,
            **options,
        )
        return fn(params, x, jnp.broadcast_to(text, (2, *text.shape)))  # (B, P, 14, 14), T prompts in one call

    close(ours(empty, False) * 2, out["siglip_corr_sum_after_correction"], "sum after correction")  # mean of 2 layers
    corrected = ours(empty, True)
    close(corrected, out["siglip_corr_minmax_patch"], "corrected maps")
    close(ours(None, True), out["siglip_nocorr_minmax_patch"], "uncorrected maps")
    close(resize(corrected[0, 0], (224, 224), "bilinear"), out["siglip_corr_final_map_img0_prompt0"], "final")
