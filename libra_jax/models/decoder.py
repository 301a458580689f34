"""Decoder-only language models (Hugging Face Llama / Mistral / Qwen2 / Qwen3 layouts) in Flax Linen,
with LibraGrad rules and probes, as one configurable model.

    model = Decoder(config)
    logits, aux = model.apply({"params": params}, DecoderInputs(ids, attention_mask), rules)

ids (..., N) int, attention_mask (..., N) 1 = token / 0 = padding; logits (..., N, V) are the next-token
logits at every position. Prompts may be LEFT-padded: position ids come from the mask (as transformers
computes them in `generate`) and padded keys are masked out, so a padded batch equals its unpadded prompts
and padded positions get exactly zero gradient (nothing real reads them).

The forward is the VisionTransformer contract (models/vit.py): `aux["tokens"]` is h₀ (the word
embeddings), `aux["blocks"][i]` = {"out", "attn", "post_attn"}, zero probes sit at h₀, on every block
output, on every attention matrix and on every bias; `bias_group` places bias maps for FullGrad; the split
points are `embed` / `forward_tokens`. Rules: RMSNorm rms constant (`ops.rms_norm`), A constant after RoPE
and masking (`ops.attention`), gated MLP gate constant with ½ on the product (`layers.GluMlp`). Every map
is linear in h₀ and the biases under `libra_logit`, so FullGrad sums to the explained logit.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import struct

from libra_jax import ops
from libra_jax.models.layers import GluMlp, Linear, merge_heads, probe, split_heads, zero_probe
from libra_jax.models.rope1d import RopeScaling, apply_rope_half, inverse_frequencies, rope_angles
from libra_jax.rules import PRESETS, Rules
from libra_jax.validate import runtime_check

VANILLA = PRESETS["vanilla"]


@struct.dataclass
class DecoderInputs:
    """ids (..., N) int32 token ids; attention_mask (..., N) int32, 1 = token, 0 = (left) padding."""

    ids: jax.Array
    attention_mask: jax.Array


def decoder_inputs(ids, attention_mask=None) -> DecoderInputs:
    """`DecoderInputs` from array-likes (mask defaults to all ones); ValueError on non-integer ids or a
    mask of another shape."""
    ids = jnp.asarray(ids)
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise ValueError(f"token ids must be integers; got dtype {ids.dtype} (tokenize the text first)")
    mask = jnp.ones_like(ids) if attention_mask is None else jnp.asarray(attention_mask)
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask has shape {mask.shape} but the ids have {ids.shape}; pass one per id")
    return DecoderInputs(ids.astype(jnp.int32), mask.astype(jnp.int32))


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Architecture of a decoder LM (field names follow transformers' config.json where they exist).

    num_kv_heads < num_heads is grouped-query attention (k/v shared by num_heads/num_kv_heads queries).
    qkv_bias: q/k/v projections carry biases (Qwen2). qk_norm: per-head RMSNorm of q and k before RoPE
    (Qwen3). sliding_window: keys further than this many positions back are masked (Mistral).
    tie_embeddings: the LM head is the transposed word embedding.
    """

    family: str = "llama"
    vocab_size: int = 32000
    hidden_size: int = 4096
    num_layers: int = 32
    num_heads: int = 32
    num_kv_heads: int = 32
    head_dim: int = 128
    intermediate_size: int = 11008
    act: str = "silu"
    norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling = RopeScaling()
    max_positions: int = 2048
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    sliding_window: int | None = None
    tie_embeddings: bool = False

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_attention_heads {self.num_heads} is not a multiple of num_key_value_heads {self.num_kv_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim; got {self.head_dim}")

    @property
    def num_prefix_tokens(self) -> int:
        """No class / register tokens: every position is a text token."""
        return 0

    @property
    def num_classes(self) -> int:
        """The 'classes' of the logits' last axis: the vocabulary."""
        return self.vocab_size

    def replace(self, **changes) -> DecoderConfig:
        return dataclasses.replace(self, **changes)


def position_ids(attention_mask: jax.Array) -> jax.Array:
    """(..., N) positions counted over real tokens only (left padding shifts nothing); padded slots get 1,
    as transformers' `generate` fills them."""
    mask = attention_mask.astype(jnp.int32)
    return jnp.where(mask > 0, jnp.cumsum(mask, axis=-1) - 1, 1)


def attention_mask_bias(attention_mask: jax.Array, sliding_window: int | None, dtype) -> jax.Array:
    """Additive (..., 1, N, N) logit bias: 0 where query i may read key j (j ≤ i, j a real token, and
    i − j < sliding_window when set), finfo.min elsewhere. The diagonal is always open so a padded query
    row is never empty (its output is never read by a real position)."""
    n = attention_mask.shape[-1]
    i, j = jnp.arange(n)[:, None], jnp.arange(n)[None, :]
    allowed = (j <= i) & attention_mask.astype(bool)[..., None, :]
    if sliding_window is not None:
        allowed = allowed & (i - j < sliding_window)
    allowed = allowed | (i == j)
    return jnp.where(allowed, 0.0, jnp.finfo(dtype).min).astype(dtype)[..., None, :, :]


class RMSNorm(nn.Module):
    """x / rms(x) · γ over the last axis with the LibraGrad rule (`rules.norm`: rms constant)."""

    eps: float = 1e-6

    @nn.compact
    def __call__(self, x: jax.Array, rules: Rules) -> jax.Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],)).astype(x.dtype)
        return ops.rms_norm(x, scale, eps=self.eps, rule=rules.norm)


