"""The options a Captum user reaches for, against definitions written here in torch on a random timm ViT.

Captum's `LayerIntegratedGradients` at the patch embedding (a baseline image enters as its patch embedding),
`InputXGradient` and `IntegratedGradients` on the image tensor are written from their definitions with torch
autograd, using OUR Riemann rule (right sum, α_k = k/m; Captum's default is Gauss–Legendre, which would differ by
the quadrature only). Also: per-channel maps sum to the channel-summed maps; SmoothGrad's key and σ; the
`smoothgrad(reduce="grad")` refusal on mean-centred token streams (decided by `Capabilities.centred_tokens`, which
is checked against the gradient itself); LeGrad's official upsample-then-min-max; the preset names
('attnlrp', ...) accepted by `attribution`; LXT's CP-LRP (identity rule on GELU) = our `decompx` on a plain MLP.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import images, tiny_model
from test_loading import save_timm, timm_model

from libra_jax import attribution
from libra_jax.methods import api, integrated
from libra_jax.methods.legrad import layer_maps
from libra_jax.rules import PRESETS
from libra_jax.weights.loading import load

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = pytest.mark.usefixtures("highest_precision")

NAME, KWARGS = "vit_tiny_patch16_224", dict(depth=2, num_classes=7, img_size=32)
STEPS = 8
TOL = 1e-4
LOGIT = PRESETS["vanilla_logit"]


@pytest.fixture(scope="module")
def timm_vit(tmp_path_factory):
    """(timm model, our model, params, x (2, 32, 32, 3) in the normalised range, y)."""
    ref = timm_model(NAME, **KWARGS)
    model, params = load(NAME, checkpoint=save_timm(ref, tmp_path_factory.mktemp("vit") / "vit.safetensors"), **KWARGS)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    return ref, model, params, x, np.array([2, 5])


def black(model, like: torch.Tensor) -> torch.Tensor:
    """Black pixels in the model's normalisation, (B, C, H, W) like `like`."""
    mean, std = np.asarray(model.data_config.mean), np.asarray(model.data_config.std)
    return torch.from_numpy(-mean / std).double().view(1, -1, 1, 1).expand_as(like).clone()


def nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))).double()


def logit_of(ref, y):
    """images (B, C, H, W) → Σ_b logit[b, y_b] (each example's gradient is its own)."""
    return lambda img: ref(img)[torch.arange(len(y)), torch.from_numpy(y)].sum()


