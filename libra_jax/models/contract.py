"""The model contract: everything the attribution methods and metrics may ask of a model (docs/design.md).

A model is a Flax Linen module. Its *traced* members run inside `model.apply` (e.g.
`model.apply({"params": p}, x, method="embed")`); its *static* members (`layout`, `capabilities`,
`bias_group`, `check_inputs`, `token_mask`) are plain Python on the unbound module. Shapes are per example
and rank-polymorphic: a leading batch axis may precede every one of them.

Probes. The methods read gradients w.r.t. intermediates from one backward pass through zero-valued
probes in the Flax collection `PROBES` (see models/layers.py), which a model names as follows:
`tokens` (h₀), `blocks_{l}/out` (h_{l+1}), `blocks_{l}/attn/attn` (A_l, models with attention),
`attn_pool/attn` (the attention pool's A), `words` (text models: the word-embedding lookup alone, before
positions / token types are added or a scale applied; `ixg(embedding="word")` reads it), and `<module path>/bias`
on every bias (FullGrad's bias maps, placed by `bias_group`). `probe_path` spells these paths. The
`OPTIONAL_PROBES` are recorded only when a method asks for them (`core.single_pass(probes=...)`), so the default
record costs what it did without them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NotRequired, Protocol, TypedDict, runtime_checkable

import jax

from libra_jax.rules import Rules

PROBES = "perturbations"
"""The Flax collection of the zero-valued probes."""

MODEL_KINDS = ("image", "text_classifier", "decoder")
"""The values of `Capabilities.kind`."""

BIAS_GROUPS = ("block", "pre", "end", "broadcast", "head", "unassigned")
"""Where FullGrad puts a bias map (`Model.bias_group`): inside block l; before block 0 (counted at layer 0
only); per token after the blocks; one row added to every token; a pooled head bias (added to token 0, as
the official implementation does); no token axis at all (left out of the maps, kept for the bookkeeping)."""


OPTIONAL_PROBES = {"norm1": "norm1_out"}
"""Probes a model records only on request: kind → the probe's name inside each block `blocks_{l}`. 'norm1' is
block l's first norm output, the attention's input in a pre-norm block (BlockAux 'norm1'); a model that
records it says so in `Capabilities.optional_probes`."""


def probe_path(kind: str, index: int | None = None) -> tuple[str, ...]:
    """The probe tree path of `kind`: 'tokens', 'words', 'out' / 'attn' / an `OPTIONAL_PROBES` kind of block
    `index`, or 'pool_attn'."""
    paths = {
        "tokens": ("tokens",),
        "words": ("words",),
        "out": (f"blocks_{index}", "out"),
        "attn": (f"blocks_{index}", "attn", "attn"),
        "pool_attn": ("attn_pool", "attn"),
        **{kind: (f"blocks_{index}", name) for kind, name in OPTIONAL_PROBES.items()},
    }
    if kind not in paths:
        raise ValueError(f"unknown probe kind {kind!r}; expected one of {sorted(paths)}")
    return paths[kind]


def probe_at(tree: dict, kind: str, index: int | None = None):
    """The entry of a probe (or probe-gradient) tree at `probe_path(kind, index)`."""
    for name in probe_path(kind, index):
        tree = tree[name]
    return tree


@dataclasses.dataclass(frozen=True)
class TokenLayout:
    """How the token sequence h₀ (N, C) is laid out, and how a token map is shown.

    num_prefix: tokens before the content tokens (cls, distillation, registers). They are never ranked or
      removed by the faithfulness metric and are dropped from grid maps.
    grid: (gh, gw) when the N − num_prefix content tokens are a row-major patch grid; None for a plain
      sequence (text). Public maps are (B, gh, gw) on a grid and (B, N) otherwise.
    droppable: whether tokens may be removed from the sequence (else the faithfulness metric zeroes them:
      position tables or token-mixing weights index every position).
    needs_positions: whether `forward_tokens` must be told the `positions` of the tokens it gets once some
      were removed (RoPE: the rotation depends on the position, which h₀ does not carry).
    """

    num_prefix: int = 0
    grid: tuple[int, int] | None = None
    droppable: bool = True
    needs_positions: bool = False

    def to_map(self, token_maps: jax.Array) -> jax.Array:
        """(..., N) token maps → (..., gh, gw) patch maps (prefix dropped) on a grid; unchanged otherwise."""
        if self.grid is None:
            return token_maps
        gh, gw = self.grid
        return token_maps[..., self.num_prefix :].reshape(*token_maps.shape[:-1], gh, gw)


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What a model offers beyond the core members; methods declare which of these they need.

    kind: what goes in and comes out, for code that must treat them differently (the command line): "image"
      (images in; class logits or an embedding out), "text_classifier" (a `TextInputs` in, class logits out) or
      "decoder" (a `TextInputs` in, next-token logits at every position out). An image model has a `data_config`
      (mean / std): gradients at the pixels and image baselines (black, blurred) are defined for it.
    depth: number of blocks L (aux['blocks'] has L entries).
    num_classes: width of a classifier output (0: the output is not class logits, e.g. an embedding).
    head: `forward_head` turns pooled features into the explained output (a classifier or a projection).
    attention: every block reports its attention A_l (H, N, N) in aux and probes it.
    class_token: token 0 is a class token (the row that attention methods read).
    query_row: without a class token, the attention row that the row-reading methods (GradSAM, raw attention,
      rollout, GenAtt) read instead, e.g. −1 for a causal decoder (the last position, whose next-token logits
      are explained); None: those methods are not defined.
    blockwise: `enter_blocks`, `forward_block` and `final_norm` run the blocks one at a time (LeGrad).
    attention_pool: the head pools with attention (`attention_pool`, a MAP head).
    relevance_gaps: why Chefer's LRP relevance pass (`relevance_record`) is not defined for this model, as
      phrases ('no class token', 'a gated MLP', ...); empty when it is.
    relevance_kind: which pass reads the `relevance_record`: "vit" (pre-norm blocks, a `RelevanceRecord`,
      methods/lrp.py) or "bert" (post-norm blocks, a `BertRelevanceRecord` of models/bert_relevance.py,
      methods/lrp_text.py).
    centred_tokens: h₀ reaches the output only through mean-centring norms (pre-norm LayerNorm blocks and a
      final LayerNorm), so adding a constant to all channels of a token changes nothing: Σ_c ∂f/∂h₀[t,c] = 0
      for every token and every rule preset (both LayerNorm rules keep the mean subtraction).
    optional_probes: the `OPTIONAL_PROBES` kinds the model records when asked (its blocks probe them and report
      them in `BlockAux`), e.g. ('norm1',) for a pre-norm Vision Transformer.
    """

    depth: int
    kind: str = "image"
    num_classes: int = 0
    head: bool = True
    attention: bool = False
    class_token: bool = False
    query_row: int | None = None
    blockwise: bool = False
    attention_pool: bool = False
    relevance_gaps: tuple[str, ...] = ("no LRP relevance pass",)
    relevance_kind: str = "vit"
    centred_tokens: bool = False
    optional_probes: tuple[str, ...] = ()

    def __post_init__(self):
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"Capabilities.kind={self.kind!r}; expected one of {MODEL_KINDS}")


