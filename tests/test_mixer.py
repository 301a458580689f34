"""MLP-Mixer / gMixer (`libra_jax.models.mixer`): timm parity, golden parity, completeness, method wiring.

* Forward parity: random-init, reduced-size upstream timm `MlpMixer`s (built as the `mixer_b16_224`
  / `gmixer_24_224` entry points build them, with fewer and narrower blocks), saved as safetensors
  and loaded through `libra_jax.load` (registry → converter → Flax model): logits within 1e-4.
* Golden parity: the official LibraGrad code's `gmixer` case, every preset file and every key in it
  (tolerances as tests/test_golden.py).
* Completeness: under `libra_logit`, Σ_t FullGrad_l + (the token-MLP fc1 bias maps of blocks ≥ l,
  which no token holds) equals the logit to float precision, for every l; vanilla is incomplete.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from golden import GOLDEN_PRESETS, assert_golden, golden_dir, ill_conditioned, in_float64, load_golden_case, our_maps
from helpers import randomize

from libra_jax import evaluate, load
from libra_jax.methods import api, core, lrp, maps
from libra_jax.metrics import completeness_error, faithfulness
from libra_jax.models import MixerConfig, MlpMixer
from libra_jax.rules import get_rules
from libra_jax.weights.formats import save_checkpoint
from libra_jax.weights.keymap import CheckpointMismatchError
from libra_jax.weights.registry import resolve

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
safetensors_torch = pytest.importorskip("safetensors.torch")

pytestmark = pytest.mark.usefixtures("highest_precision")

GOLDEN_CASE = "gmixer"
PRESETS = {**GOLDEN_PRESETS, "WO-MLP": "wo_gate"}  # gMixer is gated: the official code adds the −Gate ablation

SMALL = dict(num_blocks=2, embed_dim=64, num_classes=7, img_size=64)  # 16 px patches → 16 tokens
# name → the architecture kwargs timm's entry point passes to MlpMixer besides SMALL's.
ARCHS = {
    "mixer": ("mixer_b16_224", dict(patch_size=16)),
    "gmixer": (
        "gmixer_24_224",
        dict(patch_size=16, mlp_ratio=(1.0, 4.0), mlp_layer=timm.layers.GluMlp, act_layer=torch.nn.SiLU),
    ),
}
TINY = dict(img_size=32, patch_size=8, embed_dim=32, num_blocks=2, num_classes=5, mlp_ratio=(1.0, 4.0))
TINY_MODELS = {"mixer": dict(mlp_layer="mlp", act="gelu"), "gmixer": dict(mlp_layer="glu", act="silu")}


def timm_mixer(arch_kwargs: dict, seed: int = 0) -> torch.nn.Module:
    """An upstream timm MlpMixer with re-randomised biases, norm affines, head and GLU gate halves.

    timm initialises the GLU gate half of fc1 to std 1e-6 (gate ≈ constant); it is redrawn with the
    value half's std so that a swapped gate/value split changes the logits.
    """
    torch.manual_seed(seed)
    model = timm.models.mlp_mixer.MlpMixer(**SMALL, **arch_kwargs).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for key, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if key.endswith("bias"):
                p.copy_(0.1 * noise)
            elif p.ndim == 1:  # norm γ
                p.copy_(1 + 0.2 * noise)
            elif key.startswith("head"):
                p.copy_(0.2 * noise)
        for m in model.modules():
            if isinstance(m, timm.layers.GluMlp):
                w = m.fc1.weight
                half = w.shape[0] // 2
                w[half:] = w[:half].std() * torch.randn(w[half:].shape, generator=g)
    return model


def save_timm(model: torch.nn.Module, path) -> str:
    safetensors_torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


def nchw_images(img_size: int, batch: int = 2, seed: int = 123) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, img_size, img_size)).astype(np.float32)


@pytest.fixture(scope="module", params=sorted(ARCHS))
def loaded(request, tmp_path_factory):
    """(name, timm model, our model, params, path) of a reduced random Mixer loaded from its safetensors."""
    name, arch_kwargs = ARCHS[request.param]
    ref = timm_mixer(arch_kwargs)
    path = save_timm(ref, tmp_path_factory.mktemp(request.param) / "mixer.safetensors")
    model, params = load(name, checkpoint=path, **SMALL)
    return request.param, ref, model, params, path


def test_forward_parity_with_timm(loaded):
    family, ref, model, params, _ = loaded
    assert isinstance(model, MlpMixer)
    x = nchw_images(SMALL["img_size"])
    with torch.no_grad():
        want = ref(torch.from_numpy(x)).numpy()
    assert want.shape == (2, 7) and np.abs(want).max() > 0.1
    logits, aux = model.apply({"params": params}, x.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(logits, want, atol=1e-4, rtol=0, err_msg=family)
    assert aux["tokens"].shape == (2, 16, SMALL["embed_dim"]) and len(aux["blocks"]) == SMALL["num_blocks"]


def test_registry_agrees_with_timm():
    """Every registered Mixer architecture equals the model timm's entry point builds (meta device)."""
    for name in ("mixer_s32_224", "mixer_b16_224", "mixer_l16_224", "gmixer_12_224", "gmixer_24_224"):
        with torch.device("meta"):
            m = timm.create_model(name)
        c = resolve(name).config
        b = m.blocks[0]
        assert isinstance(c, MixerConfig), name
        assert (c.img_size, c.patch_size) == (tuple(m.stem.img_size), tuple(m.stem.patch_size)), name
        assert (c.embed_dim, c.num_blocks, c.num_classes, c.global_pool) == (
            m.embed_dim,
            len(m.blocks),
            m.num_classes,
            m.global_pool,
        ), name
        assert c.mlp_hidden == (b.mlp_tokens.fc1.out_features, b.mlp_channels.fc1.out_features), name
        assert c.mlp_layer == ("glu" if isinstance(b.mlp_tokens, timm.layers.GluMlp) else "mlp"), name
        assert c.act == ("silu" if isinstance(b.mlp_tokens.act, torch.nn.SiLU) else "gelu"), name
        assert c.norm_eps == b.norm1.eps and c.num_prefix_tokens == 0, name


