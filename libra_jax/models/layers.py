"""Flax Linen building blocks whose non-linearities call the LibraGrad primitives.

All modules are rank-polymorphic over leading axes: they run on one example (N, C) — the
form the attribution functions vmap — or on a batch (B, N, C).

Probes. Every bias-carrying module adds its bias as `b·(1 + s)`, with `s` a zero-valued
per-position perturbation named like the bias parameter (Flax's 'perturbations' collection):
∂f/∂s[t] = Σ_c b_c·∂f/∂out[t,c] is exactly FullGrad's bias map for that module, at no extra
cost and without the token-sum a gradient w.r.t. the bias parameter would take. In token-mixing
MLPs (MLP-Mixer) the features are the tokens, so there the probe runs over the features instead
(`features_are_tokens`): ∂f/∂s[t] = b_t·Σ_c ∂f/∂out[c,t]. Attention
modules add a zero probe on the post-softmax probabilities (∂f/∂A). Probes only exist when the
'perturbations' collection is passed to `apply`; without it the modules compute plain values.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from libra_jax import ops
from libra_jax.models.contract import PROBES
from libra_jax.models.rope import apply_rope
from libra_jax.rules import Rules

default_kernel_init = nn.initializers.truncated_normal(0.02)


def _probing(module: nn.Module, name: str) -> bool:
    return module.is_initializing() or module.has_variable(PROBES, name)


def probe(module: nn.Module, name: str, value: jax.Array) -> jax.Array:
    """`value + probes[name]` when probes are passed (or being created), else `value`."""
    return module.perturb(name, value, collection=PROBES) if _probing(module, name) else value


def zero_probe(module: nn.Module, name: str, shape: tuple[int, ...], dtype) -> jax.Array | None:
    """The zero-valued probe `name` of the given shape, or None when not probing."""
    if _probing(module, name):
        return module.perturb(name, jnp.zeros(shape, dtype), collection=PROBES)
    return None


def probed_bias(module: nn.Module, bias: jax.Array, positions: tuple[int, ...]) -> jax.Array:
    """bias·(1 + s[..., None]) with s the zero probe 'bias' over `positions`, or bias itself."""
    s = zero_probe(module, "bias", positions, bias.dtype)
    return bias if s is None else bias * (1 + s)[..., None]


class Linear(nn.Module):
    """y = x·W + b; W: (in, out) (torch Linear weight transposed).

    The bias probe is per position (..., ) or, with `features_are_tokens`, per feature (out,).
    """

    features: int
    use_bias: bool = True
    features_are_tokens: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", default_kernel_init, (x.shape[-1], self.features))
        y = jnp.matmul(x, kernel.astype(x.dtype))
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,)).astype(x.dtype)
            if self.features_are_tokens:
                s = zero_probe(self, "bias", bias.shape, bias.dtype)
                bias = bias if s is None else bias * (1 + s)
            else:
                bias = probed_bias(self, bias, y.shape[:-1])
            y = y + bias
        return y


class LayerNorm(nn.Module):
    """LayerNorm over the last axis with the LibraGrad σ rule (`rules.norm`).

    Normalises in x's dtype; `dtype` casts the output (a block's pre-norms hand the float32 residual
    stream to bf16 sublayers)."""

    eps: float = 1e-6
    dtype: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, rules: Rules) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,)).astype(x.dtype)
        bias = probed_bias(self, self.param("bias", nn.initializers.zeros, (c,)).astype(x.dtype), x.shape[:-1])
        y = ops.layer_norm(x, scale, bias, eps=self.eps, rule=rules.norm)
        return y if self.dtype is None else y.astype(self.dtype)


class LayerScale(nn.Module):
    """x·γ (no Libra rule: it is linear)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        gamma = self.param("gamma", nn.initializers.constant(1e-5), (x.shape[-1],))
        return x * gamma.astype(x.dtype)