Requirement = Callable[[Capabilities], str | None]
"""A method's need: capabilities → None when met, else the problem, phrased for the user."""


class BlockAux(TypedDict):
    """What block l reports: out h_{l+1} (N, C); with attention, attn A_l (H, N, N) and post_attn (the
    residual stream after the attention add, (N, C)); with `Capabilities.optional_probes`, each of those kinds
    (norm1: the first norm's output (N, C))."""

    out: jax.Array
    attn: NotRequired[jax.Array]
    post_attn: NotRequired[jax.Array]
    norm1: NotRequired[jax.Array]


class Aux(TypedDict):
    """The second output of `forward_tokens`: tokens h₀ (N, C) as probed; blocks (one `BlockAux` per block);
    features (N, C) after the final norm; pooled (C,) the head's input; pool_attn (H, 1, N − prefix) for an
    attention-pool head; words (N, C) for text models called on their inputs (`__call__`, not `forward_tokens`):
    the probed word-embedding lookup, the part of h₀ that the ids alone give."""

    tokens: jax.Array
    blocks: list[BlockAux]
    features: jax.Array
    pooled: jax.Array
    pool_attn: NotRequired[jax.Array]
    words: NotRequired[jax.Array]


@runtime_checkable
class Model(Protocol):
    """The members every model implements (traced ones run inside `apply`); see the module docstring.

    Blockwise members (`Capabilities.blockwise`) and `relevance_record` (`Capabilities.relevance_gaps`
    empty) are only called when the capability says they exist.
    """

    @property
    def layout(self) -> TokenLayout: ...

    @property
    def capabilities(self) -> Capabilities: ...

    def check_inputs(self, inputs: Any) -> None:
        """Static: raise ValueError naming what is wrong with a batch of inputs (shapes, dtype; values at run time)."""

    def token_mask(self, inputs: Any) -> jax.Array | None:
        """Static: (..., N) bool, False at padded positions of a batch of inputs; None when nothing is padded."""

    def embed(self, inputs: Any) -> jax.Array:
        """Traced: inputs (an image (H, W, C), or a model-defined pytree such as text ids) → h₀ (N, C)."""

    def forward_tokens(
        self,
        tokens: jax.Array,
        rules: Rules,
        positions: jax.Array | None = None,
        mask: jax.Array | None = None,
    ) -> tuple[jax.Array, Aux]:
        """Traced: h₀ (n, C) → (output (K,), aux). n may be < N after removals: `positions` (n,) int then
        gives each token's index in the full layout; `mask` (n,) bool marks real (not padded) tokens."""

    def forward_head(self, pooled: jax.Array, rules: Rules, dist: jax.Array | None = None) -> jax.Array:
        """Traced: pooled final features (C,) → output (K,); `dist` (C,) is the distillation token's
        feature for two-head models (ignored by others)."""

    def bias_group(self, path: str) -> tuple[str, int | None]:
        """Static: (group in `BIAS_GROUPS`, block index or None) of the bias probe at module path `path`."""

    def __call__(self, inputs: Any, rules: Rules) -> tuple[jax.Array, Aux]:
        """Traced: `forward_tokens(embed(inputs), rules, mask=token_mask(inputs))`."""


