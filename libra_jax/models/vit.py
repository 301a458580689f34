"""timm-compatible Vision Transformer in Flax Linen, with LibraGrad rules and probes.

Covers the timm `VisionTransformer` feature set of ViT, DeiT-3 (LayerScale, no_embed_class),
FlexiViT, CLIP-style towers (norm_pre, no patch bias), SigLIP (MAP head / GAP, no class token),
register tokens (DINOv2-reg), gated MLPs (timm `SwiGLUPacked` / `SwiGLU`, e.g. DINOv2-giant) and
DeiT-distilled (cls + dist tokens, two heads averaged).

Parameter names mirror timm's module names ('patch_embed', 'blocks_3/attn/qkv', 'norm', ...),
so the converter is a short table. Forward passes return (logits, aux) where `aux` holds the
intermediates the attribution methods read (big_vision style): token embeddings h₀, each block's
output and attention probabilities, and the residual stream after each attention add.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from libra_jax import ops
from libra_jax.models import vit_relevance
from libra_jax.models.config import DataConfig, ViTConfig
from libra_jax.models.contract import OPTIONAL_PROBES, Aux, BlockAux, Capabilities, TokenLayout
from libra_jax.models.image_model import ImageModel
from libra_jax.models.layers import (
    Attention,
    GluMlp,
    LayerNorm,
    LayerScale,
    Linear,
    Mlp,
    RelativePositionBias,
    merge_heads,
    probe,
    split_heads,
    zero_probe,
)
from libra_jax.models.rope import rope_table
from libra_jax.rules import PRESETS, Rules

VANILLA = PRESETS["vanilla"]


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x))).

    `dtype`: compute dtype of the attention and MLP (their inputs are cast by the pre-norms); the
    residual stream x keeps its own dtype (float32 under bf16 compute: the adds promote)."""

    config: ViTConfig
    dtype: str | None = None

    @nn.compact
    def __call__(
        self, x: jax.Array, rules: Rules, bias: jax.Array | None = None, rope: tuple[jax.Array, jax.Array] | None = None
    ) -> tuple[jax.Array, BlockAux]:
        """x (..., N, C); `bias` (shared relative-position bias) and `rope` (sin, cos) go to the attention."""
        cfg = self.config
        # probed only when a method asks for it (the CAMs' layer="norm1")
        norm1 = probe(self, OPTIONAL_PROBES["norm1"], LayerNorm(cfg.norm_eps, dtype=self.dtype, name="norm1")(x, rules))
        a, attn = Attention(
            cfg.num_heads,
            qkv_bias=cfg.qkv_bias,
            proj_bias=cfg.proj_bias,
            qk_norm=cfg.qk_norm,
            inner_norm=cfg.scale_attn_norm,
            eps=cfg.norm_eps,
            qkv_layout=cfg.qkv_layout,
            rel_pos_window=cfg.rel_pos_window,
            num_prefix_tokens=cfg.num_prefix_tokens,
            name="attn",
        )(norm1, rules, bias, rope)
        if cfg.init_values is not None:
            a = LayerScale(name="ls1")(a)
        x = x + a
        post_attn = x
        common = dict(act=cfg.act, bias=cfg.proj_bias, inner_norm=cfg.scale_mlp_norm, eps=cfg.norm_eps, name="mlp")
        if cfg.mlp_layer == "mlp":
            mlp = Mlp(cfg.mlp_hidden, **common)
        else:
            mlp = GluMlp(cfg.mlp_hidden, packed=cfg.mlp_layer == "glu", **common)
        m = mlp(LayerNorm(cfg.norm_eps, dtype=self.dtype, name="norm2")(x, rules), rules)
        if cfg.init_values is not None:
            m = LayerScale(name="ls2")(m)
        x = probe(self, "out", x + m)
        return x, {"out": x, "attn": attn, "post_attn": post_attn, "norm1": norm1}


