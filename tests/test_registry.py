"""timm name → ViTConfig / DataConfig resolution (`libra_jax.weights.registry`)."""

import pytest

from libra_jax.weights import registry
from libra_jax.weights.registry import UnknownModelError, resolve


def test_default_tag_and_tagged_names():
    spec = resolve("vit_base_patch16_224")
    assert spec.tag == "augreg2_in21k_ft_in1k" and spec.hf_hub_id == "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k"
    c = spec.config
    assert (c.embed_dim, c.depth, c.num_heads, c.img_size, c.patch_size, c.num_classes) == (
        768,
        12,
        12,
        (224, 224),
        (16, 16),
        1000,
    )
    assert resolve("vit_base_patch16_224.augreg_in21k").config.num_classes == 21843
    # the 384 tag's fixed input size becomes img_size (timm's pretrained-cfg default)
    assert resolve("deit3_base_patch16_384").config.img_size == (384, 384)
    assert resolve("deit3_base_patch16_384").data_config.crop_pct == 1.0


def test_kwargs_override_like_timm():
    spec = resolve("vit_tiny_patch16_224", depth=4, num_classes=10, img_size=112, act_layer="quick_gelu", drop_rate=0.1)
    c = spec.config
    assert (c.depth, c.num_classes, c.img_size, c.act, c.embed_dim) == (4, 10, (112, 112), "quick_gelu", 192)
    assert spec.source_config.depth == 12 and spec.source_config.img_size == (224, 224)
    assert spec.data_config.input_size == (112, 112)
    assert resolve("vit_tiny_patch16_224", pos_embed="none").config.pos_embed is False


@pytest.mark.parametrize(
    "name, expect",
    [
        ("deit3_small_patch16_224", dict(init_values=1e-6, no_embed_class=True)),
        ("deit_small_distilled_patch16_224", dict(dist_token=True, num_prefix_tokens=2)),
        ("flexivit_small", dict(no_embed_class=True, img_size=(240, 240), embed_dim=384)),
        ("vit_base_patch16_clip_224", dict(pre_norm=True, norm_eps=1e-5, act="gelu", use_patch_bias=False)),
        ("vit_base_patch32_clip_quickgelu_224", dict(act="quick_gelu", norm_eps=1e-5, patch_size=(32, 32))),
        ("vit_base_patch16_siglip_224", dict(class_token=False, global_pool="map", act="gelu")),
        ("vit_base_patch16_siglip_gap_224", dict(global_pool="avg", fc_norm=False, use_fc_norm=False)),
        ("vit_so400m_patch16_siglip_256", dict(act="gelu_tanh", global_pool="map", mlp_hidden=4304)),
        ("vit_large_patch16_siglip_512", dict(act="gelu_tanh")),
        ("vit_so400m_patch14_siglip_224", dict(act="gelu", mlp_hidden=4304)),
        ("vit_small_patch14_reg4_dinov2", dict(reg_tokens=4, init_values=1e-5, img_size=(518, 518))),
        ("vit_base_patch14_reg4_dinov2", dict(no_embed_class=True, num_prefix_tokens=5, embed_dim=768)),
        ("vit_small_patch14_dinov2", dict(reg_tokens=0, patch_size=(14, 14), img_size=(518, 518))),
        ("vit_medium_patch16_reg4_gap_256", dict(class_token=False, reg_tokens=4, global_pool="avg", use_fc_norm=True)),
        (
            "beitv2_base_patch16_224",
            dict(family="beit", use_rel_pos_bias=True, pos_embed=False, init_values=1e-5, use_fc_norm=True),
        ),
        ("beit_base_patch16_224", dict(init_values=0.1, qkv_layout="qv_bias", droppable_tokens=False)),
        (
            "eva02_tiny_patch14_224",
            dict(family="eva", mlp_layer="glu", mlp_hidden=1024, act="silu", qkv_layout="qv_bias", global_pool="avg"),
        ),
        (
            "eva02_base_patch14_448",
            dict(qkv_layout="separate", mlp_layer="swiglu", scale_mlp_norm=True, mlp_hidden=2048),
        ),
        ("eva02_large_patch14_clip_224", dict(global_pool="token", scale_attn_norm=True, use_fc_norm=False)),
        ("eva_giant_patch14_224", dict(use_rot_pos_emb=False, mlp_layer="mlp", act="gelu", droppable_tokens=True)),
    ],
)
def test_family_configs(name, expect):
    c = resolve(name).config
    for key, value in expect.items():
        assert getattr(c, key) == value, key


def test_quickgelu_tags_share_the_clip_repo():
    spec = resolve("vit_base_patch16_clip_quickgelu_224.openai")
    assert spec.hf_hub_id == "timm/vit_base_patch16_clip_224.openai" and spec.config.act == "quick_gelu"


def test_flexivit_resamples_like_timm():
    assert resolve("flexivit_base").resample == ("bilinear", False)
    assert resolve("vit_base_patch16_224").resample == ("bicubic", True)


def test_pretrained_cfg_and_model_args_from_a_checkpoint():
    cfg = {"input_size": [3, 64, 64], "fixed_input_size": True, "num_classes": 7, "crop_pct": 0.8, "mean": [0.1] * 3}
    spec = resolve("vit_tiny_patch16_224.some_new_tag", pretrained_cfg=cfg, model_args={"depth": 2}, num_classes=3)
    assert (spec.config.img_size, spec.config.depth, spec.config.num_classes) == ((64, 64), 2, 3)
    assert spec.source_config.num_classes == 7
    assert spec.data_config.crop_pct == 0.8 and spec.data_config.mean == (0.1, 0.1, 0.1)