@runtime_checkable
class BlockwiseModel(Model, Protocol):
    """The members behind `Capabilities.blockwise` and `attention_pool` (traced, per example)."""

    def enter_blocks(self, tokens: jax.Array, rules: Rules) -> jax.Array:
        """h₀ (N, C) → the input of block 0 (e.g. through a pre-norm)."""

    def forward_block(
        self, x: jax.Array, index: int, rules: Rules, positions: jax.Array | None = None
    ) -> tuple[jax.Array, BlockAux]:
        """Block `index` alone: its input (N, C) → (its output (N, C), its aux)."""

    def final_norm(self, x: jax.Array, rules: Rules) -> jax.Array:
        """The norm after the blocks, on tokens (N, C) or a pooled (C,) feature."""

    def attention_pool(self, features: jax.Array, rules: Rules) -> tuple[jax.Array, jax.Array]:
        """Attention-pool head: features (N, C) → (pooled (C,), its attention (H, 1, N − prefix))."""


class RelevanceBlock(TypedDict):
    """One plain pre-norm block as Chefer's relevance pass reads it: its input, norm1 and norm2 outputs,
    fused q/k/v (N, 3C), attention A (H, N, N), the attention and MLP branches added to the residual stream
    (N, C), the residual after the attention add, the activated MLP hidden (N, M), and the bias-free
    kernels (in, out) of qkv, proj, fc1 and fc2."""

    input: jax.Array
    norm1: jax.Array
    qkv: jax.Array
    attn: jax.Array
    attn_branch: jax.Array
    post_attn: jax.Array
    norm2: jax.Array
    hidden: jax.Array
    mlp_branch: jax.Array
    qkv_kernel: jax.Array
    proj_kernel: jax.Array
    fc1_kernel: jax.Array
    fc2_kernel: jax.Array


class RelevanceRecord(TypedDict):
    """`relevance_record`'s output for one example: output (K,), aux, one `RelevanceBlock` per block,
    head_kernel (C, K), and the embedding: patches (P, C) (the patch projection's output), prefix (npt, C)
    token embeddings, pos (N, C) position embedding per token (None without one) and patch_kernel
    (ph, pw, C_in, C)."""

    output: jax.Array
    aux: Aux
    blocks: list[RelevanceBlock]
    head_kernel: jax.Array
    patches: jax.Array
    prefix: jax.Array
    pos: jax.Array | None
    patch_kernel: jax.Array


@runtime_checkable
class RelevanceModel(Model, Protocol):
    """The member behind `Capabilities.relevance_gaps == ()`."""

    def relevance_record(self, params: dict, image: jax.Array, rules: Rules, probes: dict | None = None):
        """Static: one forward of `image` with `probes` (or none) → `RelevanceRecord`."""
