"""BERT-family sequence classifiers (BERT, RoBERTa, DistilBERT) in Flax Linen, with LibraGrad rules and probes.

One model covers the three Hugging Face `*ForSequenceClassification` architectures; they differ only in
data, not in structure:

  h₀ = word[ids] + pos[position ids] (+ type[token types])    — the token embeddings (probe 'tokens')
  x  = LN_emb(h₀)
  per block (post-norm): y = LN₁(x + attn(x, padding mask)); x = LN₂(y + mlp(y))   (probe 'out')
  logits = classifier(act(pooler(x[CLS])))

with act = tanh for BERT (pooler dense + tanh) and RoBERTa (classification head dense + tanh + out_proj)
and ReLU for DistilBERT (pre_classifier + ReLU). RoBERTa numbers positions from `pad_token_id + 1` and
skips pad tokens; DistilBERT has no token types. Every non-linearity goes through the LibraGrad
primitives (LN σ, GELU and tanh gates, attention), so every rule preset applies.

Call forms (rank-polymorphic over leading batch axes, like `VisionTransformer`):
  `apply(v, inputs, rules)`: a `TextInputs` (libra_jax/models/text_inputs.py) → (logits, aux).
  `apply(v, inputs, method="embed")` → h₀ (..., N, C).
  `apply(v, tokens, rules, mask=mask, method="forward_tokens")`: from h₀ → (logits, aux).

It implements the model contract (models/contract.py, docs/design.md), Chefer's relevance record included
(models/bert_relevance.py).

aux: 'tokens' h₀; 'words' the word embeddings alone (probe 'words'; `__call__` only);
'blocks': per block {'out', 'attn' A_l (H, N, N), 'post_attn' (the stream after the
attention sublayer, LN₁'s output)}; 'features' (last block output); 'pooled' (classifier input).
Padded keys get the additive bias finfo.min (as transformers), so their attention weight is exactly 0
and a padded sequence has exactly the logits, and its real tokens exactly the maps, of the unpadded one.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
from flax import linen as nn

from libra_jax import ops
from libra_jax.models import bert_relevance
from libra_jax.models.contract import Aux, BlockAux, Capabilities, TokenLayout
from libra_jax.models.layers import Attention, LayerNorm, Linear, Mlp, probe
from libra_jax.models.text_inputs import check_text_inputs
from libra_jax.rules import PRESETS, Rules

VANILLA = PRESETS["vanilla"]
FAMILIES = ("bert", "roberta", "distilbert")


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Architecture of a BERT-family classifier.

    family: "bert" (pooler dense + tanh), "roberta" (head dense + tanh, positions from pad_token_id + 1)
      or "distilbert" (pre_classifier + ReLU, no token types).
    type_vocab_size: rows of the token-type table (0: none, DistilBERT).
    """

    family: str = "bert"
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_positions: int = 512
    type_vocab_size: int = 2
    act: str = "gelu"
    norm_eps: float = 1e-12
    num_classes: int = 2
    pad_token_id: int = 0

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"unknown text model family {self.family!r}; expected one of {FAMILIES}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.family == "distilbert" and self.type_vocab_size:
            raise ValueError("DistilBERT has no token types: set type_vocab_size=0")

    @property
    def num_prefix_tokens(self) -> int:
        """Text maps cover every position, special tokens included: nothing is dropped."""
        return 0

    @property
    def head_act(self) -> str:
        return "relu" if self.family == "distilbert" else "tanh"

    @property
    def position_offset(self) -> int:
        """First position id of a real token: RoBERTa reserves ids ≤ pad_token_id."""
        return self.pad_token_id + 1 if self.family == "roberta" else 0

    @property
    def max_length(self) -> int:
        """The longest sequence the position table covers."""
        return self.max_positions - self.position_offset

    def replace(self, **changes) -> BertConfig:
        return dataclasses.replace(self, **changes)


def padding_bias(attention_mask: jax.Array, dtype) -> jax.Array:
    """(..., N) 1/0 mask → additive attention bias (..., 1, 1, N): 0 on real keys, finfo.min on padding."""
    keep = attention_mask.astype(bool)[..., None, None, :]
    return jnp.where(keep, 0.0, jnp.finfo(dtype).min).astype(dtype)


class BertBlock(nn.Module):
    """Post-norm block: y = norm1(x + attn(x)); out = norm2(y + mlp(y))."""

    config: BertConfig

    @nn.compact
    def __call__(self, x: jax.Array, rules: Rules, bias: jax.Array) -> tuple[jax.Array, BlockAux]:
        """x (..., N, C); bias (..., 1, 1, N) the padding bias."""
        cfg = self.config
        a, attn = Attention(cfg.num_heads, eps=cfg.norm_eps, name="attn")(x, rules, bias)
        y = LayerNorm(cfg.norm_eps, name="norm1")(x + a, rules)
        m = Mlp(cfg.intermediate_size, act=cfg.act, name="mlp")(y, rules)
        out = probe(self, "out", LayerNorm(cfg.norm_eps, name="norm2")(y + m, rules))
        return out, BlockAux(out=out, attn=attn, post_attn=y)


