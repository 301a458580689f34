"""Decoder-only language models (Hugging Face Llama / Mistral / Qwen2 / Qwen3, GPT-2, Gemma 2 / 3 layouts)
in Flax Linen, with LibraGrad rules and probes, as one configurable model.

    model = Decoder(config)
    logits, aux = model.apply({"params": params}, text_inputs(ids, attention_mask), rules)

ids (..., N) int, attention_mask (..., N) 1 = token / 0 = padding; logits (..., N, V) are the next-token
logits at every position. Prompts may be LEFT-padded: position ids come from the mask (as transformers
computes them in `generate`) and padded keys are masked out, so a padded batch equals its unpadded prompts
and padded positions get exactly zero gradient (nothing real reads them).

The inputs are a `TextInputs` (models/text_inputs.py; token types are not read). The model implements the
contract (models/contract.py, docs/design.md): `aux["tokens"]` is h₀ (the word
embeddings, ×√C for Gemma, + learned positions for GPT-2), `aux["words"]` the word-embedding lookup alone (probe
'words', for `ixg(embedding="word")`), `aux["blocks"][i]` = {"out", "attn",
"post_attn"}, zero probes sit at h₀, on every block output, on every attention matrix and on every bias;
`bias_group` places bias maps for FullGrad; the split points are `embed` / `forward_tokens`.
Rules: RMSNorm rms / LayerNorm σ constant (`ops.rms_norm`, `layers.LayerNorm`), A constant after RoPE,
masking and soft-capping (`ops.attention`), activation gates constant and ½ on gated products
(`layers.Mlp` / `layers.GluMlp`), final logit soft-capping c·tanh(z/c) with its gate tanh(z/c)/(z/c)
constant (`ops/softcap.py`). Every map is then linear in h₀ and the biases under `libra_logit`, so
FullGrad sums to the explained (soft-capped) logit.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import linen as nn

from libra_jax import ops
from libra_jax.models.contract import Aux, BlockAux, Capabilities, TokenLayout
from libra_jax.models.layers import GluMlp, LayerNorm, Linear, Mlp, merge_heads, probe, split_heads, zero_probe
from libra_jax.models.rope1d import RopeScaling, apply_rope_half, inverse_frequencies, rope_angles
from libra_jax.models.text_inputs import TextInputs, check_text_inputs
from libra_jax.ops.softcap import softcap
from libra_jax.rules import PRESETS, Rules

VANILLA = PRESETS["vanilla"]
LAYER_TYPES = ("full_attention", "sliding_attention")


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Architecture of a decoder LM (field names follow transformers' config.json where they exist).

    num_kv_heads < num_heads is grouped-query attention (k/v shared by num_heads/num_kv_heads queries).
    qkv_bias: q/k/v projections carry biases (Qwen2, GPT-2). qk_norm: per-head norm of q and k before RoPE
    (Qwen3, Gemma 3). sliding_window: keys further than this many positions back are masked, in the layers
    whose `layer_types` entry is "sliding_attention" (all layers when layer_types is None: Mistral).
    tie_embeddings: the LM head is the transposed word embedding.
    norm: "rms" or "layer" (LayerNorm with bias, GPT-2); norm_offset: RMSNorm scales by (offset + w)
    (Gemma: 1). positions: "rope" or "learned" (GPT-2, added to h₀). fused_qkv: one q/k/v projection
    ('qkv', GPT-2's c_attn). gated_mlp: act(gate)·up (False: fc1 → act → fc2). embed_scale: h₀ = word
    embedding × √hidden_size (Gemma). sandwich_norms: norms on the attention and MLP outputs too (Gemma 2/3).
    attn_scale: logit scale (None: head_dim^−½). attn_softcap / final_softcap: c of c·tanh(x/c) on the
    attention logits / the output logits (Gemma 2). local_rope_theta / local_rope_scaling: RoPE of the
    sliding layers when it differs (Gemma 3).
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
    layer_types: tuple[str, ...] | None = None
    tie_embeddings: bool = False
    norm: str = "rms"
    norm_offset: float = 0.0
    positions: str = "rope"
    fused_qkv: bool = False
    gated_mlp: bool = True
    embed_scale: bool = False
    sandwich_norms: bool = False
    attn_scale: float | None = None
    attn_softcap: float | None = None
    final_softcap: float | None = None
    local_rope_theta: float | None = None
    local_rope_scaling: RopeScaling | None = None

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_attention_heads {self.num_heads} is not a multiple of num_key_value_heads {self.num_kv_heads}"
            )
        if self.positions == "rope" and self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim; got {self.head_dim}")
        choices = {"norm": ("rms", "layer"), "positions": ("rope", "learned")}
        for field, allowed in choices.items():
            if getattr(self, field) not in allowed:
                raise ValueError(f"DecoderConfig.{field}={getattr(self, field)!r}; expected one of {allowed}")
        if self.layer_types is not None:
            if len(self.layer_types) != self.num_layers or not set(self.layer_types) <= set(LAYER_TYPES):
                raise ValueError(
                    f"layer_types must name one of {LAYER_TYPES} per layer ({self.num_layers}); got {self.layer_types}"
                )

    def is_sliding(self, layer: int) -> bool:
        """Whether layer `layer` masks keys beyond the sliding window."""
        if self.sliding_window is None:
            return False
        return self.layer_types is None or self.layer_types[layer] == "sliding_attention"

    @property
    def num_prefix_tokens(self) -> int:
        """No class / register tokens: every position is a text token."""
        return 0

    @property
    def num_classes(self) -> int:
        """The 'classes' of the logits' last axis: the vocabulary."""
        return self.vocab_size

    @property
    def max_length(self) -> int:
        """The longest prompt (`check_text_inputs`): the context."""
        return self.max_positions

    @property
    def type_vocab_size(self) -> int:
        """No token types (`check_text_inputs` then wants them all 0)."""
        return 0

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
    """x / rms(x) · (offset + γ) over the last axis with the LibraGrad rule (`rules.norm`: rms constant).

    The statistics are float32 for narrower inputs (`ops.rms_norm`); `dtype` casts the output (the pre-norms
    hand the float32 residual stream to bf16 sublayers)."""

    eps: float = 1e-6
    offset: float = 0.0
    dtype: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, rules: Rules) -> jax.Array:
        init = nn.initializers.zeros if self.offset else nn.initializers.ones
        scale = self.offset + self.param("scale", init, (x.shape[-1],)).astype(x.dtype)
        y = ops.rms_norm(x, scale, eps=self.eps, rule=rules.norm)
        return y if self.dtype is None else y.astype(self.dtype)


