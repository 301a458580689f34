"""LeGrad on image–text models against the official LeGrad wrapper (golden case `legrad_clip`).

The tiny random open_clip models of the golden case are loaded through `load_image_text`
(open_clip `CLIP` with exact GELU, the same weights with QuickGELU, the same at 448 px with the
position embedding resampled, and a `CustomTextCLIP` with a timm SigLIP-style MAP trunk). Every
golden key is checked: text / image embeddings and cosines, the per-layer maps E_l before
upsampling, the per-layer image embeddings e_l, the scale of Σ_l up16(E_l) and the final maps;
for SigLIP the MAP-pooler maps, the empty-prompt correction and the corrected maps. Tolerances follow
tests/golden.py's scheme (each test's quantities computed in float32 and in float64; float64 vs golden and
float32 vs float64 at 1e-4 of each quantity's scale); every map here is well-conditioned (the README's
float32-vs-float64 spread is ~1e-6), so no rounding allowance is needed.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from golden import assert_golden, golden_dir, in_float64

from libra_jax import image_text
from libra_jax.methods import api
from libra_jax.methods.legrad import layer_maps as legrad_layer_maps
from libra_jax.methods.legrad import upsampled
from libra_jax.models import ViTConfig
from libra_jax.models.vit import VANILLA
from libra_jax.ops import unit_norm
from libra_jax.rules import get_rules
from libra_jax.weights.resize import resize

pytestmark = pytest.mark.usefixtures("highest_precision")

CASE = "legrad_clip"
OPENAI_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
OPENAI_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
COSINE = image_text.similarity_target("vanilla", scale=1.0)  # LeGrad's score ⟨t, normalize(e_l)⟩
SIGLIP_TRUNK = ViTConfig(
    img_size=224, patch_size=16, embed_dim=64, depth=2, num_heads=2, class_token=False, global_pool="map", num_classes=0
)


def compare(compute, where: str, *args) -> None:
    """`compute(*args)` → {golden key: our value}, run in float32 and in float64, against the golden outputs."""
    ours32 = jax.tree.map(np.asarray, compute(*args))
    exact = in_float64(compute, *args)
    assert_golden(ours32, exact, {k: golden()[2][k] for k in exact}, where, slack={})


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


def clip_setting(prefix, suffix, model, params, x, text, layers, with_final=True) -> dict:
    """{golden key: value} of one LeGrad setting (layers from `layers[0]`)."""
    maps = layer_maps(model, params, x, text, layers[0])  # (B, P, L, gh, gw)
    size = tuple(model.config.img_size)
    total = resize(maps, size, "bilinear").sum(2)  # Σ_l up16(E_l): (B, P, H, W)
    out = {
        f"{prefix}layer_maps_patch{suffix}": maps.transpose(0, 2, 1, 3, 4),
        f"{prefix}layer_embeddings{suffix}": layer_embeddings(model, params, x, layers),
        f"{prefix}sum_before_minmax_min{suffix}": total.min((-2, -1)),
        f"{prefix}sum_before_minmax_max{suffix}": total.max((-2, -1)),
    }
    if with_final:
        out[f"{prefix}final_map{suffix}_img0"] = upsampled(maps[0], size)
    return out


@pytest.mark.parametrize("quick_gelu", [False, True], ids=["gelu", "quickgelu"])
def test_clip_embeddings_and_legrad_match_golden(quick_gelu):
    _, inputs, _ = golden()
    prefix = "quickgelu_" if quick_gelu else ""
    model, params = clip_model(quick_gelu)

    def compute(params, x, tokens):
        text_raw = model.apply({"params": params}, tokens, method="encode_text")
        image_raw = model.apply({"params": params}, x, method="encode_image")
        text = image_text.text_embeddings(model, params, tokens)
        out = {
            f"{prefix}text_embedding_unnormalized": text_raw,
            f"{prefix}image_embedding_unnormalized": image_raw,
            f"{prefix}text_embedding": text,
            f"{prefix}image_embedding": unit_norm(image_raw),
            f"{prefix}cosine_image_text": unit_norm(image_raw) @ text.T,
        }
        out |= clip_setting(prefix, "_all", model, params, x, text, range(4), with_final=False)
        if not quick_gelu:
            out |= clip_setting(prefix, "_default", model, params, x, text, range(2, 4))
        return out

    x = normalise(inputs["images_uint8_hwc"], OPENAI_MEAN, OPENAI_STD)
    compare(compute, f"{CASE}/{prefix or 'gelu_'}clip", params, x, jnp.asarray(inputs["text_tokens"]))


def test_clip_legrad_at_448_matches_golden():
    """LeGrad's demo resolution: the position embedding resampled (bicubic, antialiased) to a 28×28 grid."""
    _, inputs, _ = golden()
    model, params = clip_model(img_size=448)

    def compute(params, x, tokens):
        text = image_text.text_embeddings(model, params, tokens)
        maps = layer_maps(model, params, x, text, -2)[0]  # (P, L, 28, 28)
        total = resize(maps, (448, 448), "bilinear").sum(1)
        final = upsampled(maps, (448, 448))
        return {
            "r448_pos_embed_resampled_first29": params["pos_embed"][0, :29],
            "r448_image_embedding_unnormalized": model.apply({"params": params}, x, method="encode_image"),
            "r448_layer_maps_patch_default": maps.transpose(1, 0, 2, 3),
            "r448_layer_embeddings_default": layer_embeddings(model, params, x, range(2, 4))[0],
            "r448_sum_before_minmax_min_default": total.min((-2, -1)),
            "r448_sum_before_minmax_max_default": total.max((-2, -1)),
            "r448_final_map_prompt0_row0_default": final[0, 0],
            "r448_final_map_mean_default": final.mean((-2, -1)),
        }

    x = normalise(inputs["images448_uint8_hwc"], OPENAI_MEAN, OPENAI_STD)
    compare(compute, f"{CASE}/r448", params, x, jnp.asarray(inputs["text_tokens"]))