def riemann_ig(f, inp: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """(inp − base) · (1/m) Σ_k ∇f(base + k/m·(inp − base)), m = STEPS."""
    total = torch.zeros_like(inp)
    for k in range(1, STEPS + 1):
        point = (base + k / STEPS * (inp - base)).requires_grad_(True)
        total += torch.autograd.grad(f(point), point)[0]
    return (inp - base) * total / STEPS


def torch_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W), reflected borders, kernel radius ⌈3σ⌉ (torchvision's kernel)."""
    r = int(np.ceil(3 * sigma))
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=img.dtype) ** 2) / (2 * sigma**2))
    k = k / k.sum()
    c = img.shape[1]
    out = F.conv2d(F.pad(img, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(out, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)


def layer_ig_at_patch_embed(ref, x: torch.Tensor, base: torch.Tensor, y) -> np.ndarray:
    """Captum `LayerIntegratedGradients(model, model.patch_embed)` with baseline image `base`, channel-summed:
    the patch embedding's output is interpolated from that of `base` to that of x. (B, gh, gw)."""
    with torch.no_grad():
        hi, lo = ref.patch_embed(x), ref.patch_embed(base)
    replaced = {}
    handle = ref.patch_embed.register_forward_hook(lambda m, i, o: replaced["value"])

    def f(tokens):
        replaced["value"] = tokens
        return logit_of(ref, y)(x)

    try:
        ig = riemann_ig(f, hi, lo).sum(-1)
    finally:
        handle.remove()
    g = ref.patch_embed.grid_size
    return ig.reshape(len(y), *g).numpy()


def ours(model, params, x, y, method, rules=LOGIT, **options):
    fn = jax.jit(attribution(model, method, rules=rules, **options))
    return jax.tree.map(np.asarray, fn(params, jnp.asarray(x), jnp.asarray(y)))


@pytest.mark.parametrize("baseline", ["black", "blur", "array"])
def test_token_ig_equals_captum_layer_ig_at_the_patch_embedding(timm_vit, baseline):
    ref, model, params, x, y = timm_vit
    ref = ref.double()
    images_ = nchw(x)
    if baseline == "black":
        base_t = black(model, images_)
        option = "black"
    elif baseline == "blur":
        base_t = torch_blur(images_, integrated.BLUR_SIGMA)
        option = "blur"
    else:
        option = np.random.default_rng(1).uniform(-1, 1, x.shape).astype(np.float32)  # one baseline per example
        base_t = nchw(option)
    expected = layer_ig_at_patch_embed(ref, images_, base_t, y)
    tokens = ours(model, params, x, y, "ig", steps=STEPS, baseline=option, return_tokens=True)
    assert np.abs(expected).max() > 1e-3
    got = api.to_grid(tokens, model)
    np.testing.assert_allclose(got, expected, atol=TOL * np.abs(expected).max(), rtol=0)
    # the class token's embedding is the same at the input and at an image baseline: no IG there
    np.testing.assert_allclose(tokens[:, 0], 0.0, atol=1e-6)


def test_pixel_ixg_and_ig_equal_captum_on_the_image(timm_vit):
    ref, model, params, x, y = timm_vit
    ref = ref.double()
    images_ = nchw(x).requires_grad_(True)
    grad = torch.autograd.grad(logit_of(ref, y)(images_), images_)[0]
    ixg = (images_ * grad).detach()  # Captum InputXGradient
    ig = riemann_ig(
        logit_of(ref, y), images_.detach(), black(model, images_)
    )  # Captum IntegratedGradients, baselines=black
    options = dict(space="pixels", steps=STEPS, baseline="black")
    per_channel = ours(model, params, x, y, ["ixg", "ig"], per_channel=True, **options)
    summed = ours(model, params, x, y, ["ixg", "ig"], **options)
    for method, expected in (("ixg", ixg), ("ig", ig)):
        channels = expected.permute(0, 2, 3, 1).numpy()  # (B, H, W, C)
        got = per_channel[method]
        assert got.shape == (2, 32, 32, 3)
        np.testing.assert_allclose(got, channels, atol=TOL * np.abs(channels).max(), rtol=0, err_msg=method)
        np.testing.assert_allclose(summed[method], got.sum(-1), atol=1e-5 * np.abs(got).max(), rtol=0)


@pytest.fixture(scope="module")
def tiny():
    model, params = tiny_model()
    return model, params, images(model, 2), jnp.array([1, 3])


def test_per_channel_maps_sum_to_the_maps(tiny):
    model, params, x, y = tiny
    methods, options = ["ixg", "ig", "smoothgrad"], dict(steps=3, samples=3)
    summed = jax.jit(attribution(model, methods, **options))(params, x, y)
    grid = jax.jit(attribution(model, methods, per_channel=True, **options))(params, x, y)
    tokens = jax.jit(attribution(model, methods, per_channel=True, return_tokens=True, **options))(params, x, y)
    for method in methods:
        assert grid[method].shape == (2, 4, 4, 32) and tokens[method].shape == (2, 17, 32), method
        np.testing.assert_allclose(grid[method].sum(-1), summed[method], atol=1e-6, rtol=1e-5, err_msg=method)
        from_tokens = api.to_grid(jnp.moveaxis(tokens[method], -1, 0), model)
        np.testing.assert_array_equal(from_tokens, jnp.moveaxis(grid[method], -1, 0))


def test_smoothgrad_key_and_sigma(tiny):
    model, params, x, y = tiny

    # a key per batch: built inside the traced function, one compilation for every key
    @jax.jit
    def per_key(key, sigma):
        return attribution(model, ["smoothgrad", "ixg"], samples=3, noise_key=key, sigma=sigma)(params, x, y)

    key = jax.random.key(5)
    same = per_key(key, 0.3)["smoothgrad"]
    np.testing.assert_array_equal(same, per_key(jax.random.key(5), 0.3)["smoothgrad"])
    assert np.abs(same - per_key(jax.random.key(6), 0.3)["smoothgrad"]).max() > 1e-3 * np.abs(same).max()
    no_noise = per_key(key, 0.0)
    np.testing.assert_allclose(no_noise["smoothgrad"], no_noise["ixg"], atol=1e-6, rtol=1e-5)
    # the default σ is noise_level × the range of the example's input; a raw key works as a typed one
    h0 = model.apply({"params": params}, x[:1], method="embed")
    sigma = 0.2 * float(h0.max() - h0.min())
    relative = jax.jit(attribution(model, "smoothgrad", samples=3, seed=5, noise_level=0.2))(params, x[:1], y[:1])
    absolute = per_key(jax.random.wrap_key_data(jax.random.PRNGKey(5)), sigma)["smoothgrad"][:1]
    np.testing.assert_allclose(relative, absolute, atol=1e-6, rtol=1e-5)


def test_smoothgrad_grad_is_refused_where_the_channel_sum_vanishes(tiny):
    model, params, x, y = tiny
    flat, flat_params = tiny_model(final_norm=False, global_pool="avg")
    for m, p, centred in ((model, params, True), (flat, flat_params, False)):
        assert m.capabilities.centred_tokens is centred
        g = jax.jit(attribution(m, "smoothgrad", reduce="grad", per_channel=True, sigma=0.0, samples=1))(p, x, y)
        ratio = float(jnp.abs(g.sum(-1)).max() / jnp.abs(g).max())
        assert (ratio < 1e-5) is centred, ratio  # the capability says what the gradient shows
    with pytest.raises(ValueError, match="reduce='ixg'"):
        attribution(model, "smoothgrad", reduce="grad")(params, x, y)
    summed = jax.jit(attribution(flat, "smoothgrad", reduce="grad", sigma=0.0, samples=1))(flat_params, x, y)
    np.testing.assert_allclose(summed, g.sum(-1), atol=1e-6, rtol=1e-5)  # accepted where the sum does not vanish


def test_legrad_official_postprocess_upsamples_before_the_minmax(tiny):
    model, params, x, y = tiny
    got = jax.jit(attribution(model, "legrad", target="logit", postprocess="official", layer_index=0))(params, x, y)
    assert got.shape == (2, 32, 32)
    per_layer = jax.vmap(
        lambda xi, yi: layer_maps(model, params, xi, yi, PRESETS["libra"].replace(target="logit"), lambda z, c: z[c], 0)
    )(x, y)
    grid = torch.from_numpy(np.asarray(api.to_grid(per_layer, model), np.float64))  # (B, L, 4, 4)
    total = F.interpolate(grid, size=(32, 32), mode="bilinear", align_corners=False).sum(1)  # official order
    lo, hi = total.amin((-2, -1), keepdim=True), total.amax((-2, -1), keepdim=True)
    np.testing.assert_allclose(got, ((total - lo) / (hi - lo)).numpy(), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="postprocess"):
        attribution(model, "legrad", postprocess="upsampled")(params, x, y)


@pytest.mark.parametrize("name", ["attnlrp", "cp_lrp", "decompx", "libra_gradcam"])
def test_preset_names_are_accepted(tiny, name):
    model, params, x, y = tiny
    base, preset = api.resolve_method(name)
    expected = jax.jit(attribution(model, base, rules=preset))(params, x, y)
    both = jax.jit(attribution(model, [name, "rollout"]))(params, x, y)  # the list runs under the implied preset
    np.testing.assert_array_equal(both[name], expected)
    attribution(model, name, rules=preset)  # the same rules named: accepted
    with pytest.raises(ValueError, match="leave rules out"):
        attribution(model, name, rules="vanilla")


def test_names_implying_two_presets_are_refused(tiny):
    with pytest.raises(ValueError, match="one call per preset"):
        attribution(tiny[0], ["attnlrp", "decompx"])


def test_pixel_space_is_refused_where_it_means_nothing(tiny):
    model, params, x, y = tiny
    with pytest.raises(ValueError, match="separate"):
        attribution(model, ["ixg", "gradcam"], space="pixels")
    with pytest.raises(ValueError, match="pixel maps"):
        attribution(model, "ixg", space="pixels", return_tokens=True)
    with pytest.raises(ValueError, match="space must be"):
        attribution(model, "ixg", space="pixel")


class _Detach(torch.nn.Module):
    def forward(self, a):
        return a.detach()


class _IdentityGelu(torch.nn.Module):
    """LXT's identity rule on GELU: x·(gelu(x)/x) with the ratio constant."""

    def forward(self, a):
        return a * (F.gelu(a) / a).detach()


class _ConstantStdLayerNorm(torch.nn.Module):
    def __init__(self, ln):
        super().__init__()
        self.ln = ln

    def forward(self, a):
        centred = a - a.mean(-1, keepdim=True)
        std = torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + self.ln.eps).detach()
        return centred / std * self.ln.weight + self.ln.bias


def test_lxt_cp_lrp_is_our_decompx_on_a_plain_mlp(timm_vit):
    """CP-LRP as LXT builds it (softmax, LayerNorm σ and GELU's x-ratio constant), input × gradient at h₀."""
    ref, model, params, x, y = timm_vit
    cp = timm_model(NAME, **KWARGS).double()  # the same seeded weights
    cp.norm = _ConstantStdLayerNorm(cp.norm)
    for block in cp.blocks:
        block.attn.fused_attn = False
        block.attn.attn_drop = _Detach()  # applied to softmax(qkᵀ) right after it
        block.mlp.act = _IdentityGelu()
        block.norm1, block.norm2 = _ConstantStdLayerNorm(block.norm1), _ConstantStdLayerNorm(block.norm2)
    tokens = {}

    def keep(module, inputs, output):
        output.retain_grad()
        tokens["h0"] = output

    cp.norm_pre.register_forward_hook(keep)  # an Identity: its output is h₀ (patches + cls + position)
    logit_of(cp, y)(nchw(x)).backward()
    expected = (tokens["h0"] * tokens["h0"].grad).sum(-1)[:, 1:].reshape(2, 2, 2).detach().numpy()
    got = np.asarray(jax.jit(attribution(model, "decompx"))(params, jnp.asarray(x), jnp.asarray(y)))
    np.testing.assert_allclose(got, expected, atol=TOL * np.abs(expected).max(), rtol=0)
    plain_gelu = ours(model, params, x, y, "ixg", rules=PRESETS["cp_lrp"].replace(target="logit"))
    assert np.abs(plain_gelu - expected).max() > 1e-2 * np.abs(expected).max()  # our cp_lrp is another rule


def test_legrad_official_postprocess_equals_the_official_clip_maps():
    from test_legrad_clip import COSINE, OPENAI_MEAN, OPENAI_STD, clip_model, golden, normalise

    _, inputs, outputs = golden()
    model, params = clip_model()
    x = normalise(inputs["images_uint8_hwc"][:1], OPENAI_MEAN, OPENAI_STD)
    text = model.apply({"params": params}, jnp.asarray(inputs["text_tokens"]), method="encode_text")
    text = text / jnp.linalg.norm(text, axis=-1, keepdims=True)
    fn = attribution(model, "legrad", rules="vanilla", target=COSINE, postprocess="official")
    got = np.asarray(fn(params, jnp.asarray(x), text[None]))[0]  # (P, H, W): one map per prompt
    np.testing.assert_allclose(got, outputs["final_map_default_img0"], atol=1e-4, rtol=0)