def test_listing():
    assert "vit_base_patch16_224" in registry.list_models("vit_base_*")
    assert "vit_small_patch14_reg4_dinov2.lvd142m" in registry.list_pretrained("*dinov2*")
    assert all(n.startswith("deit") for n in registry.list_models("deit*"))


def test_unknown_names_suggest_close_matches():
    with pytest.raises(UnknownModelError, match=r"'vit_bse_patch16_224'.*Close matches: vit_base_patch16_224"):
        resolve("vit_bse_patch16_224")
    with pytest.raises(UnknownModelError, match=r"unknown pretrained tag 'augreg_in22k'.*augreg_in21k"):
        resolve("vit_base_patch16_224.augreg_in22k")
    with pytest.raises(UnknownModelError, match="list_models"):
        resolve("resnet50")


def test_unsupported_kwargs():
    with pytest.raises(ValueError, match="unsupported model kwarg 'block_fn'"):
        resolve("vit_tiny_patch16_224", block_fn="ParallelBlock")
    with pytest.raises(ValueError, match="unsupported act_layer 'relu'"):
        resolve("vit_tiny_patch16_224", act_layer="relu")


def test_registry_agrees_with_timm():
    """A sample across families: the registry config equals the model timm builds (on the meta device)."""
    timm = pytest.importorskip("timm")
    torch = pytest.importorskip("torch")
    names = [
        "vit_base_patch16_224.augreg_in21k",
        "deit3_small_patch16_384",
        "deit_tiny_distilled_patch16_224",
        "flexivit_small",
        "vit_large_patch14_clip_quickgelu_224",
        "vit_base_patch16_siglip_gap_256",
        "vit_so400m_patch16_siglip_256",
        "vit_base_patch14_reg4_dinov2",
        "vit_betwixt_patch16_reg4_gap_256",
    ]
    for name in names:
        with torch.device("meta"):
            m = timm.create_model(name)
        c = resolve(name).config
        b = m.blocks[0]
        assert c.img_size == tuple(m.patch_embed.img_size), name
        assert c.patch_size == tuple(m.patch_embed.patch_size), name
        assert (c.embed_dim, c.depth, c.num_heads, c.num_classes) == (
            m.embed_dim,
            len(m.blocks),
            b.attn.num_heads,
            m.num_classes,
        ), name
        assert (c.mlp_hidden, c.norm_eps, c.global_pool) == (b.mlp.fc1.out_features, b.norm1.eps, m.global_pool), name
        assert c.num_prefix_tokens == m.num_prefix_tokens and c.reg_tokens == m.num_reg_tokens, name
        assert c.pre_norm == (not isinstance(m.norm_pre, torch.nn.Identity)), name


def test_beit_eva_kwargs():
    """LayerNorm eps override (the official code's 1e-5) and timm's BEiT / EVA argument spellings."""
    spec = resolve("beitv2_base_patch16_224", norm_eps=1e-5, use_abs_pos_emb=True, use_fc_norm=False)
    assert (spec.config.norm_eps, spec.config.pos_embed, spec.config.use_fc_norm) == (1e-5, True, False)
    assert resolve("eva02_tiny_patch14_224.mim_in22k", norm_eps=1e-5, scale_mlp=True).config.scale_mlp_norm
    assert resolve("eva02_tiny_patch14_224.mim_in22k").config.num_classes == 0
    with pytest.raises(ValueError, match="unsupported model kwarg 'use_rel_pos_bias'"):
        resolve("vit_tiny_patch16_224", use_rel_pos_bias=True)


def test_beit_eva_registry_agrees_with_timm():
    """The registry's BEiT / EVA configs equal the models timm builds (meta device), RoPE settings included."""
    timm = pytest.importorskip("timm")
    torch = pytest.importorskip("torch")
    names = ["beit_large_patch16_512", "beitv2_base_patch16_224", "eva02_small_patch14_336", "eva02_base_patch14_448"]
    for name in [*names, "eva02_large_patch14_clip_224", "eva_giant_patch14_clip_224"]:
        with torch.device("meta"):
            m = timm.create_model(name)
        c = resolve(name).config
        b = m.blocks[0]
        fc1 = b.mlp.fc1_g if hasattr(b.mlp, "fc1_g") else b.mlp.fc1
        assert (c.img_size, c.patch_size) == (tuple(m.patch_embed.img_size), tuple(m.patch_embed.patch_size)), name
        assert (c.embed_dim, c.depth, c.num_heads, c.num_classes, c.global_pool) == (
            m.embed_dim,
            len(m.blocks),
            b.attn.num_heads,
            m.num_classes,
            m.global_pool,
        ), name
        assert (c.mlp_hidden, c.norm_eps, c.pos_embed) == (fc1.out_features, b.norm1.eps, m.pos_embed is not None), name
        assert c.use_fc_norm == (not isinstance(m.fc_norm, torch.nn.Identity)), name
        assert (c.init_values is not None) == (b.gamma_1 is not None), name
        if c.family == "beit":
            assert c.use_rel_pos_bias == (b.attn.relative_position_bias_table is not None), name
        else:
            rope = getattr(m, "rope", None)
            assert (c.rope is None) == (rope is None), name
            if rope is not None:
                assert c.rope.ref_feat_shape == tuple(rope.ref_feat_shape), name
                assert c.rope.grid == tuple(rope.feat_shape), name
            assert (c.qkv_layout == "separate") == (b.attn.qkv is None), name