def test_siglip_map_legrad_matches_golden():
    """The attention-pooler variant: gradients w.r.t. the MAP pool's attention, trunk norm skipped, and the
    empty-prompt correction; the (seeded, random) text embeddings come from the golden inputs."""
    path, inputs, _ = golden()
    model, params = image_text.load_image_text(
        path / "siglip_model.safetensors", config=path / "open_clip_siglip_config.json", vision=SIGLIP_TRUNK
    )
    options = dict(pool_norm=False)

    def compute(params, x, text, empty):
        def ours(empty_or_none, normalize):
            kw = dict(target=COSINE, layer_index=0, normalize=normalize, empty=empty_or_none, **options)
            fn = api.attribution(model, "legrad", "vanilla", **kw)
            return fn(params, x, jnp.broadcast_to(text, (2, *text.shape)))  # (B, P, 14, 14), T prompts in one call

        maps = layer_maps(model, params, x, text, 0, **options)  # (B, P, L, 14, 14)
        empty_maps = layer_maps(model, params, x, empty[None], 0, **options)[:, 0]
        _, aux = model.apply({"params": params}, x)
        pooled = [
            model.apply({"params": params}, b["out"], VANILLA, method=lambda m, z, r: m.attn_pool(z, r)[0])
            for b in aux["blocks"]
        ]
        corrected = ours(empty, True)
        return {
            "siglip_image_embedding_unnormalized": model.apply({"params": params}, x, method="encode_image"),
            "siglip_layer_maps_patch": maps,
            "siglip_layer_maps_patch_empty": empty_maps,
            "siglip_layer_pooled_normalized": unit_norm(jnp.stack(pooled, 1)),
            "siglip_empty_minmax": upsampled(empty_maps, (14, 14)),
            "siglip_corr_sum_after_correction": ours(empty, False) * 2,  # the mean of 2 layers
            "siglip_corr_minmax_patch": corrected,
            "siglip_nocorr_minmax_patch": ours(None, True),
            "siglip_corr_final_map_img0_prompt0": resize(corrected[0, 0], (224, 224), "bilinear"),
        }

    x = normalise(inputs["images_uint8_hwc"], 0.5, 0.5)
    text, empty = inputs["siglip_text_embedding"], inputs["siglip_empty_embedding"][0]
    compare(compute, f"{CASE}/siglip", params, x, text, empty)
