"""What Chefer's BERT relevance pass (methods/lrp_text.py) reads of a `BertClassifier`: the typed
`BertRelevanceRecord` of one forward, built from Flax's captured module outputs, so that only this module
knows the module names."""

from __future__ import annotations

from typing import TypedDict

import jax

from libra_jax import ops
from libra_jax.models.contract import PROBES, Aux
from libra_jax.models.layers import captured
from libra_jax.rules import Rules


class BertRelevanceBlock(TypedDict):
    """One post-norm block as the pass reads it: its input h (N, C) (the embedding LayerNorm's output for block
    0), fused q/k/v (N, 3C), attention A (H, N, N), the attention output (N, C), y = norm1(h + attention) (N, C),
    the activated MLP hidden (N, M), the MLP output (N, C), and the bias-free kernels (in, out) of qkv, proj,
    fc1 and fc2."""

    h: jax.Array
    qkv: jax.Array
    attn: jax.Array
    attn_out: jax.Array
    y: jax.Array
    hidden: jax.Array
    mlp_out: jax.Array
    qkv_kernel: jax.Array
    proj_kernel: jax.Array
    fc1_kernel: jax.Array
    fc2_kernel: jax.Array


class BertRelevanceRecord(TypedDict):
    """`record`'s output for one sequence: output (K,) logits, aux, one `BertRelevanceBlock` per block, mask (N,)
    bool (real tokens), the pooler kernel (C, C) and the classifier kernel (C, K)."""

    output: jax.Array
    aux: Aux
    blocks: list[BertRelevanceBlock]
    mask: jax.Array
    pooler_kernel: jax.Array
    classifier_kernel: jax.Array


def record(model, params: dict, inputs, rules: Rules, probes: dict | None = None) -> BertRelevanceRecord:
    """One forward of `inputs` (a `TextInputs` of one sequence (N,)) recording every module output (with
    `probes` when given)."""
    variables = {"params": params} if probes is None else {"params": params, PROBES: probes}
    (logits, aux), state = model.apply(variables, inputs, rules, capture_intermediates=True, mutable=["intermediates"])
    inter = state["intermediates"]
    block_inputs = [captured(inter, "embed_norm"), *(b["out"] for b in aux["blocks"][:-1])]
    blocks = []
    for i, (block_aux, h) in enumerate(zip(aux["blocks"], block_inputs, strict=True)):
        cap, p = inter[f"blocks_{i}"], params[f"blocks_{i}"]
        blocks.append(
            BertRelevanceBlock(
                h=h,
                qkv=captured(cap, "attn", "qkv"),
                attn=block_aux["attn"],
                attn_out=captured(cap, "attn")[0],
                y=block_aux["post_attn"],
                hidden=ops.activation(captured(cap, "mlp", "fc1"), model.config.act),
                mlp_out=captured(cap, "mlp"),
                qkv_kernel=p["attn"]["qkv"]["kernel"],
                proj_kernel=p["attn"]["proj"]["kernel"],
                fc1_kernel=p["mlp"]["fc1"]["kernel"],
                fc2_kernel=p["mlp"]["fc2"]["kernel"],
            )
        )
    return BertRelevanceRecord(
        output=logits,
        aux=aux,
        blocks=blocks,
        mask=model.token_mask(inputs),
        pooler_kernel=params["pooler"]["kernel"],
        classifier_kernel=params["classifier"]["kernel"],
    )
