"""The text tower of CLIP / SigLIP image–text models (open_clip `TextTransformer`, HF `CLIPTextModel`,
HF `SiglipTextModel`) in Flax Linen.

token embedding + positional embedding → pre-norm blocks (causal for CLIP, bidirectional for SigLIP)
→ final LayerNorm → pool one token → linear projection. The text tower only ever runs in vanilla
mode: the official code computes text features under `no_grad`, so they are constants of the
explained scalar. Parameter names follow the vision blocks ('blocks_0/attn/qkv', 'norm1', 'mlp/fc1')
so that one key table serves both towers.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import linen as nn

from libra_jax import ops
from libra_jax.models.layers import LayerNorm, Linear, Mlp, merge_heads, split_heads
from libra_jax.rules import PRESETS

VANILLA = PRESETS["vanilla"]
POOLS = ("eot", "eos_id", "last")


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """Architecture of a CLIP / SigLIP text tower.

    pool: which token's final feature is the text feature: "eot" (argmax of the token ids: the EOT id
    is the largest, open_clip / OpenAI CLIP and HF CLIP with eos_token_id 2), "eos_id" (first
    occurrence of `eos_token_id`, newer HF CLIP configs) or "last" (the last position, SigLIP).
    """

    vocab_size: int = 49408
    context_length: int = 77
    width: int = 512
    heads: int = 8
    layers: int = 12
    mlp_hidden: int = 2048
    act: str = "gelu"
    norm_eps: float = 1e-5
    embed_dim: int = 512
    causal: bool = True
    pool: str = "eot"
    eos_token_id: int | None = None
    proj_bias: bool = False

    def __post_init__(self):
        if self.pool not in POOLS:
            raise ValueError(f"unsupported text pool {self.pool!r}; expected one of {POOLS}")
        if self.pool == "eos_id" and self.eos_token_id is None:
            raise ValueError("text pool 'eos_id' needs eos_token_id")
        if self.width % self.heads:
            raise ValueError(f"text width {self.width} is not divisible by heads {self.heads}")


def causal_mask(n: int, dtype) -> jax.Array:
    """Additive (n, n) mask: −inf strictly above the diagonal (a token sees itself and earlier ones)."""
    return jnp.where(jnp.triu(jnp.ones((n, n), bool), k=1), -jnp.inf, 0.0).astype(dtype)


class TextAttention(nn.Module):
    """Fused-qkv multi-head self-attention with an additive mask (torch `nn.MultiheadAttention` math)."""

    num_heads: int

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        c = x.shape[-1]
        q, k, v = (split_heads(t, self.num_heads) for t in jnp.split(Linear(3 * c, name="qkv")(x), 3, axis=-1))
        out, _ = ops.attention(q, k, v, mask, scale=(c // self.num_heads) ** -0.5)
        return Linear(c, name="proj")(merge_heads(out))


class TextBlock(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x)) (vanilla rules)."""

    config: TextConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        cfg = self.config
        x = x + TextAttention(cfg.heads, name="attn")(LayerNorm(cfg.norm_eps, name="norm1")(x, VANILLA), mask)
        mlp = Mlp(cfg.mlp_hidden, act=cfg.act, name="mlp")
        return x + mlp(LayerNorm(cfg.norm_eps, name="norm2")(x, VANILLA), VANILLA)


class TextTransformer(nn.Module):
    """Token ids (..., L) int → unnormalised text embeddings (..., E). L ≤ context_length."""

    config: TextConfig

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        cfg = self.config
        n = tokens.shape[-1]
        if n > cfg.context_length:
            raise ValueError(f"{n} text tokens exceed the context length {cfg.context_length}")
        x = nn.Embed(cfg.vocab_size, cfg.width, name="token_embedding")(tokens)
        pos = self.param("positional_embedding", nn.initializers.normal(0.01), (cfg.context_length, cfg.width))
        x = x + pos[:n].astype(x.dtype)
        mask = causal_mask(n, x.dtype) if cfg.causal else None
        for i in range(cfg.layers):
            x = TextBlock(cfg, name=f"blocks_{i}")(x, mask)
        x = LayerNorm(cfg.norm_eps, name="ln_final")(x, VANILLA)
        if cfg.pool == "eot":
            index = jnp.argmax(tokens, axis=-1)
        elif cfg.pool == "eos_id":
            index = jnp.argmax(tokens == cfg.eos_token_id, axis=-1)
        else:
            index = jnp.full(tokens.shape[:-1], n - 1)
        pooled = jnp.take_along_axis(x, index[..., None, None], axis=-2)[..., 0, :]
        return Linear(cfg.embed_dim, cfg.proj_bias, name="text_projection")(pooled)
