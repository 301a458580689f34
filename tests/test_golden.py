"""Parity with the official LibraGrad code (../shared/golden), every preset and method present.

Tolerances follow `golden.py`'s scheme: float64 against the golden and our float32 against our float64,
each at 1e-4 of the map's scale, plus a derived rounding allowance on the ill-conditioned channel sums
(`ILL_CONDITIONED`, pinned by a test); CLIP's cancelling IxG through `norm_pre` is also pinned in float64
against an independent closed form here. Each case compiles once per dtype (all presets in one jitted call).
BEiTv2 and EVA-02 are rebuilt with LayerNorm eps 1e-5, as the official code built them (golden README).
"""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from golden import (
    GOLDEN_PRESETS,
    assert_golden,
    golden_dir,
    ill_conditioned,
    in_float64,
    load_golden_case,
    map_scale,
    our_maps,
)

from libra_jax.methods import core
from libra_jax.methods.integrated import ig_tokenspace_paper
from libra_jax.rules import get_rules

pytestmark = pytest.mark.usefixtures("highest_precision")

CASES = ("vit_tiny", "deit3_small", "clip_base", "siglip_base_map", "beitv2_base", "eva02_tiny")
# The official code builds every LayerNorm of these families with torch's eps 1e-5 (upstream timm: 1e-6);
# the golden README says to rebuild them so. Their config.json records the eps as `ln_eps`.
FORK_LN_EPS = ("beitv2_base", "eva02_tiny")
GATED = ("eva02_tiny",)  # gated MLP: the official code adds the −Gate ablation `WO-MLP`
PLAIN_LN_PRESETS = ("NG", "NG_S0", "WO-LN")
S1_PRESETS = ("NG", "Libra", "AliLRP", "WO-Att", "WO-LN", "WO-Act")  # the softmax-probability target
# The ill-conditioned maps of the golden cases (golden.py): IxG through CLIP's norm_pre under a plain LayerNorm
# rule (cancellation ratio ~3e4), CLIP's head-bias map under the probability target (ratio 381), and vanilla
# IxG₀ of the 4-block ViT (ratio 254, just past the ≈ 210 at which the rounding bound passes 1e-4·s).
ILL_CONDITIONED = {
    ("clip_base", p): ({"ixg", "ixg_block0"} if p in PLAIN_LN_PRESETS else set())
    | ({"fullgrad_biases_head_end"} if p in S1_PRESETS else set())
    for p in {*PLAIN_LN_PRESETS, *S1_PRESETS}
} | {("vit_tiny", "NG"): {"ixg", "ixg_block0"}}


def load_case(name: str):
    eps = {"norm_eps": json.loads((golden_dir(name) / "config.json").read_text())["ln_eps"]}
    return load_golden_case(name, **(eps if name in FORK_LN_EPS else {}))


def presets(name: str) -> dict:
    extra = {"WO-MLP": "wo_gate"} if name in GATED else {}
    return {p: get_rules(r) for p, r in {**GOLDEN_PRESETS, **extra}.items()}


@functools.cache
def computed(name: str):
    """(name, model, params, images, labels, float32 maps, float64 maps) by preset."""
    with jax.default_matmul_precision("highest"):
        model, params, images, labels, _ = load_case(name)
        rules = presets(name)
        ours32 = our_maps(model, params, images, labels, rules)
        exact = in_float64(lambda p, x: our_maps(model, p, x, labels, rules), params, images)
    return name, model, params, images, labels, ours32, exact


@pytest.fixture(scope="module", params=CASES)
def case(request):
    return computed(request.param)


def test_logits_match(case):
    name, model, params, images, *_ = case

    def forward(p, x):
        logits, aux = model.apply({"params": p}, x)
        return {"logits": logits, "patches": aux["tokens"]}

    inputs = np.load(golden_dir(name) / "inputs.npz")
    ours32 = jax.tree.map(np.asarray, forward(params, jnp.asarray(images)))
    exact = in_float64(forward, params, images)
    assert_golden(ours32, exact, {k: inputs[k] for k in ("logits", "patches")}, name, slack={})


@pytest.mark.parametrize("preset", sorted(GOLDEN_PRESETS))
def test_preset_maps(case, preset):
    name, *_, ours32, exact = case
    assert_golden(ours32[preset], exact[preset], np.load(golden_dir(name) / f"{preset}.npz"), f"{name}/{preset}")


@pytest.mark.parametrize("name", GATED)
def test_gate_ablation_maps(name):
    *_, ours32, exact = computed(name)
    assert_golden(ours32["WO-MLP"], exact["WO-MLP"], np.load(golden_dir(name) / "WO-MLP.npz"), f"{name}/WO-MLP")