class Mlp(nn.Module):
    """fc1 → activation → [norm] → fc2 (timm `Mlp`). `features_are_tokens`: see `Linear`."""

    hidden: int
    act: str = "gelu"
    bias: bool = True
    inner_norm: bool = False
    eps: float = 1e-6
    features_are_tokens: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, rules: Rules) -> jax.Array:
        linear = functools.partial(Linear, use_bias=self.bias, features_are_tokens=self.features_are_tokens)
        h = ops.activation(linear(self.hidden, name="fc1")(x), self.act, rules.activation)
        if self.inner_norm:
            h = LayerNorm(self.eps, name="norm")(h, rules)
        return linear(x.shape[-1], name="fc2")(h)


class GluMlp(nn.Module):
    """Gated MLP: fc1 → split → act(gate)·value (LibraGrad ½ gate rule) → [norm] → fc2.

    packed=True is timm `GluMlp` / `SwiGLUPacked`: one fc1 of width `hidden` whose halves are
    (gate, value), or (value, gate) with gate_last; fc2 takes hidden/2. packed=False is timm
    `SwiGLU`: separate fc1_g / fc1_x of width `hidden`. `features_are_tokens`: see `Linear`.
    """

    hidden: int
    act: str = "silu"
    bias: bool = True
    packed: bool = True
    gate_last: bool = False
    inner_norm: bool = False
    eps: float = 1e-6
    features_are_tokens: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, rules: Rules) -> jax.Array:
        linear = functools.partial(Linear, use_bias=self.bias, features_are_tokens=self.features_are_tokens)
        if self.packed:
            first, second = jnp.split(linear(self.hidden, name="fc1")(x), 2, axis=-1)
            gate, value = (second, first) if self.gate_last else (first, second)
        else:
            gate = linear(self.hidden, name="fc1_g")(x)
            value = linear(self.hidden, name="fc1_x")(x)
        h = ops.gate_product(ops.activation(gate, self.act, rules.activation), value, rules.gate)
        if self.inner_norm:
            h = LayerNorm(self.eps, name="norm")(h, rules)
        return linear(x.shape[-1], name="fc2")(h)


def split_heads(x: jax.Array, num_heads: int) -> jax.Array:
    """(..., N, H·D) → (..., H, N, D)."""
    x = x.reshape(*x.shape[:-1], num_heads, x.shape[-1] // num_heads)
    return jnp.swapaxes(x, -2, -3)


def merge_heads(x: jax.Array) -> jax.Array:
    """(..., H, N, D) → (..., N, H·D)."""
    x = jnp.swapaxes(x, -2, -3)
    return x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])


class QVBiasLinear(nn.Module):
    """Fused q/k/v projection whose bias is (q_bias, 0, v_bias) (timm BEiT / EVA; k has no bias).

    One probe 'bias' covers the whole concatenated bias, so its FullGrad map is the q and v bias maps
    together, as the official code (which merges them into one `qkv.bias`) counts them.
    """

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", default_kernel_init, (x.shape[-1], self.features))
        width = self.features // 3
        q_bias = self.param("q_bias", nn.initializers.zeros, (width,))
        v_bias = self.param("v_bias", nn.initializers.zeros, (width,))
        bias = jnp.concatenate([q_bias, jnp.zeros_like(q_bias), v_bias]).astype(x.dtype)
        return jnp.matmul(x, kernel.astype(x.dtype)) + probed_bias(self, bias, x.shape[:-1])


def relative_position_index(window: tuple[int, int]) -> np.ndarray:
    """BEiT's (N+1, N+1) index into the relative-position bias table, N = wh·ww (timm
    `gen_relative_position_index`): patch pairs by their 2-D offset, then 3 entries for cls→patch,
    patch→cls and cls→cls."""
    wh, ww = window
    coords = np.stack(np.meshgrid(np.arange(wh), np.arange(ww), indexing="ij")).reshape(2, -1)
    rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0)
    rel = (rel[..., 0] + wh - 1) * (2 * ww - 1) + rel[..., 1] + ww - 1
    num = (2 * wh - 1) * (2 * ww - 1) + 3
    index = np.zeros((wh * ww + 1,) * 2, np.int32)
    index[1:, 1:] = rel
    index[0, :] = num - 3
    index[:, 0] = num - 2
    index[0, 0] = num - 1
    return index