class DecoderAttention(nn.Module):
    """Causal self-attention with GQA, split-half RoPE and optional q/k/v bias and q/k norm.

    Returns (out (..., N, C), A (..., H, N, N)). A zero probe named 'attn' sits on A; the attention rule
    acts after RoPE and masking.
    """

    config: DecoderConfig

    @nn.compact
    def __call__(
        self, x: jax.Array, rules: Rules, bias: jax.Array, rope: tuple[jax.Array, jax.Array]
    ) -> tuple[jax.Array, jax.Array]:
        """x (..., N, C); bias (..., 1, N, N) the mask; rope (sin, cos) (..., N, head_dim)."""
        cfg = self.config
        d, h, kv = cfg.head_dim, cfg.num_heads, cfg.num_kv_heads
        q = split_heads(Linear(h * d, cfg.qkv_bias, name="q_proj")(x), h)
        k = split_heads(Linear(kv * d, cfg.qkv_bias, name="k_proj")(x), kv)
        v = split_heads(Linear(kv * d, cfg.qkv_bias, name="v_proj")(x), kv)
        if cfg.qk_norm:
            q = RMSNorm(cfg.norm_eps, name="q_norm")(q, rules)
            k = RMSNorm(cfg.norm_eps, name="k_norm")(k, rules)
        q, k = apply_rope_half(q, *rope), apply_rope_half(k, *rope)
        # GQA: each k/v head serves h/kv consecutive query heads; the repeat's gradient sums back over them.
        k, v = (jnp.repeat(t, h // kv, axis=-3) for t in (k, v))
        n = x.shape[-2]
        p = zero_probe(self, "attn", (*x.shape[:-2], h, n, n), x.dtype)
        out, attn = ops.attention(q, k, v, bias, p, scale=d**-0.5, rule=rules.attention)
        return Linear(x.shape[-1], cfg.o_bias, name="o_proj")(merge_heads(out)), attn


class DecoderBlock(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x)); the output carries the probe 'out'."""

    config: DecoderConfig

    @nn.compact
    def __call__(
        self, x: jax.Array, rules: Rules, bias: jax.Array, rope: tuple[jax.Array, jax.Array]
    ) -> tuple[jax.Array, dict]:
        cfg = self.config
        a, attn = DecoderAttention(cfg, name="attn")(RMSNorm(cfg.norm_eps, name="norm1")(x, rules), rules, bias, rope)
        x = x + a
        post_attn = x
        mlp = GluMlp(cfg.intermediate_size, act=cfg.act, bias=cfg.mlp_bias, packed=False, name="mlp")
        x = probe(self, "out", x + mlp(RMSNorm(cfg.norm_eps, name="norm2")(x, rules), rules))
        return x, {"attn": attn, "post_attn": post_attn}


class Decoder(nn.Module):
    """Decoder LM: word embedding → blocks → final RMSNorm → LM head (tied or not). See the module docstring."""

    config: DecoderConfig

    def setup(self):
        cfg = self.config
        self.embed_tokens = self.param("embed_tokens", nn.initializers.normal(0.02), (cfg.vocab_size, cfg.hidden_size))
        self.blocks = [DecoderBlock(cfg, name=f"blocks_{i}") for i in range(cfg.num_layers)]
        self.norm = RMSNorm(cfg.norm_eps, name="norm")
        self.lm_head = None if cfg.tie_embeddings else Linear(cfg.vocab_size, use_bias=False, name="lm_head")

    @staticmethod
    def bias_group(path: str) -> tuple[str, int | None]:
        """Where FullGrad puts the bias map of the bias probe at `path` (as `VisionTransformer.bias_group`):
        ('block', l) inside block l; ('end', None) for per-token modules after the blocks."""
        top = path.split("/")[0]
        if top.startswith("blocks_"):
            return "block", int(top.split("_")[1])
        return "end", None

    def check_inputs(self, inputs: DecoderInputs) -> None:
        """Clear errors for ids outside the vocabulary (also under jit), a prompt longer than the context,
        a mask of another shape."""
        cfg = self.config
        n = inputs.ids.shape[-1]
        if inputs.attention_mask.shape != inputs.ids.shape:
            raise ValueError(
                f"attention_mask has shape {inputs.attention_mask.shape} but the ids have {inputs.ids.shape}"
            )
        if n > cfg.max_positions:
            raise ValueError(
                f"{n} tokens exceed the model's context of {cfg.max_positions} positions"
                " (max_position_embeddings); truncate or split the prompt"
            )
        runtime_check(
            ((inputs.ids < 0) | (inputs.ids >= cfg.vocab_size)).any(),
            f"token ids must lie in [0, {cfg.vocab_size}) (the model's vocabulary); was the text tokenized with"
            " another model's tokenizer?",
        )

    def embed(self, inputs: DecoderInputs) -> jax.Array:
        """h₀ = word embeddings: ids (..., N) → (..., N, C)."""
        self.check_inputs(inputs)
        return self.embed_tokens[inputs.ids]

    def forward_tokens(
        self, tokens: jax.Array, attention_mask: jax.Array, rules: Rules = VANILLA
    ) -> tuple[jax.Array, dict]:
        """Run the network from h₀ (..., N, C) with the (..., N) 1/0 mask; returns (logits (..., N, V), aux)."""
        cfg = self.config
        tokens = probe(self, "tokens", tokens)
        bias = attention_mask_bias(attention_mask, cfg.sliding_window, tokens.dtype)
        rope = rope_angles(
            position_ids(attention_mask), inverse_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
        )
        x, blocks = tokens, []
        for block in self.blocks:
            x, block_aux = block(x, rules, bias, rope)
            blocks.append({"out": x, **block_aux})
        x = self.norm(x, rules)
        logits = x @ self.embed_tokens.T.astype(x.dtype) if self.lm_head is None else self.lm_head(x)
        return logits, {"tokens": tokens, "blocks": blocks, "features": x}

    def __call__(self, inputs: DecoderInputs, rules: Rules = VANILLA) -> tuple[jax.Array, dict]:
        return self.forward_tokens(self.embed(inputs), inputs.attention_mask, rules)