class AttentionPool(nn.Module):
    """timm `AttentionPoolLatent` (SigLIP MAP head): one learned latent query attends to the tokens.

    Returns the pooled (..., C) vector and the pool's attention (..., H, 1, N).
    """

    num_heads: int
    mlp_hidden: int
    act: str = "gelu"
    eps: float = 1e-6

    @nn.compact
    def __call__(self, x: jax.Array, rules: Rules) -> tuple[jax.Array, jax.Array]:
        c = x.shape[-1]
        latent = self.param("latent", nn.initializers.normal(c**-0.5), (1, 1, c)).astype(x.dtype)
        latent = jnp.broadcast_to(latent[0], (*x.shape[:-2], 1, c))
        q = split_heads(Linear(c, name="q")(latent), self.num_heads)
        k, v = (split_heads(t, self.num_heads) for t in jnp.split(Linear(2 * c, name="kv")(x), 2, axis=-1))
        p = zero_probe(self, "attn", (*x.shape[:-2], self.num_heads, 1, x.shape[-2]), x.dtype)
        out, attn = ops.attention(q, k, v, None, p, scale=(c // self.num_heads) ** -0.5, rule=rules.attention)
        out = Linear(c, name="proj")(merge_heads(out))
        out = out + Mlp(self.mlp_hidden, act=self.act, name="mlp")(LayerNorm(self.eps, name="norm")(out, rules), rules)
        return out[..., 0, :], attn


class VisionTransformer(ImageModel, nn.Module):
    """timm `VisionTransformer` / `VisionTransformerDistilled`, and the ViT variants timm `Beit` (BEiT,
    BEiTv2: `BeitConfig`) and `Eva` (EVA-02: `EvaConfig`), whose differences live in the attention.

    Implements the model contract (models/contract.py, docs/design.md), blockwise members and the
    LRP relevance record included. Call forms (all rank-polymorphic over leading batch axes):
      `apply(v, images, rules)`: images (..., H, W, 3) normalised NHWC → (logits, aux).
      `apply(v, images, method="embed")` → token embeddings h₀ (..., N, C) (prefix tokens first,
        position embedding added).
      `apply(v, tokens, rules, method="forward_tokens")`: from h₀ → (logits, aux).
    """

    config: ViTConfig
    data_config: DataConfig = DataConfig()
    remat: bool = False
    """Recompute each block's activations in the backward pass instead of storing them (less memory, ~1/3 more
    compute). Param names are unchanged, so checkpoints load either way."""
    dtype: str | None = None
    """Compute dtype (e.g. "bfloat16") of the patch embedding and of every block's attention and MLP (params
    are cast at use and stay stored as they are); the residual stream, the norms' statistics and the logits
    stay float32. None computes everything in the params' and inputs' own dtype."""

    @property
    def layout(self) -> TokenLayout:
        """Prefix tokens, then the patch grid. BEiT cannot drop tokens (its bias tables index the full grid);
        RoPE models need the positions of the tokens left after removals."""
        cfg = self.config
        return TokenLayout(cfg.num_prefix_tokens, cfg.grid_size, cfg.droppable_tokens, cfg.rope is not None)

    @property
    def capabilities(self) -> Capabilities:
        cfg = self.config
        return Capabilities(
            depth=cfg.depth,
            num_classes=cfg.num_classes,
            head=cfg.num_classes > 0,
            attention=True,
            class_token=cfg.class_token,
            blockwise=True,
            attention_pool=cfg.global_pool == "map",
            relevance_gaps=vit_relevance.gaps(cfg),
            centred_tokens=cfg.final_norm,  # every block is pre-LayerNorm; the head reads norm / fc_norm features
            optional_probes=("norm1",),
        )

    @nn.nowrap
    def relevance_record(self, params, image: jax.Array, rules: Rules, probes: dict | None = None):
        """Chefer's LRP relevance pass inputs from one forward of `image` (H, W, C): see models/vit_relevance.py."""
        return vit_relevance.record(self, params, image, rules, probes)

    def setup(self):
        cfg = self.config
        ph, pw = cfg.patch_size
        self.patch_embed = nn.Conv(
            cfg.embed_dim,
            (ph, pw),
            strides=(ph, pw),
            padding="VALID",
            dtype=self.dtype,
            use_bias=cfg.use_patch_bias,
            kernel_init=nn.initializers.lecun_normal(),
            name="patch_embed",
        )
        c = cfg.embed_dim
        init = nn.initializers.normal(1e-6)
        self.cls_token = self.param("cls_token", init, (1, 1, c)) if cfg.class_token else None
        self.dist_token = self.param("dist_token", init, (1, 1, c)) if cfg.dist_token else None
        self.reg_token = self.param("reg_token", init, (1, cfg.reg_tokens, c)) if cfg.reg_tokens else None
        if cfg.pos_embed:
            embed_len = cfg.num_patches if cfg.no_embed_class else cfg.num_tokens
            self.pos_embed = self.param("pos_embed", nn.initializers.normal(0.02), (1, embed_len, c))
        else:
            self.pos_embed = None
        self.norm_pre = LayerNorm(cfg.norm_eps, name="norm_pre") if cfg.pre_norm else None
        window = cfg.shared_rel_pos_window
        self.rel_pos_bias = None if window is None else RelativePositionBias(window, cfg.num_heads, name="rel_pos_bias")
        block = nn.remat(Block, static_argnums=(2,)) if self.remat else Block  # argnum 2 = rules (0 is self)
        self.blocks = [block(cfg, self.dtype, name=f"blocks_{i}") for i in range(cfg.depth)]
        final_eps = cfg.norm_eps if cfg.final_norm_eps is None else cfg.final_norm_eps
        self.norm = LayerNorm(final_eps, name="norm") if cfg.final_norm and not cfg.use_fc_norm else None
        if cfg.global_pool == "map":
            self.attn_pool = AttentionPool(cfg.num_heads, cfg.mlp_hidden, cfg.act, cfg.norm_eps, name="attn_pool")
        else:
            self.attn_pool = None
        self.fc_norm = LayerNorm(final_eps, name="fc_norm") if cfg.final_norm and cfg.use_fc_norm else None
        if cfg.num_classes > 0:
            self.head = Linear(cfg.num_classes, name="head")
            self.head_dist = Linear(cfg.num_classes, name="head_dist") if cfg.dist_token else None
        else:
            self.head = self.head_dist = None

    @staticmethod
    def bias_group(path: str) -> tuple[str, int | None]:
        """Where FullGrad puts the bias map of the bias probe at `path` (the module path).

        Returns ('block', l) for biases inside block l; ('pre', None) for norm_pre (counted at
        layer 0 only); ('end', None) for per-token modules after the blocks (final norm, MAP
        key/value); ('broadcast', None) for the MAP query (one latent row, added to every
        token); ('head', None) for pooled modules (head, fc_norm, MAP proj/norm/mlp), added to
        token 0 as the official implementation does.
        """
        top = path.split("/")[0]
        if top.startswith("blocks_"):
            return "block", int(top.split("_")[1])
        if top == "norm_pre":
            return "pre", None
        if path in ("norm", "attn_pool/kv"):
            return "end", None
        if path == "attn_pool/q":
            return "broadcast", None
        return "head", None

    def embed(self, images: jax.Array) -> jax.Array:
        """Patch embedding + prefix tokens + position embedding: (..., H, W, C_in) → h₀ (..., N, C)."""
        cfg = self.config
        x = self.patch_embed(images if self.dtype is None else images.astype(self.dtype))
        if self.dtype is not None:
            x = x.astype(jnp.float32)  # the residual stream (and h_l, g_l) stay float32 under low-precision compute
        lead = x.shape[:-3]
        x = x.reshape(*lead, -1, x.shape[-1])
        prefix = [t for t in (self.cls_token, self.dist_token, self.reg_token) if t is not None]
        prefix = [jnp.broadcast_to(t[0], (*lead, *t.shape[1:])).astype(x.dtype) for t in prefix]
        pos = None if self.pos_embed is None else self.pos_embed[0].astype(x.dtype)
        if cfg.no_embed_class:
            x = x if pos is None else x + pos
            x = jnp.concatenate([*prefix, x], axis=-2)
        else:
            x = jnp.concatenate([*prefix, x], axis=-2)
            x = x if pos is None else x + pos
        return x

    def _rope(self, num_tokens: int, positions: jax.Array | None, dtype) -> tuple[jax.Array, jax.Array] | None:
        """The RoPE (sin, cos) rows of the patch tokens present: all (in order), or those at `positions`."""
        spec = self.config.rope
        if spec is None:
            return None
        sin, cos = rope_table(spec)
        npt = self.config.num_prefix_tokens
        if positions is None:
            if num_tokens - npt != sin.shape[0]:
                raise ValueError(
                    f"{num_tokens - npt} patch tokens but the RoPE table covers {sin.shape[0]} grid positions;"
                    " pass positions (the layout index of each token) when tokens were removed"
                )
            return jnp.asarray(sin, dtype), jnp.asarray(cos, dtype)
        grid_index = positions[..., npt:] - npt
        return jnp.asarray(sin, dtype)[grid_index], jnp.asarray(cos, dtype)[grid_index]

    def block_context(self, x: jax.Array, positions: jax.Array | None = None) -> tuple:
        """What every block takes besides its input x (..., N, C): (shared relative-position bias or None,
        RoPE (sin, cos) rows of the patch tokens or None). `positions` as in `forward_tokens`."""
        bias = None if self.rel_pos_bias is None else self.rel_pos_bias().astype(x.dtype)
        return bias, self._rope(x.shape[-2], positions, x.dtype)

    def enter_blocks(self, tokens: jax.Array, rules: Rules = VANILLA) -> jax.Array:
        """h₀ (..., N, C) → the input of block 0 (through norm_pre when the model has one)."""
        return tokens if self.norm_pre is None else self.norm_pre(tokens, rules)

    def forward_block(
        self, x: jax.Array, index: int, rules: Rules = VANILLA, positions: jax.Array | None = None
    ) -> tuple[jax.Array, BlockAux]:
        """Block `index` alone: its input (..., N, C) → (its output (..., N, C), its aux)."""
        return self.blocks[index](x, rules, *self.block_context(x, positions))

    def final_norm(self, x: jax.Array, rules: Rules = VANILLA) -> jax.Array:
        """The norm after the blocks ((..., N, C) or pooled (..., C)); identity when the model has none."""
        return x if self.norm is None else self.norm(x, rules)

    def attention_pool(self, features: jax.Array, rules: Rules = VANILLA) -> tuple[jax.Array, jax.Array]:
        """MAP head: features (..., N, C) → (pooled (..., C), the pool's attention (..., H, 1, N − prefix))."""
        return self.attn_pool(features[..., self.config.num_prefix_tokens :, :], rules)

    def forward_head(self, pooled: jax.Array, rules: Rules = VANILLA, dist: jax.Array | None = None) -> jax.Array:
        """Pooled features (..., C) (before fc_norm) → output (..., K); `dist` feeds `head_dist` (DeiT-distilled)."""
        return self._output(self._head_input(pooled, rules), dist)

    def _head_input(self, pooled: jax.Array, rules: Rules) -> jax.Array:
        return pooled if self.fc_norm is None else self.fc_norm(pooled, rules)

    def _output(self, head_input: jax.Array, dist: jax.Array | None) -> jax.Array:
        """The head on the (fc-normed) pooled features; without a head the features themselves."""
        if self.head is None:
            return head_input
        logits = self.head(head_input)
        if self.head_dist is not None:
            logits = 0.5 * (logits + self.head_dist(dist))
        if self.dtype is not None:
            logits = logits.astype(jnp.float32)  # the explained softmax / logit in full precision
        return logits

    def forward_tokens(
        self,
        tokens: jax.Array,
        rules: Rules = VANILLA,
        positions: jax.Array | None = None,
        mask: jax.Array | None = None,
    ) -> tuple[jax.Array, Aux]:
        """Run the network from h₀ (..., n, C); returns (logits (..., K), aux).

        `positions` (..., n) int: the layout index of each token when some were removed (faithfulness); only
        RoPE models read it (elsewhere the position embedding is already in h₀). Images have no padding:
        `mask` must be None.
        """
        if mask is not None:
            raise ValueError("image tokens are never padded: call forward_tokens without a mask")
        cfg = self.config
        tokens = probe(self, "tokens", tokens)
        x = self.enter_blocks(tokens, rules)
        has_tables = cfg.rel_pos_window is not None or cfg.shared_rel_pos_window is not None
        if has_tables and x.shape[-2] != cfg.num_tokens:
            raise ValueError(
                f"{x.shape[-2]} tokens, but the relative-position bias covers all {cfg.num_tokens}:"
                " this model cannot drop tokens (zero them instead)"
            )
        context = self.block_context(x, positions)
        blocks = []
        for block in self.blocks:
            x, block_aux = block(x, rules, *context)
            blocks.append(block_aux)
        x = self.final_norm(x, rules)
        npt = cfg.num_prefix_tokens
        pool_attn = {}
        if self.attn_pool is not None:
            pooled, pool_attn["pool_attn"] = self.attention_pool(x, rules)
        elif cfg.global_pool == "token" or cfg.dist_token:
            pooled = x[..., 0, :]
        elif cfg.global_pool == "avg":
            pooled = x[..., npt:, :].mean(-2)
        elif cfg.global_pool == "max":
            pooled = x[..., npt:, :].max(-2)
        elif cfg.global_pool == "avgmax":
            pooled = 0.5 * (x[..., npt:, :].max(-2) + x[..., npt:, :].mean(-2))
        else:
            pooled = x
        head_input = self._head_input(pooled, rules)
        aux = Aux(tokens=tokens, blocks=blocks, features=x, pooled=head_input, **pool_attn)
        return self._output(head_input, x[..., 1, :] if cfg.dist_token else None), aux

    def __call__(self, images: jax.Array, rules: Rules = VANILLA) -> tuple[jax.Array, Aux]:
        return self.forward_tokens(self.embed(images), rules)