class BertClassifier(nn.Module):
    """HF `BertForSequenceClassification` / `RobertaForSequenceClassification` /
    `DistilBertForSequenceClassification` (see the module docstring for the call forms)."""

    config: BertConfig

    def setup(self):
        cfg = self.config
        init = nn.initializers.normal(0.02)
        c = cfg.hidden_size
        self.word_embeddings = self.param("word_embeddings", init, (cfg.vocab_size, c))
        self.position_embeddings = self.param("position_embeddings", init, (cfg.max_positions, c))
        if cfg.type_vocab_size:
            self.token_type_embeddings = self.param("token_type_embeddings", init, (cfg.type_vocab_size, c))
        self.embed_norm = LayerNorm(cfg.norm_eps, name="embed_norm")
        self.blocks = [BertBlock(cfg, name=f"blocks_{i}") for i in range(cfg.num_layers)]
        self.pooler = Linear(c, name="pooler")
        self.classifier = Linear(cfg.num_classes, name="classifier")

    @property
    def layout(self) -> TokenLayout:
        """A plain sequence: every position is shown ([CLS] and [SEP] included). Tokens are zeroed, never
        removed: [CLS] (position 0) is the pooled token and the padding mask spans the whole sequence."""
        return TokenLayout(num_prefix=0, grid=None, droppable=False, needs_positions=False)

    @property
    def capabilities(self) -> Capabilities:
        cfg = self.config
        return Capabilities(
            depth=cfg.num_layers,
            kind="text_classifier",
            num_classes=cfg.num_classes,
            head=True,
            attention=True,
            class_token=True,  # the head pools [CLS]
            relevance_gaps=(),
            relevance_kind="bert",
        )

    @nn.nowrap
    def check_inputs(self, inputs) -> None:
        """A `TextInputs` batch (B, N) (libra_jax/models/text_inputs.py `check_text_inputs`)."""
        check_text_inputs(inputs, self.config)

    @nn.nowrap
    def token_mask(self, inputs) -> jax.Array:
        """(..., N) bool: the attention mask (False at padding)."""
        return inputs.attention_mask > 0

    @nn.nowrap
    def relevance_record(self, params, inputs, rules: Rules, probes: dict | None = None):
        """Chefer's BERT relevance pass inputs from one forward of `inputs` (N,): see models/bert_relevance.py."""
        return bert_relevance.record(self, params, inputs, rules, probes)

    @staticmethod
    def bias_group(path: str) -> tuple[str, int | None]:
        """Where FullGrad puts the bias map of the bias probe at `path` (as `VisionTransformer.bias_group`):
        ('block', l) inside block l, ('pre', None) for the embedding LayerNorm (counted at layer 0),
        ('head', None) for the pooler and classifier ([CLS]-pooled: added to token 0)."""
        top = path.split("/")[0]
        if top.startswith("blocks_"):
            return "block", int(top.split("_")[1])
        if top == "embed_norm":
            return "pre", None
        return "head", None

    def position_ids(self, ids: jax.Array) -> jax.Array:
        """(..., N) position ids: 0..N−1; RoBERTa: pad_token_id + 1 + (rank among non-pad tokens), pad tokens
        at pad_token_id (transformers' `create_position_ids_from_input_ids`)."""
        cfg = self.config
        if cfg.family != "roberta":
            return jnp.broadcast_to(jnp.arange(ids.shape[-1]), ids.shape)
        real = (ids != cfg.pad_token_id).astype(jnp.int32)
        return jnp.cumsum(real, axis=-1) * real + cfg.pad_token_id

    def embed(self, inputs) -> jax.Array:
        """h₀ = word + position (+ token type) embeddings: a `TextInputs` (..., N) → (..., N, C)."""
        return self._embed(inputs)[0]

    def _embed(self, inputs) -> tuple[jax.Array, jax.Array]:
        """(h₀, the word embeddings alone (probe 'words')), both (..., N, C)."""
        words = probe(self, "words", self.word_embeddings[inputs.ids])
        x = words + self.position_embeddings[self.position_ids(inputs.ids)]
        if self.config.type_vocab_size:
            x = x + self.token_type_embeddings[inputs.token_type_ids]
        return x, words

    def forward_tokens(
        self,
        tokens: jax.Array,
        rules: Rules = VANILLA,
        positions: jax.Array | None = None,
        mask: jax.Array | None = None,
    ) -> tuple[jax.Array, Aux]:
        """Run the network from h₀ (..., N, C); `mask` (..., N) bool/0-1 marks real tokens (None: all real).
        `positions` is not read: the position embedding is already in h₀. Returns (logits (..., K), aux)."""
        tokens = probe(self, "tokens", tokens)
        x = self.embed_norm(tokens, rules)
        mask = jnp.ones(tokens.shape[:-1], bool) if mask is None else mask
        bias = padding_bias(mask, x.dtype)
        blocks = []
        for block in self.blocks:
            x, block_aux = block(x, rules, bias)
            blocks.append(block_aux)
        pooled = ops.activation(self.pooler(x[..., 0, :]), self.config.head_act, rules.activation)
        return self.classifier(pooled), Aux(tokens=tokens, blocks=blocks, features=x, pooled=pooled)

    def forward_head(self, pooled: jax.Array, rules: Rules = VANILLA, dist: jax.Array | None = None) -> jax.Array:
        """The activated pooler output (..., C) → logits (..., K) (`dist` is not read)."""
        return self.classifier(pooled)

    def __call__(self, inputs, rules: Rules = VANILLA) -> tuple[jax.Array, Aux]:
        tokens, words = self._embed(inputs)
        logits, aux = self.forward_tokens(tokens, rules, mask=self.token_mask(inputs))
        return logits, Aux(**aux, words=words)


def param_shapes(model: BertClassifier) -> dict:
    """The model's params tree as ShapeDtypeStructs (no weights are initialised).

    Traced through `forward_tokens`, which needs no `TextInputs`: `setup` creates the embedding tables anyway.
    """
    tokens = jax.ShapeDtypeStruct((1, model.config.hidden_size), jnp.float32)
    return jax.eval_shape(partial(model.init, method="forward_tokens"), jax.random.key(0), tokens)["params"]