def relative_position_bias(module: nn.Module, window: tuple[int, int], num_heads: int) -> jax.Array:
    """The learned table 'relative_position_bias_table' ((2wh−1)(2ww−1)+3, H) of `module`, gathered to the
    (H, N+1, N+1) logit bias. A constant of the input: no rule and no FullGrad map (as officially)."""
    num = (2 * window[0] - 1) * (2 * window[1] - 1) + 3
    table = module.param("relative_position_bias_table", nn.initializers.zeros, (num, num_heads))
    return jnp.moveaxis(table[relative_position_index(window)], -1, 0)


class RelativePositionBias(nn.Module):
    """timm BEiT `RelativePositionBias`: one table shared by every block; returns (H, N+1, N+1)."""

    window: tuple[int, int]
    num_heads: int

    @nn.compact
    def __call__(self) -> jax.Array:
        return relative_position_bias(self, self.window, self.num_heads)


class Attention(nn.Module):
    """timm `Attention` (and BEiT / EVA attention): q/k/v projection, per-head softmax attention, output projection.

    `qkv_layout` (see `ViTConfig.qkv_layout`) picks the projection modules: 'fused' (`qkv` Linear),
    'qv_bias' (`qkv` with q_bias/v_bias, `QVBiasLinear`) or 'separate' (`q_proj`, bias-free `k_proj`,
    `v_proj`). `rel_pos_window` adds a per-block relative-position bias table (BEiT). The call may also
    get an additive logit bias (BEiT's shared table) and a RoPE (sin, cos) table for the non-prefix q/k
    (EVA); RoPE is applied before the attention rule, so q and k are detached after it, as officially.

    Returns (out (..., N, C), A (..., H, N, N)). A zero probe named 'attn' sits on A.
    """

    num_heads: int
    qkv_bias: bool = True
    proj_bias: bool = True
    qk_norm: bool = False
    inner_norm: bool = False
    eps: float = 1e-6
    qkv_layout: str = "fused"
    rel_pos_window: tuple[int, int] | None = None
    num_prefix_tokens: int = 0

    def _project(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        c = x.shape[-1]
        if self.qkv_layout == "separate":
            return (
                Linear(c, self.qkv_bias, name="q_proj")(x),
                Linear(c, False, name="k_proj")(x),
                Linear(c, self.qkv_bias, name="v_proj")(x),
            )
        qkv = (
            QVBiasLinear(3 * c, name="qkv")
            if self.qkv_layout == "qv_bias"
            else Linear(3 * c, self.qkv_bias, name="qkv")
        )
        return tuple(jnp.split(qkv(x), 3, axis=-1))

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        rules: Rules,
        bias: jax.Array | None = None,
        rope: tuple[jax.Array, jax.Array] | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """x (..., N, C); bias broadcastable to (..., H, N, N); rope (sin, cos) (..., N − prefix, D)."""
        c = x.shape[-1]
        q, k, v = (split_heads(t, self.num_heads) for t in self._project(x))
        if self.qk_norm:
            q = LayerNorm(self.eps, name="q_norm")(q, rules)
            k = LayerNorm(self.eps, name="k_norm")(k, rules)
        if rope is not None:
            npt = self.num_prefix_tokens
            sin, cos = (jnp.expand_dims(t, -3) for t in rope)  # broadcast over heads
            q, k = (jnp.concatenate([t[..., :npt, :], apply_rope(t[..., npt:, :], sin, cos)], -2) for t in (q, k))
        if self.rel_pos_window is not None:
            own = relative_position_bias(self, self.rel_pos_window, self.num_heads).astype(x.dtype)
            bias = own if bias is None else own + bias
        n = x.shape[-2]
        p = zero_probe(self, "attn", (*x.shape[:-2], self.num_heads, n, n), x.dtype)
        scale = (c // self.num_heads) ** -0.5
        out, attn = ops.attention(q, k, v, bias, p, scale=scale, rule=rules.attention)
        out = merge_heads(out)
        if self.inner_norm:
            out = LayerNorm(self.eps, name="norm")(out, rules)
        return Linear(c, self.proj_bias, name="proj")(out), attn


def captured(tree: dict, *path: str) -> jax.Array:
    """The `__call__` output of the module at `path` in Flax's `capture_intermediates` collection."""
    for name in path:
        tree = tree[name]
    return tree["__call__"][0]
