"""FullGrad completeness under the logit target (the LibraGrad claim), asserted to float precision."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import images, tiny_model

import libra_jax
from libra_jax.methods import core, maps
from libra_jax.metrics import completeness_error
from libra_jax.rules import get_rules

pytestmark = pytest.mark.usefixtures("highest_precision")

SMALL = dict(img_size=64, patch_size=16, embed_dim=96, depth=3, num_heads=3)
MODELS = {
    "vit_b16_size": dict(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12, num_classes=1000),
    "siglip_map": {**SMALL, "class_token": False, "global_pool": "map", "act": "gelu_tanh"},
    "clip_style": {**SMALL, "pre_norm": True, "norm_eps": 1e-5, "act": "quick_gelu"},
    "deit3_ls": {**SMALL, "no_embed_class": True, "init_values": 1e-5},
    "swiglu_packed": {**SMALL, "mlp_layer": "glu", "act": "silu", "mlp_ratio": 2 * 2.66667},
    "swiglu_split_inner_norm": {**SMALL, "depth": 2, "mlp_layer": "swiglu", "act": "silu", "scale_mlp_norm": True},
    "registers_gap": {**SMALL, "reg_tokens": 4, "global_pool": "avg", "no_embed_class": True},
    "deit_distilled": {**SMALL, "dist_token": True},
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def case(request):
    model, params = tiny_model(key=3, **MODELS[request.param])
    return request.param, model, params, images(model, 2, key=11)


def test_fullgrad_and_every_layer_are_complete_under_libra_logit(case):
    name, model, params, x = case
    rules = get_rules("libra_logit")
    logits, _ = model.apply({"params": params}, x)
    y = jnp.argmax(logits, -1)
    target = core.target_function(rules, None)

    def layers(xi, yi):
        rec = core.single_pass(model, params, xi, yi, rules, target)
        return rec["target"], jnp.stack(maps.fullgrad_layers(rec, model))

    f, per_layer = jax.jit(jax.vmap(layers))(x, y)
    np.testing.assert_allclose(f, logits[jnp.arange(2), y], rtol=1e-6)
    residual = np.asarray(per_layer.sum(-1) - f[:, None])  # every FullGrad_l, l = 0..L-1
    bound = 1e-5 * np.abs(np.asarray(f))[:, None] + 1e-5
    assert (np.abs(residual) <= bound).all(), f"{name}: max |Σ FullGrad_l − f| = {np.abs(residual).max():.2e}"


def test_vanilla_fullgrad_is_incomplete(case):
    name, model, params, x = case
    libra = completeness_error(model, params, x, method="fullgrad", rules="libra_logit")
    vanilla = completeness_error(model, params, x, method="fullgrad", rules="vanilla_logit")
    scale = float(np.abs(np.asarray(libra["target"])).mean())
    assert float(libra["error"]) <= 1e-5 * scale + 1e-5
    assert float(vanilla["error"]) > 1e-2 * scale, (
        f"{name}: vanilla error {float(vanilla['error']):.3e} unexpectedly small"
    )


def test_completeness_needs_every_rule():
    """Dropping any single Libra rule breaks completeness (the rules are necessary, not decorative)."""
    model, params = tiny_model(key=5, depth=3)
    x = images(model, 2)
    for preset in ("wo_att", "wo_ln", "wo_act"):
        err = completeness_error(model, params, x, rules=get_rules(preset, target="logit"))
        float_precision = 1e-5 * float(np.abs(np.asarray(err["target"])).mean()) + 1e-5
        assert float(err["error"]) > 20 * float_precision, preset


def test_completeness_error_metric_uses_top1_by_default():
    model, params = tiny_model(key=6)
    x = images(model, 3)
    out = completeness_error(model, params, x)
    logits, _ = model.apply({"params": params}, x)
    np.testing.assert_allclose(out["target"], logits.max(-1), rtol=1e-6)
    direct = libra_jax.attribution(model, "fullgrad", rules="libra_logit", return_tokens=True)(
        params, x, logits.argmax(-1)
    )
    np.testing.assert_allclose(out["residual"], direct.sum(-1) - logits.max(-1), atol=1e-6)


def test_gate_rule_is_needed_for_gated_mlps():
    model, params = tiny_model(key=8, mlp_layer="glu", act="silu", mlp_ratio=4.0)
    # timm-style init makes the gated branch tiny; enlarge it so the product is far from linear
    params = jax.tree_util.tree_map_with_path(
        lambda path, v: v * 10 if "mlp" in jax.tree_util.keystr(path) and "kernel" in jax.tree_util.keystr(path) else v,
        params,
    )
    x = images(model, 2)
    complete = completeness_error(model, params, x, rules="libra_logit")
    broken = completeness_error(model, params, x, rules=get_rules("wo_gate", target="logit"))
    float_precision = 1e-5 * float(np.abs(np.asarray(complete["target"])).mean()) + 1e-5
    assert float(complete["error"]) <= float_precision
    assert float(broken["error"]) > 20 * float_precision
