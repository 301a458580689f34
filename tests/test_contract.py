"""The model contract (libra_jax/models/contract.py): a toy architecture written here against the contract
alone runs every single-pass method, IG and the faithfulness metric, and the library's models satisfy it."""

from __future__ import annotations

import dataclasses
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import libra_jax
from libra_jax.methods import api, core, maps
from libra_jax.metrics import completeness_error, faithfulness
from libra_jax.models import MixerConfig, MlpMixer, VisionTransformer, ViTConfig, contract
from libra_jax.models.image_text import ImageTextModel
from libra_jax.models.layers import Attention, LayerNorm, Linear, Mlp, probe
from libra_jax.models.text import TextConfig
from libra_jax.rules import PRESETS, Rules

VANILLA = PRESETS["vanilla"]
IMG, PATCH, DIM, CLASSES, BATCH = 8, 4, 8, 3, 2
GRID = (IMG // PATCH, IMG // PATCH)


class ToyBlock(nn.Module):
    """Pre-norm attention + MLP block; its probes are named as the contract says ('out', 'attn/attn')."""

    @nn.compact
    def __call__(self, x: jax.Array, rules: Rules) -> tuple[jax.Array, contract.BlockAux]:
        a, attn = Attention(2, name="attn")(LayerNorm(name="norm1")(x, rules), rules)
        post_attn = x + a
        out = probe(self, "out", post_attn + Mlp(2 * DIM, name="mlp")(LayerNorm(name="norm2")(post_attn, rules), rules))
        return out, contract.BlockAux(out=out, attn=attn, post_attn=post_attn)


class ToyViT(nn.Module):
    """A 2-block class-token ViT that knows nothing of the library's models: only the contract.

    `sequence=True` reports no patch grid, so maps come out per token (B, N) as for a text model.
    """

    sequence: bool = False

    @property
    def layout(self) -> contract.TokenLayout:
        return contract.TokenLayout(num_prefix=1, grid=None if self.sequence else GRID)

    @property
    def capabilities(self) -> contract.Capabilities:
        return contract.Capabilities(depth=2, num_classes=CLASSES, attention=True, class_token=True)

    @nn.nowrap
    def check_inputs(self, inputs: jax.Array) -> None:
        if inputs.shape[1:] != (IMG, IMG, 3):
            raise ValueError(f"toy images are (B, {IMG}, {IMG}, 3); got {inputs.shape}")

    @nn.nowrap
    def token_mask(self, inputs: jax.Array) -> None:
        return None

    @staticmethod
    def bias_group(path: str) -> tuple[str, int | None]:
        top = path.split("/")[0]
        if top.startswith("blocks_"):
            return "block", int(top.split("_")[1])
        return ("end", None) if path == "norm" else ("head", None)

    def setup(self):
        self.patch = nn.Dense(DIM, name="patch")  # before h₀: its bias is part of the input, not probed
        self.cls = self.param("cls", nn.initializers.normal(1.0), (1, DIM))
        self.pos = self.param("pos", nn.initializers.normal(1.0), (1 + GRID[0] * GRID[1], DIM))
        self.blocks = [ToyBlock(name=f"blocks_{i}") for i in range(2)]
        self.norm = LayerNorm(name="norm")
        self.head = Linear(CLASSES, name="head")

    def embed(self, image: jax.Array) -> jax.Array:
        lead = image.shape[:-3]
        patches = image.reshape(*lead, GRID[0], PATCH, GRID[1], PATCH, 3)
        patches = jnp.moveaxis(patches, -4, -3).reshape(*lead, GRID[0] * GRID[1], PATCH * PATCH * 3)
        cls = jnp.broadcast_to(self.cls, (*lead, 1, DIM))
        return jnp.concatenate([cls, self.patch(patches)], axis=-2) + self.pos

    def forward_head(self, pooled: jax.Array, rules: Rules = VANILLA, dist: jax.Array | None = None) -> jax.Array:
        return self.head(pooled)

    def forward_tokens(self, tokens, rules: Rules = VANILLA, positions=None, mask=None):
        tokens = probe(self, "tokens", tokens)
        x, blocks = tokens, []
        for block in self.blocks:
            x, block_aux = block(x, rules)
            blocks.append(block_aux)
        x = self.norm(x, rules)
        aux = contract.Aux(tokens=tokens, blocks=blocks, features=x, pooled=x[..., 0, :])
        return self.forward_head(x[..., 0, :], rules), aux

    def __call__(self, image: jax.Array, rules: Rules = VANILLA):
        return self.forward_tokens(self.embed(image), rules)


@pytest.fixture(scope="module")
def toy():
    model = ToyViT()
    x = jax.random.normal(jax.random.PRNGKey(0), (BATCH, IMG, IMG, 3))
    params = model.init(jax.random.PRNGKey(1), x)["params"]
    # non-zero biases everywhere, so a bias map that is lost or counted twice shows in the completeness sum
    params = jax.tree.map(lambda p: p + 0.1 * jnp.cos(jnp.arange(p.size).reshape(p.shape)), params)
    return model, params, x, jnp.array([0, 2])


def _protocol_members(protocol) -> dict[str, object]:
    names = {n for c in protocol.__mro__ if c.__module__ == contract.__name__ for n in vars(c)}
    return {n: inspect.getattr_static(protocol, n) for n in names if not n.startswith("_") or n == "__call__"}


def _satisfies(model, protocol) -> list[str]:
    """What `model` lacks of `protocol`, read off the class (no isinstance): a member, enough positional
    parameters, a keyword parameter the library passes by name, or a property's type."""
    problems = []
    for name, member in _protocol_members(protocol).items():
        if not hasattr(type(model), name):
            problems.append(f"no {name}")
        elif isinstance(member, property):
            want = inspect.get_annotations(member.fget)["return"]
            if type(getattr(model, name)).__name__ != want:
                problems.append(f"{name} is not a {want}")
        else:
            want = [p for p in inspect.signature(member).parameters.values() if p.name != "self"]
            have = [p for p in inspect.signature(getattr(type(model), name)).parameters.values() if p.name != "self"]
            if len(have) < sum(p.default is p.empty for p in want):
                problems.append(f"{name} takes {len(have)} arguments")
            names = {p.name for p in have}
            problems += [f"{name} has no {p.name!r}" for p in want if p.default is not p.empty and p.name not in names]
    return problems


@pytest.mark.parametrize(
    "model",
    [
        ToyViT(),
        VisionTransformer(ViTConfig(img_size=32, patch_size=16, depth=1, num_heads=2, embed_dim=8)),
        MlpMixer(MixerConfig(img_size=32, patch_size=16, num_blocks=1, embed_dim=8)),
        MlpMixer(MixerConfig(img_size=32, patch_size=16, num_blocks=1, embed_dim=8, mlp_layer="glu", act="silu")),
        ImageTextModel(
            ViTConfig(img_size=32, patch_size=16, depth=1, num_heads=2, embed_dim=8, num_classes=0),
            text_config=TextConfig(vocab_size=10, context_length=4, width=8, heads=2, layers=1, embed_dim=4),
        ),
    ],
    ids=["toy", "vit", "mixer", "gmixer", "image_text"],
)
def test_models_satisfy_the_contract(model):
    assert _satisfies(model, contract.Model) == []
    if model.capabilities.blockwise:
        assert _satisfies(model, contract.BlockwiseModel) == []
    if not model.capabilities.relevance_gaps:
        assert _satisfies(model, contract.RelevanceModel) == []


def test_a_model_missing_a_member_is_caught():
    class RenamedHead(ToyViT):
        def forward_head(self, features, rules=VANILLA):
            return self.head(features)

    assert _satisfies(RenamedHead(), contract.Model) == ["forward_head has no 'dist'"]
    assert {"no embed", "no layout", "no forward_tokens"} <= set(_satisfies(object(), contract.Model))


def test_every_single_pass_method_runs_on_the_toy(toy):
    model, params, x, y = toy
    names = [m for m in maps.SINGLE_PASS if api.supports(model, m)]
    assert names == list(maps.SINGLE_PASS)  # a class token and attention: everything applies
    with jax.default_matmul_precision("highest"):
        out = jax.jit(libra_jax.attribution(model, names, rules="libra"))(params, x, y)
        tokens = jax.jit(libra_jax.attribution(model, "ixg", rules="libra", return_tokens=True))(params, x, y)

        # IxG_0 from the probes equals h₀ · ∂f/∂h₀ taken directly through forward_tokens
        def direct(xi, yi):
            h0 = model.apply({"params": params}, xi, method="embed")

            def prob(h):
                logits = model.apply({"params": params}, h, PRESETS["libra"], method="forward_tokens")[0]
                return jax.nn.softmax(logits)[yi]

            return (h0 * jax.grad(prob)(h0)).sum(-1)

        expected = jax.vmap(direct)(x, y)
    assert {k: v.shape for k, v in out.items()} == dict.fromkeys(names, (BATCH, *GRID))
    assert all(bool(jnp.isfinite(v).all()) for v in out.values())
    np.testing.assert_allclose(tokens, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(out["ixg"], tokens[:, 1:].reshape(BATCH, *GRID))


def test_fullgrad_is_complete_on_the_toy(toy):
    """Σ_t FullGrad_l = f at every block input l under `libra_logit`: fails if a probe or a bias group is
    wired wrong (a block's biases counted at the wrong layer break the sums of the layers in between)."""
    model, params, x, y = toy
    rules = PRESETS["libra_logit"]
    target = core.target_function(rules, None)

    def per_layer(xi, yi):
        rec = core.single_pass(model, params, xi, yi, rules, target)
        return jnp.stack([m.sum() for m in maps.fullgrad_layers(rec, model)]), rec["target"]

    with jax.default_matmul_precision("highest"):
        sums, f = jax.jit(jax.vmap(per_layer))(x, y)
        err = completeness_error(model, params, x, method="fullgrad", rules="libra_logit")
        vanilla = completeness_error(model, params, x, method="fullgrad", rules="vanilla_logit")
    scale = max(float(jnp.abs(f).max()), 1.0)
    np.testing.assert_allclose(sums, jnp.broadcast_to(f[:, None], sums.shape), rtol=0, atol=1e-5 * scale)
    assert float(err["error"]) <= 1e-5 * scale, (err["residual"], err["target"])
    assert float(vanilla["error"]) > 1e-3 * scale  # the rules matter: plain gradients are not complete


def test_ig_on_the_toy(toy):
    model, params, x, y = toy
    fn = jax.jit(libra_jax.attribution(model, ["ig", "ixg"], rules="libra_logit", return_tokens=True, steps=1))
    with jax.default_matmul_precision("highest"):
        out = fn(params, x, y)
    # one step at α = 1 is the gradient at h₀ itself: IG_1 = IxG_0
    np.testing.assert_allclose(out["ig"], out["ixg"], rtol=1e-5, atol=1e-6)


def test_faithfulness_on_the_toy(toy):
    model, params, x, y = toy
    patch_maps = libra_jax.attribution(model, "ixg", rules="libra")(params, x, y)
    curves = faithfulness.deletion_curves(model, params, x, patch_maps, y, ratios=(0.5,))
    # MIF at 0.5 keeps the cls token and the 2 least relevant patches, in order
    order = np.argsort(-np.asarray(patch_maps).reshape(BATCH, -1), axis=1, kind="stable")
    kept = np.sort(order[:, 2:], axis=1)
    h0 = model.apply({"params": params}, x, method="embed")
    tokens = jnp.concatenate([h0[:, :1], jnp.take_along_axis(h0[:, 1:], jnp.asarray(kept)[..., None], axis=1)], 1)
    logits = model.apply({"params": params}, tokens, method="forward_tokens")[0]
    prob = jnp.take_along_axis(jax.nn.softmax(logits), y[:, None], -1)[:, 0]
    np.testing.assert_allclose(curves["mif_prob"][0], prob, rtol=1e-5)
    assert set(faithfulness.summarize(curves, (0.5,))) >= {"mif", "lif", "srg"}


def test_sequence_layout_maps_per_token(toy):
    model, params, x, y = toy
    seq = ToyViT(sequence=True)
    maps_ = libra_jax.attribution(seq, "ixg", rules="libra")(params, x, y)
    grid = libra_jax.attribution(model, "ixg", rules="libra")(params, x, y)
    assert maps_.shape == (BATCH, 1 + GRID[0] * GRID[1])
    np.testing.assert_array_equal(maps_[:, 1:].reshape(grid.shape), grid)


def test_requirements_are_checked_from_capabilities(toy):
    model = toy[0]
    no_cls = dataclasses.replace(model.capabilities, class_token=False)
    problem = api.REQUIREMENTS["genatt"][0](no_cls)
    assert "class-token row" in problem and api.REQUIREMENTS["genatt"][0](model.capabilities) is None
    mixer = MlpMixer(MixerConfig(img_size=32, patch_size=16, num_blocks=1, embed_dim=8))
    assert api.supports(model, "attcat") and not api.supports(mixer, "attcat")
    for name in ("legrad", "transformer_attribution"):  # not blockwise, no relevance pass
        with pytest.raises(ValueError, match="Vision Transformer|not defined"):
            api.check_model(model, name)
