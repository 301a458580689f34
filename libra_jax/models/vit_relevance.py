"""What Chefer's LRP relevance pass (methods/lrp.py) reads of a `VisionTransformer`: the typed
`RelevanceRecord` of one forward, built from Flax's captured module outputs, so that only this module
knows the module names."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from libra_jax import ops
from libra_jax.models.config import ViTConfig
from libra_jax.models.contract import PROBES, RelevanceBlock, RelevanceRecord
from libra_jax.models.layers import captured
from libra_jax.rules import Rules


def gaps(config: ViTConfig) -> tuple[str, ...]:
    """Why the relevance pass is not defined for `config` (phrases for an error message); () when it is.

    It needs the plain timm block (standard qkv attention, Linear-GELU-Linear MLP), class-token pooling
    and a classifier head.
    """
    problems = {
        "no class token": not config.class_token,
        f"global_pool={config.global_pool!r} (the LRP pass starts at class-token pooling)": config.global_pool
        != "token",
        "a distillation token (two heads)": config.dist_token,
        f"a gated MLP (mlp_layer={config.mlp_layer!r})": config.mlp_layer != "mlp",
        "q/k norms": config.qk_norm,
        f"{config.family} attention (q/v biases, relative-position bias or RoPE)": config.family != "vit",
        "inner attention / MLP norms": config.scale_attn_norm or config.scale_mlp_norm,
        "an fc_norm head": config.use_fc_norm,
        "no classifier head (num_classes=0)": config.num_classes <= 0,
    }
    return tuple(name for name, bad in problems.items() if bad)


def record(model, params: dict, image: jax.Array, rules: Rules, probes: dict | None = None) -> RelevanceRecord:
    """One forward of `image` (H, W, C) recording every module output (with `probes` when given)."""
    cfg = model.config
    variables = {"params": params} if probes is None else {"params": params, PROBES: probes}
    (logits, aux), state = model.apply(variables, image, rules, capture_intermediates=True, mutable=["intermediates"])
    inter = state["intermediates"]
    inputs = [captured(inter, "norm_pre") if cfg.pre_norm else aux["tokens"], *(b["out"] for b in aux["blocks"][:-1])]
    scaled = cfg.init_values is not None
    blocks = []
    for i, block_aux in enumerate(aux["blocks"]):
        cap, p = inter[f"blocks_{i}"], params[f"blocks_{i}"]
        blocks.append(
            RelevanceBlock(
                input=inputs[i],
                norm1=captured(cap, "norm1"),
                qkv=captured(cap, "attn", "qkv"),
                attn=block_aux["attn"],
                attn_branch=captured(cap, "ls1") if scaled else captured(cap, "attn")[0],
                post_attn=block_aux["post_attn"],
                norm2=captured(cap, "norm2"),
                hidden=ops.activation(captured(cap, "mlp", "fc1"), cfg.act, rules.activation),
                mlp_branch=captured(cap, "ls2") if scaled else captured(cap, "mlp"),
                qkv_kernel=p["attn"]["qkv"]["kernel"],
                proj_kernel=p["attn"]["proj"]["kernel"],
                fc1_kernel=p["mlp"]["fc1"]["kernel"],
                fc2_kernel=p["mlp"]["fc2"]["kernel"],
            )
        )
    prefix = [params[n][0] for n in ("cls_token", "reg_token") if n in params]
    if cfg.pos_embed:
        npt = cfg.num_prefix_tokens
        pos = params["pos_embed"][0]
        pos = jnp.pad(pos, ((npt, 0), (0, 0))) if cfg.no_embed_class else pos  # prefix tokens get no position
    else:
        pos = None
    return RelevanceRecord(
        output=logits,
        aux=aux,
        blocks=blocks,
        head_kernel=params["head"]["kernel"],
        patches=captured(inter, "patch_embed").reshape(cfg.num_patches, -1),
        prefix=jnp.concatenate(prefix),  # the pass needs a class token, so there is one
        pos=pos,
        patch_kernel=params["patch_embed"]["kernel"],
    )
