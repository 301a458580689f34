"""timm-compatible MLP-Mixer / gMixer in Flax Linen, with LibraGrad rules and probes.

Covers timm's `MlpMixer` as its `mixer_*` (GELU `Mlp`) and `gmixer_*` (SiLU `GluMlp`, gate in the
second half) architectures build it: patch-embed stem, blocks of token mixing (an MLP over the
token axis of the transposed (C, N) sequence) and channel mixing, final LayerNorm, token mean,
head. Parameter names mirror timm's ('stem', 'blocks_3/mlp_tokens/fc1', 'norm', 'head').

Implements the model contract (models/contract.py), so the gradient methods run unchanged. What its
capabilities report: no prefix tokens and no attention (aux blocks hold only 'out'), tokens that
cannot be dropped, no blockwise members and no LRP relevance pass. The token-mixing biases are
probed per token (their features are the tokens), and the token-MLP fc1 bias maps have no token
axis at all, so FullGrad cannot place them (`bias_group` → 'unassigned', as the official code).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from libra_jax.models.config import DataConfig, MixerConfig
from libra_jax.models.contract import Aux, BlockAux, Capabilities, TokenLayout
from libra_jax.models.image_model import ImageModel
from libra_jax.models.layers import GluMlp, LayerNorm, Linear, Mlp, probe
from libra_jax.rules import PRESETS, Rules

VANILLA = PRESETS["vanilla"]


def _mlp(cfg: MixerConfig, hidden: int, name: str, features_are_tokens: bool = False) -> nn.Module:
    """The block MLP timm builds for `cfg.mlp_layer` (GluMlp: gate last, as timm's default)."""
    if cfg.mlp_layer == "glu":
        return GluMlp(hidden, act=cfg.act, gate_last=True, features_are_tokens=features_are_tokens, name=name)
    return Mlp(hidden, act=cfg.act, features_are_tokens=features_are_tokens, name=name)


class MixerBlock(nn.Module):
    """x + mlp_tokens(norm1(x)ᵀ)ᵀ, then x + mlp_channels(norm2(x)); x (..., N, C)."""

    config: MixerConfig

    @nn.compact
    def __call__(self, x: jax.Array, rules: Rules) -> jax.Array:
        cfg = self.config
        tokens_hidden, channels_hidden = cfg.mlp_hidden
        y = jnp.swapaxes(LayerNorm(cfg.norm_eps, name="norm1")(x, rules), -1, -2)  # (..., C, N)
        x = x + jnp.swapaxes(_mlp(cfg, tokens_hidden, "mlp_tokens", features_are_tokens=True)(y, rules), -1, -2)
        x = x + _mlp(cfg, channels_hidden, "mlp_channels")(LayerNorm(cfg.norm_eps, name="norm2")(x, rules), rules)
        return probe(self, "out", x)


class MlpMixer(ImageModel, nn.Module):
    """timm `MlpMixer`.

    Call forms (rank-polymorphic over leading batch axes), as `VisionTransformer`:
      `apply(v, images, rules)`: images (..., H, W, 3) normalised NHWC → (logits (..., K), aux).
      `apply(v, images, method="embed")` → h₀ (..., N, C), the stem output.
      `apply(v, tokens, rules, method="forward_tokens")`: from h₀ → (logits, aux).
    """

    config: MixerConfig
    data_config: DataConfig = DataConfig()

    @property
    def layout(self) -> TokenLayout:
        # Token mixing has one weight row per token position: deleting tokens is impossible, so the
        # faithfulness metric zeroes them instead (the official `droppable_tokens_p=False`).
        return TokenLayout(num_prefix=0, grid=self.config.grid_size, droppable=False)

    @property
    def capabilities(self) -> Capabilities:
        cfg = self.config
        gaps = ("no attention (not a Vision Transformer)",)
        return Capabilities(
            depth=cfg.depth,
            num_classes=cfg.num_classes,
            head=cfg.num_classes > 0,
            relevance_gaps=gaps,
            centred_tokens=True,  # pre-LayerNorm blocks and a final LayerNorm
        )

    def setup(self):
        cfg = self.config
        ph, pw = cfg.patch_size
        self.stem = nn.Conv(
            cfg.embed_dim,
            (ph, pw),
            strides=(ph, pw),
            padding="VALID",
            kernel_init=nn.initializers.lecun_normal(),
            name="stem",
        )
        self.blocks = [MixerBlock(cfg, name=f"blocks_{i}") for i in range(cfg.num_blocks)]
        self.norm = LayerNorm(cfg.norm_eps, name="norm")
        self.head = Linear(cfg.num_classes, name="head") if cfg.num_classes > 0 else None

    @staticmethod
    def bias_group(path: str) -> tuple[str, int | None]:
        """Where FullGrad puts the bias map of the bias probe at `path` (the module path).

        ('block', l) for per-token biases inside block l; ('unassigned', l) for block l's
        token-MLP fc1, whose map is indexed by (channel, hidden unit), not by token;
        ('end', None) for the final norm; ('head', None) for the head (added to token 0, a
        patch here, as the official implementation does).
        """
        top = path.split("/")[0]
        if top.startswith("blocks_"):
            layer = int(top.split("_")[1])
            return ("unassigned" if path.endswith("mlp_tokens/fc1") else "block"), layer
        if path == "norm":
            return "end", None
        return "head", None

    def embed(self, images: jax.Array) -> jax.Array:
        """Patch embedding: (..., H, W, C_in) → h₀ (..., N, C), row-major patches."""
        x = self.stem(images)
        return x.reshape(*x.shape[:-3], -1, x.shape[-1])

    def forward_head(self, pooled: jax.Array, rules: Rules = VANILLA, dist: jax.Array | None = None) -> jax.Array:
        """Token-mean features (..., C) → logits (..., K) (the features themselves without a head)."""
        return pooled if self.head is None else self.head(pooled)

    def forward_tokens(
        self,
        tokens: jax.Array,
        rules: Rules = VANILLA,
        positions: jax.Array | None = None,
        mask: jax.Array | None = None,
    ) -> tuple[jax.Array, Aux]:
        """Run the network from h₀ (..., N, C); returns (logits (..., K), aux). All N tokens are always there
        (`positions` is not needed) and never padded (`mask` must be None)."""
        if mask is not None:
            raise ValueError("image tokens are never padded: call forward_tokens without a mask")
        tokens = probe(self, "tokens", tokens)
        x, blocks = tokens, []
        for block in self.blocks:
            x = block(x, rules)
            blocks.append(BlockAux(out=x))
        x = self.norm(x, rules)
        pooled = x.mean(-2) if self.config.global_pool == "avg" else x
        return self.forward_head(pooled, rules), Aux(tokens=tokens, blocks=blocks, features=x, pooled=pooled)

    def __call__(self, images: jax.Array, rules: Rules = VANILLA) -> tuple[jax.Array, Aux]:
        return self.forward_tokens(self.embed(images), rules)