def test_every_golden_preset_is_compared(case):
    name, *_, exact = case
    assert {p.stem for p in golden_dir(name).glob("*.npz")} - {"inputs", "IG"} == set(exact)


def test_ill_conditioned_maps_are_the_documented_ones(case):
    """The rounding allowance goes exactly to the maps the docstring names, selected by their measured
    cancellation ratio, and nowhere else."""
    name, *_, exact = case
    found = {preset: set(ill_conditioned(maps)) for preset, maps in exact.items()}
    assert {p: k for p, k in found.items() if k} == {p: k for (n, p), k in ILL_CONDITIONED.items() if n == name}


def test_libra_logit_is_complete(case):
    *_, ours32, _ = case
    maps = ours32["Libra_S0"]
    assert np.all(np.abs(maps["fullgrad_completeness_error"]) <= 1e-5 * np.abs(maps["target"]) + 1e-6)


def test_plain_ln_ixg_closed_form():
    """What is meaningful about the cancelling CLIP maps, in float64: a plain LayerNorm z = γ⊙x̂ + β first in
    the network has Jacobian (γ/σ)(I − 11ᵀ/C − x̂x̂ᵀ/C), so IxG₀ = Σ_c x_c·g_c = ε/(σ²_x + ε)·Σ_c u_c γ_c x̂_c with
    u = ∂f/∂z — no cancellation. Our float64 IxG₀ (through the probes) must equal it to 1e-9."""
    model, params, images, labels, _ = load_golden_case("clip_base")
    bare = type(model)(dataclasses.replace(model.config, pre_norm=False))  # the same network from z on
    eps = model.config.norm_eps

    def closed_form(rules, p, x, y):
        target = core.target_function(rules, None)
        h0 = model.apply({"params": p}, x, method="embed")
        mu, var = h0.mean(-1, keepdims=True), h0.var(-1, keepdims=True)
        xhat = (h0 - mu) / jnp.sqrt(var + eps)
        ln = p["norm_pre"]
        z = xhat * ln["scale"] + ln["bias"]
        u = jax.grad(lambda z: target(bare.apply({"params": p}, z, rules, method="forward_tokens")[0], y))(z)
        return (eps / (var[..., 0] + eps)) * (u * ln["scale"] * xhat).sum(-1)

    rules = {p: get_rules(GOLDEN_PRESETS[p]) for p in PLAIN_LN_PRESETS}
    with jax.default_matmul_precision("highest"):
        exact = in_float64(lambda p, x: our_maps(model, p, x, labels, rules), params, images)
        for preset, r in rules.items():
            fn = jax.jit(jax.vmap(lambda p, x, y, r=r: closed_form(r, p, x, y), in_axes=(None, 0, 0)))
            ref = in_float64(lambda p, x, fn=fn: fn(p, x, jnp.asarray(labels)), params, images)
            err = np.abs(exact[preset]["ixg"] - ref)
            assert np.all(err <= 1e-9 * map_scale(ref)), (preset, err.max())


def test_ig_tokenspace_paper():
    """The official α-weighted IG; its completeness error is the per-step mean of Σ_t IxG(α_k h₀) − f(α_k h₀)."""
    model, params, images, labels, _ = load_golden_case("vit_tiny")
    rules = get_rules("vanilla")
    target = core.target_function(rules, None)
    alphas = jnp.arange(1, 51) / 50
    labels = jnp.asarray(labels, jnp.int32)

    def f_scaled(p, x, y):  # f(α_k h₀) for every step k
        h0 = model.apply({"params": p}, x, method="embed")
        logits = jax.vmap(lambda a: model.apply({"params": p}, a * h0, rules, method="forward_tokens")[0])(alphas)
        return jax.vmap(target, in_axes=(0, None))(logits, y)

    @jax.jit
    def ig(p, x):
        maps = jax.vmap(lambda xi, yi: ig_tokenspace_paper(model, p, xi, yi, rules, target))(x, labels)
        f = jax.vmap(lambda xi, yi: f_scaled(p, xi, yi))(x, labels)
        return {"ig": maps, "target": f[:, -1], "ig_completeness_error": maps.sum(-1) - f.mean(-1)}

    with jax.default_matmul_precision("highest"):
        ours32 = jax.tree.map(np.asarray, ig(params, jnp.asarray(images)))
        exact = in_float64(ig, params, images)
    assert_golden(ours32, exact, np.load(golden_dir("vit_tiny") / "IG.npz"), "vit_tiny/IG", slack={})