def test_checkpoint_key_diff_is_loud(loaded, tmp_path):
    _, ref, *_ = loaded
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    del state["blocks.1.mlp_tokens.fc1.bias"]
    state["blocks.0.mlp_tokens.norm.weight"] = torch.ones(3)
    path = tmp_path / "edited.safetensors"
    safetensors_torch.save_file(state, str(path))
    listed = r"(?s)- blocks_1/mlp_tokens/fc1/bias.*\+ blocks.0.mlp_tokens.norm"  # missing, then unexpected
    with pytest.raises(CheckpointMismatchError, match=listed):
        load(ARCHS[loaded[0]][0], checkpoint=path, **SMALL)


def test_libra_checkpoint_round_trip(loaded, tmp_path):
    _, _, model, params, _ = loaded
    path = save_checkpoint(tmp_path / "mixer.safetensors", model, params)
    again, params2 = load(path)
    assert again.config == model.config and isinstance(again, MlpMixer)
    x = jnp.asarray(nchw_images(SMALL["img_size"]).transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(again.apply({"params": params2}, x)[0], model.apply({"params": params}, x)[0])


# ---- golden parity: the official code's gMixer case ----


@pytest.fixture(scope="module")
def golden():
    """(model, params, images, float32 maps, float64 maps) by preset: one compile per dtype."""
    with jax.default_matmul_precision("highest"):
        model, params, images, labels, _ = load_golden_case(GOLDEN_CASE)
        rules = {p: get_rules(r) for p, r in PRESETS.items()}
        ours32 = our_maps(model, params, images, labels, rules)
        exact = in_float64(lambda p, x: our_maps(model, p, x, labels, rules), params, images)
    return model, params, images, ours32, exact


def test_golden_logits_and_patches(golden):
    model, params, images, _, _ = golden

    def forward(p, x):
        logits, aux = model.apply({"params": p}, x)
        return {"logits": logits, "patches": aux["tokens"]}

    inputs = np.load(golden_dir(GOLDEN_CASE) / "inputs.npz")
    with jax.default_matmul_precision("highest"):
        ours32 = jax.tree.map(np.asarray, forward(params, jnp.asarray(images)))
        exact = in_float64(forward, params, images)
    assert_golden(ours32, exact, {k: inputs[k] for k in ("logits", "patches")}, GOLDEN_CASE, slack={})


def test_every_golden_preset_is_compared():
    files = {p.stem for p in golden_dir(GOLDEN_CASE).glob("*.npz")} - {"inputs"}
    assert files == set(PRESETS)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_golden_preset_maps(golden, preset):
    *_, ours32, exact = golden
    gold = np.load(golden_dir(GOLDEN_CASE) / f"{preset}.npz")
    assert_golden(ours32[preset], exact[preset], gold, f"{GOLDEN_CASE}/{preset}")
    assert not ill_conditioned(exact[preset])  # no rounding allowance anywhere in the gMixer case


# ---- completeness and method wiring on tiny random Mixers ----


@pytest.fixture(scope="module", params=sorted(TINY_MODELS))
def tiny(request):
    """(model, params, images (2, H, W, 3)) of a tiny random Mixer with O(1) biases."""
    model = MlpMixer(MixerConfig(**TINY, **TINY_MODELS[request.param]))
    h, w = model.config.img_size
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((h, w, 3)))
    # O(1) biases make the token-MLP fc1 bias maps (which no token holds) visible in the sums.
    params = randomize(variables["params"], jax.random.PRNGKey(1), scale=1.0)
    return model, params, jax.random.uniform(jax.random.PRNGKey(2), (2, h, w, 3), minval=-1.0, maxval=1.0)