def make_norm(cfg: DecoderConfig, name: str, dtype: str | None = None) -> nn.Module:
    """The config's norm module (RMSNorm or LayerNorm), called as norm(x, rules); `dtype` casts its output."""
    if cfg.norm == "layer":
        return LayerNorm(cfg.norm_eps, dtype=dtype, name=name)
    return RMSNorm(cfg.norm_eps, cfg.norm_offset, dtype=dtype, name=name)


class DecoderAttention(nn.Module):
    """Causal self-attention with GQA, optional split-half RoPE, q/k/v bias, q/k norm and logit soft-capping.

    Returns (out (..., N, C), A (..., H, N, N)). A zero probe named 'attn' sits on A; the attention rule
    acts after RoPE, soft-capping and masking.
    """

    config: DecoderConfig

    def _project(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        cfg = self.config
        d, h, kv = cfg.head_dim, cfg.num_heads, cfg.num_kv_heads
        if cfg.fused_qkv:
            q, k, v = jnp.split(Linear((h + 2 * kv) * d, cfg.qkv_bias, name="qkv")(x), [h * d, (h + kv) * d], -1)
        else:
            q = Linear(h * d, cfg.qkv_bias, name="q_proj")(x)
            k = Linear(kv * d, cfg.qkv_bias, name="k_proj")(x)
            v = Linear(kv * d, cfg.qkv_bias, name="v_proj")(x)
        return split_heads(q, h), split_heads(k, kv), split_heads(v, kv)

    @nn.compact
    def __call__(
        self, x: jax.Array, rules: Rules, bias: jax.Array, rope: tuple[jax.Array, jax.Array] | None
    ) -> tuple[jax.Array, jax.Array]:
        """x (..., N, C); bias (..., 1, N, N) the mask; rope (sin, cos) (..., N, head_dim) or None."""
        cfg = self.config
        h, kv = cfg.num_heads, cfg.num_kv_heads
        q, k, v = self._project(x)
        if cfg.qk_norm:
            q = RMSNorm(cfg.norm_eps, cfg.norm_offset, name="q_norm")(q, rules)
            k = RMSNorm(cfg.norm_eps, cfg.norm_offset, name="k_norm")(k, rules)
        if rope is not None:
            q, k = apply_rope_half(q, *rope), apply_rope_half(k, *rope)
        # GQA: each k/v head serves h/kv consecutive query heads; the repeat's gradient sums back over them.
        k, v = (jnp.repeat(t, h // kv, axis=-3) for t in (k, v))
        scale = cfg.head_dim**-0.5 if cfg.attn_scale is None else cfg.attn_scale
        if cfg.attn_softcap is not None:
            # c·tanh(s/c) enters as the additive correction c·tanh(s/c) − s to the logits s: the value is
            # exact, and every rule sees the true chain (q/k/bias are detached together under "detach"). In
            # float32 under bf16 compute, as the logits inside `ops.attention`, so the correction cancels there.
            wide = jnp.promote_types(q.dtype, jnp.float32)
            s = jnp.einsum("...hqd,...hkd->...hqk", (q * scale).astype(wide), k.astype(wide))
            bias = bias + softcap(s, cfg.attn_softcap) - s
        n = x.shape[-2]
        p = zero_probe(self, "attn", (*x.shape[:-2], h, n, n), x.dtype)
        out, attn = ops.attention(q, k, v, bias, p, scale=scale, rule=rules.attention)
        return Linear(x.shape[-1], cfg.o_bias, name="o_proj")(merge_heads(out)), attn


class DecoderBlock(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x)); with sandwich norms the sublayer outputs
    are normed too (attn_out_norm, mlp_out_norm). The output carries the probe 'out'.

    `dtype`: compute dtype of the attention and MLP (the pre-norms cast their inputs); the residual stream x
    keeps its own dtype (float32 under bf16 compute: the adds promote)."""

    config: DecoderConfig
    dtype: str | None = None

    @nn.compact
    def __call__(
        self, x: jax.Array, rules: Rules, bias: jax.Array, rope: tuple[jax.Array, jax.Array] | None
    ) -> tuple[jax.Array, BlockAux]:
        cfg = self.config
        a, attn = DecoderAttention(cfg, name="attn")(make_norm(cfg, "norm1", self.dtype)(x, rules), rules, bias, rope)
        if cfg.sandwich_norms:
            a = make_norm(cfg, "attn_out_norm")(a, rules)
        x = x + a
        post_attn = x
        if cfg.gated_mlp:
            mlp = GluMlp(cfg.intermediate_size, act=cfg.act, bias=cfg.mlp_bias, packed=False, name="mlp")
        else:
            mlp = Mlp(cfg.intermediate_size, act=cfg.act, bias=cfg.mlp_bias, name="mlp")
        m = mlp(make_norm(cfg, "norm2", self.dtype)(x, rules), rules)
        if cfg.sandwich_norms:
            m = make_norm(cfg, "mlp_out_norm")(m, rules)
        x = probe(self, "out", x + m)
        return x, BlockAux(out=x, attn=attn, post_attn=post_attn)


class Decoder(nn.Module):
    """Decoder LM: embeddings → blocks → final norm → LM head (tied or not) [→ soft-cap]. See the module docstring."""

    config: DecoderConfig
    remat: bool = False
    """Recompute each block's activations in the backward pass instead of storing them (long prompts: less
    memory, ~1/3 more compute). Param names are unchanged, so checkpoints load either way."""
    dtype: str | None = None
    """Compute dtype (e.g. "bfloat16") of every block's attention and MLP and of the LM head (params are cast
    at use and stay stored as they are, float32 or bfloat16). The residual stream h₀ … h_L, the norms'
    statistics, the softmax and the logits are float32. None computes everything in the params' own dtype."""

    def setup(self):
        cfg = self.config
        init = nn.initializers.normal(0.02)
        self.embed_tokens = self.param("embed_tokens", init, (cfg.vocab_size, cfg.hidden_size))
        if cfg.positions == "learned":
            self.embed_positions = self.param("embed_positions", init, (cfg.max_positions, cfg.hidden_size))
        block = nn.remat(DecoderBlock, static_argnums=(2,)) if self.remat else DecoderBlock  # 2 = rules (0 is self)
        self.blocks = [block(cfg, self.dtype, name=f"blocks_{i}") for i in range(cfg.num_layers)]
        self.norm = make_norm(cfg, "norm", self.dtype)
        self.lm_head = None if cfg.tie_embeddings else Linear(cfg.vocab_size, use_bias=False, name="lm_head")

    @property
    def layout(self) -> TokenLayout:
        """A plain sequence, every position shown. Tokens are zeroed, never removed (positions come from the
        mask)."""
        return TokenLayout(num_prefix=0, grid=None, droppable=False, needs_positions=False)

    @property
    def capabilities(self) -> Capabilities:
        cfg = self.config
        return Capabilities(
            depth=cfg.num_layers,
            kind="decoder",
            num_classes=cfg.vocab_size,  # next-token logits at every position: explain one with text/next_token.py
            head=True,
            attention=True,
            class_token=False,
            query_row=-1,  # the last position: left padding keeps it a real token
            relevance_gaps=("no class token (a causal decoder explains one position's next-token logit)",),
        )

    @nn.nowrap
    def check_inputs(self, inputs: TextInputs) -> None:
        """A `TextInputs` batch (B, N) (models/text_inputs.py `check_text_inputs`): ids in the vocabulary (also
        under jit), a prompt no longer than the context, one mask entry per id."""
        check_text_inputs(inputs, self.config)

    @nn.nowrap
    def token_mask(self, inputs: TextInputs) -> jax.Array:
        """(..., N) bool: the attention mask (False at the left padding)."""
        return inputs.attention_mask > 0

    @staticmethod
    def bias_group(path: str) -> tuple[str, int | None]:
        """Where FullGrad puts the bias map of the bias probe at `path` (as `VisionTransformer.bias_group`):
        ('block', l) inside block l; ('end', None) for per-token modules after the blocks."""
        top = path.split("/")[0]
        if top.startswith("blocks_"):
            return "block", int(top.split("_")[1])
        return "end", None

    def embed(self, inputs: TextInputs) -> jax.Array:
        """h₀ = word embeddings (×√C with embed_scale; + learned position embeddings): ids (..., N) → (..., N, C)."""
        return self._embed(inputs)[0]

    def _embed(self, inputs: TextInputs) -> tuple[jax.Array, jax.Array]:
        """(h₀, the word-embedding lookup alone before any scale (probe 'words')), both (..., N, C)."""
        cfg = self.config
        words = probe(self, "words", self.embed_tokens[inputs.ids])
        x = words
        if cfg.embed_scale:
            x = x * jnp.asarray(cfg.hidden_size**0.5, x.dtype)  # rounded to the compute dtype, as transformers
        if cfg.positions == "learned":
            x = x + self.embed_positions[position_ids(inputs.attention_mask)]
        return (x if self.dtype is None else x.astype(jnp.float32)), words  # the residual stream stays float32

    def _rope(self, positions: jax.Array, sliding: bool) -> tuple[jax.Array, jax.Array] | None:
        cfg = self.config
        if cfg.positions != "rope":
            return None
        theta, scaling = cfg.rope_theta, cfg.rope_scaling
        if sliding and cfg.local_rope_theta is not None:
            theta, scaling = cfg.local_rope_theta, cfg.local_rope_scaling or RopeScaling()
        return rope_angles(positions, inverse_frequencies(cfg.head_dim, theta, scaling))

    def forward_tokens(
        self,
        tokens: jax.Array,
        rules: Rules = VANILLA,
        positions: jax.Array | None = None,
        mask: jax.Array | None = None,
    ) -> tuple[jax.Array, Aux]:
        """Run the network from h₀ (..., N, C); `mask` (..., N) bool/0-1 marks real tokens (None: all real),
        `positions` (..., N) the RoPE positions (None: counted over the real tokens). Returns (logits (..., N, V),
        aux); aux['pooled'] is the normed features (..., N, C): the LM head reads every position."""
        cfg = self.config
        tokens = probe(self, "tokens", tokens)
        mask = jnp.ones(tokens.shape[:-1], bool) if mask is None else mask
        positions = position_ids(mask) if positions is None else positions
        context = {  # (mask bias, RoPE table) for full and for sliding-window layers, built once
            sliding: (
                attention_mask_bias(mask, cfg.sliding_window if sliding else None, tokens.dtype),
                self._rope(positions, sliding),
            )
            for sliding in {cfg.is_sliding(i) for i in range(cfg.num_layers)}
        }
        x, blocks = tokens, []
        for i, block in enumerate(self.blocks):
            x, block_aux = block(x, rules, *context[cfg.is_sliding(i)])
            blocks.append(block_aux)
        x = self.norm(x, rules)
        return self.forward_head(x, rules), Aux(tokens=tokens, blocks=blocks, features=x, pooled=x)

    def forward_head(self, pooled: jax.Array, rules: Rules = VANILLA, dist: jax.Array | None = None) -> jax.Array:
        """LM head (tied or not) [→ soft-cap]: normed features (..., C) → logits (..., V) (`dist` is not read)."""
        logits = pooled @ self.embed_tokens.T.astype(pooled.dtype) if self.lm_head is None else self.lm_head(pooled)
        if self.dtype is not None:
            logits = logits.astype(jnp.float32)  # the target's softmax over the vocabulary in float32
        if self.config.final_softcap is not None:
            logits = softcap(logits, self.config.final_softcap, rules.activation)
        return logits

    def __call__(self, inputs: TextInputs, rules: Rules = VANILLA) -> tuple[jax.Array, Aux]:
        tokens, words = self._embed(inputs)
        logits, aux = self.forward_tokens(tokens, rules, mask=self.token_mask(inputs))
        return logits, Aux(**aux, words=words)