def fullgrad_sums(model, params, x, preset: str):
    """Per image and layer l: (Σ_t FullGrad_l, Σ_{k≥l} unassigned bias maps), and f."""
    rules = get_rules(preset)
    y = jnp.argmax(model.apply({"params": params}, x)[0], -1)

    def one(xi, yi):
        rec = core.single_pass(model, params, xi, yi, rules, core.target_function(rules, None))
        unassigned = maps.bias_groups(rec, model)["unassigned"]
        tails = jnp.stack([sum(unassigned[layer:]) for layer in range(len(unassigned))])
        return jnp.stack([m.sum() for m in maps.fullgrad_layers(rec, model)]), tails, rec["target"]

    return jax.jit(jax.vmap(one))(x, y)


def test_fullgrad_is_complete_under_libra_logit(tiny):
    model, params, x = tiny
    sums, unassigned, f = (np.asarray(a) for a in fullgrad_sums(model, params, x, "libra_logit"))
    bound = 2e-6 * np.abs(f)[:, None] + 1e-7
    residual = sums + unassigned - f[:, None]
    assert (np.abs(residual) <= bound).all(), f"max |Σ FullGrad_l + U_l − f| = {np.abs(residual).max():.2e}"
    # the test can fail: without the unplaceable token-MLP fc1 biases the sums are off by far more
    assert (np.abs(unassigned[:, 0]) > 10 * bound[:, 0]).all()


def test_completeness_metric_counts_the_unassigned_biases(tiny):
    model, params, x = tiny
    err = completeness_error(model, params, x, method="fullgrad", rules="libra_logit")
    assert (np.abs(err["residual"]) <= 2e-6 * np.abs(err["target"]) + 1e-7).all(), err["residual"]
    y = jnp.argmax(model.apply({"params": params}, x)[0], -1)
    plain, with_u = (
        api.attribution(model, "fullgrad", rules="libra_logit", return_tokens=True, unassigned_bias=u)(params, x, y)
        for u in (False, True)
    )
    np.testing.assert_array_equal(plain[:, 1:], with_u[:, 1:])  # the option only adds U_b to token 0
    assert (np.abs(plain.sum(-1) - err["target"]) > 1e-5 * np.abs(err["target"])).all()  # U_b matters


def test_vanilla_fullgrad_is_incomplete(tiny):
    model, params, x = tiny
    sums, unassigned, f = (np.asarray(a) for a in fullgrad_sums(model, params, x, "vanilla_logit"))
    assert (np.abs(sums + unassigned - f[:, None]) > 1e-3 * np.abs(f)[:, None]).all()


def test_gradient_methods_run_and_attention_methods_refuse(tiny):
    model, params, x = tiny
    y = jnp.array([0, 3])
    out = api.attribution(model, ["ixg", "fullgrad", "fullgrad_plus", "gradcam"], rules="libra")(params, x, y)
    assert {k: v.shape for k, v in out.items()} == dict.fromkeys(out, (2, *model.config.grid_size))
    for method in maps.ATTENTION_METHODS:
        with pytest.raises(ValueError, match="no class token"):
            api.attribution(model, method)
    with pytest.raises(ValueError, match="no attention"):
        api.attribution(model, "attcat")  # refused when the function is built, before any call
    for method in ("transformer_attribution", "attn_gradcam", "legrad"):  # Chefer / LeGrad: ViT only
        with pytest.raises(ValueError, match="Vision ?Transformer"):
            api.attribution(model, method)
    assert evaluate.supported_methods(model, api.METHODS) == [
        m for m in api.METHODS if m not in (*maps.ATTENTION_METHODS, "attcat", *lrp.MULTI_PASS, "legrad")
    ]


def test_faithfulness_zeroes_tokens(tiny):
    model, params, x = tiny
    patch_maps = api.attribution(model, "ixg", rules="libra")(params, x, jnp.array([0, 3]))
    curves = faithfulness.deletion_curves(model, params, x, patch_maps, jnp.array([0, 3]), ratios=(0.5,))
    assert model.layout.droppable is False and curves["mif_prob"].shape == (1, 2)
    zeroed = faithfulness.deletion_curves(model, params, x, patch_maps, jnp.array([0, 3]), ratios=(0.5,), mode="zero")
    np.testing.assert_array_equal(curves["mif_prob"], zeroed["mif_prob"])
