"""Token maps read off one forward/backward record (`core.single_pass`), per example.

Notation: h_l = input of block l (h₀ = token embeddings), g_l = ∂f/∂h_l,
IxG_l[t] = Σ_c h_l[t,c]·g_l[t,c], A_l = post-softmax attention (H, N, N), token 0 = first
prefix token (the cls token when there is one). The attention methods read row r = 0 (the class token), or
the model's `Capabilities.query_row` without one (a decoder's last position). All maps are signed, shape (N,),
prefix tokens included.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from libra_jax.methods import requirements


def ixg_layers(rec: dict) -> list[jax.Array]:
    """[IxG_0, ..., IxG_{L-1}] (each (N,))."""
    return [(h * g).sum(-1) for h, g in zip(rec["h"][:-1], rec["g"][:-1], strict=True)]


def bias_groups(rec: dict, model) -> dict:
    """Per-token bias maps summed by FullGrad group: 'blocks' [L×(N,)], 'pre', 'end', 'head'.

    Also 'unassigned' [L×()]: per block, the total of the bias maps that have no token axis
    (MLP-Mixer token-MLP fc1). No map holds them, as in the official code; they only enter the
    completeness bookkeeping (Σ_t FullGrad_l + Σ_{k≥l} unassigned_k = f under `libra_logit`).
    """
    n = rec["h"][0].shape[-2]
    depth = len(rec["h"]) - 1
    zeros = jnp.zeros((n,), rec["h"][0].dtype)
    out = {"blocks": [zeros] * depth, "pre": zeros, "end": zeros, "head": zeros, "unassigned": [zeros.sum()] * depth}
    for path, m in sorted(rec["bias"].items()):
        group, layer = model.bias_group(path)
        if group == "unassigned":
            out["unassigned"][layer] = out["unassigned"][layer] + m.sum()
            continue
        if group == "head":
            m = zeros.at[0].set(m.sum())
        elif group == "broadcast":
            m = jnp.full((n,), m.sum(), zeros.dtype)
        elif m.shape[-1] < n:  # modules that skip the prefix tokens (MAP pool k/v)
            m = jnp.pad(m, (n - m.shape[-1], 0))
        if group == "block":
            out["blocks"][layer] = out["blocks"][layer] + m
        elif group in ("head", "broadcast", "end"):
            key = "end" if group == "broadcast" else group
            out[key] = out[key] + m
        else:
            out["pre"] = out["pre"] + m
    return out


def fullgrad_layers(rec: dict, model, head_bias: bool = True) -> list[jax.Array]:
    """[FullGrad_0, ..., FullGrad_{L-1}]: IxG_l + every bias map downstream of h_l."""
    groups = bias_groups(rec, model)
    tail = groups["end"] + (groups["head"] if head_bias else 0.0)
    ixg = ixg_layers(rec)
    maps, acc = [], tail
    for layer in reversed(range(len(ixg))):
        acc = acc + groups["blocks"][layer]
        maps.append(ixg[layer] + acc + (groups["pre"] if layer == 0 else 0.0))
    return maps[::-1]


def all_biases(rec: dict, model, head_bias: bool = True) -> jax.Array:
    groups = bias_groups(rec, model)
    total = sum(groups["blocks"]) + groups["pre"] + groups["end"]
    return total + groups["head"] if head_bias else total


EMBEDDINGS = ("input", "word")
"""Where `ixg` takes input × gradient: h₀ (every input embedding summed) or the word embeddings alone."""


def ixg(rec, model, embedding: str = "input", per_channel: bool = False):
    """Input × gradient at the token embeddings: IxG (N,), or the product per channel (N, C) with `per_channel`.

    embedding="input" (default, the ViT convention): IxG_0 = Σ_c h₀·∂f/∂h₀, h₀ the summed input embeddings
    (word + position + token type for BERT). embedding="word" (LXT's convention, text models):
    Σ_c w·∂f/∂w at the word-embedding lookup w alone (record 'words' / 'g_words'); the position / type
    embeddings' share is then left out of the map, so under `libra_logit` the map plus that share plus the
    bias maps sums to the logit.
    """
    if embedding not in EMBEDDINGS:
        raise ValueError(f"ixg embedding must be one of {EMBEDDINGS}; got {embedding!r}")
    if embedding == "input":
        u, g = rec["h"][0], rec["g"][0]
    elif "words" not in rec:
        raise ValueError(
            "ixg(embedding='word') reads the word embeddings of a text model; this model reports none (an image"
            " model): use embedding='input'"
        )
    else:
        u, g = rec["words"], rec["g_words"]
    return u * g if per_channel else (u * g).sum(-1)


def fullgrad(rec, model, head_bias: bool = True, unassigned_bias: bool = False):
    """IxG_0 + every bias map. Pooled-head biases go to token 0 (`head_bias=False` drops them).

    `unassigned_bias=True` also adds the total of the biases no token can hold (MLP-Mixer token-MLP
    fc1) to token 0, like the head biases; the official map leaves them out (the default), so only
    with this option does Σ_t map = f hold on Mixers under `libra_logit`.
    """
    m = fullgrad_layers(rec, model, head_bias)[0]
    return m.at[0].add(sum(bias_groups(rec, model)["unassigned"])) if unassigned_bias else m


def fullgrad_head_bias(rec, model):
    """The pooled-head bias maps alone (a scalar in token 0), to report them separately."""
    return bias_groups(rec, model)["head"]


def fullgrad_plus(rec, model, head_bias: bool = True):
    """FullGrad+ ("PLUS"): Σ_l IxG_l + every bias map once."""
    return sum(ixg_layers(rec)) + all_biases(rec, model, head_bias)


def fullgrad_plus_skip(rec, model, head_bias: bool = True):
    """SkipPLUS: Σ_{l≥L/2} IxG_l + the biases downstream of h_{L/2}."""
    ixg = ixg_layers(rec)
    mid = len(ixg) // 2
    return sum(ixg[mid:]) + fullgrad_layers(rec, model, head_bias)[mid] - ixg[mid]


CAM_METHODS = ("hirescam", "gradcam", "xgradcam", "xgradcam_plus")
"""The class-activation maps: one activation (`layer=`) weighted by its gradient."""

PREFIX_TOKENS = ("include", "exclude")
"""Which tokens give the CAM channel weights: every token (LibraGrad) or the content tokens only (pytorch-grad-cam,
whose ViT reshape drops the prefix)."""


def cam_activation(rec: dict, model, layer: int | str) -> tuple[jax.Array, jax.Array]:
    """The CAM layer's activation and its gradient, (N, C) each.

    layer: a block index l (h_l, the input of block l; negative from the end, so −1 is the last block's input,
      LibraGrad's CAM layer) or "norm1" (the last block's first norm output, pytorch-grad-cam's documented ViT
      target `blocks[-1].norm1`; the record must hold it: `probes_read`).
    """
    depth = len(rec["h"]) - 1
    if layer == "norm1":
        if "norm1" not in rec:
            raise ValueError("layer='norm1' needs a record with the norm1 outputs: single_pass(..., probes=('norm1',))")
        return rec["norm1"][-1], rec["norm1_grad"][-1]
    if isinstance(layer, bool) or not isinstance(layer, int) or not -depth <= layer < depth:
        raise ValueError(
            f"CAM layer must be a block index in [{-depth}, {depth - 1}] (the input of that block; -1, the last"
            f" block's, is the default) or 'norm1' (the last block's first norm output); got {layer!r}"
        )
    return rec["h"][layer % depth], rec["g"][layer % depth]


def probes_read(method: str, options: dict) -> tuple[str, ...]:
    """The optional probes (models/contract.py `OPTIONAL_PROBES`) that `method` reads with `options`."""
    return ("norm1",) if method in CAM_METHODS and options.get("layer") == "norm1" else ()


def _weight_tokens(model, prefix_tokens: str) -> slice:
    """The tokens the channel weights average over (`PREFIX_TOKENS`)."""
    if prefix_tokens not in PREFIX_TOKENS:
        raise ValueError(f"prefix_tokens must be one of {PREFIX_TOKENS}; got {prefix_tokens!r}")
    return slice(model.layout.num_prefix if prefix_tokens == "exclude" else 0, None)


def hirescam(rec, model, layer: int | str = -1):
    """HiResCAM: Σ_c a·g at the CAM layer (`cam_activation`); the default is IxG at the last block's input.

    At that default, on a class-token-pooled pre-norm ViT under a plain LayerNorm gradient (`vanilla`), the map is a
    near-total cancellation: a patch token reaches the output only through the last block's norm1, which is
    scale-invariant, so Σ_c h·∂f/∂h vanishes but for the norm's eps (values ~1e-6 of the norm1 recipe's, the float32
    result 3-50 % of its max off the float64 one). `layer="norm1"` is pytorch-grad-cam's well-conditioned recipe.
    """
    a, g = cam_activation(rec, model, layer)
    return (a * g).sum(-1)


def gradcam(rec, model, layer: int | str = -1, prefix_tokens: str = "include"):
    """GradCAM: w = mean over tokens of g; map = a·w (signed), at the CAM layer (`cam_activation`).

    Defaults: LibraGrad's definition (the last block's input, every token in the mean). pytorch-grad-cam's ViT
    recipe is layer="norm1", prefix_tokens="exclude", before its ReLU, upsampling and min-max scaling.
    """
    a, g = cam_activation(rec, model, layer)
    return a @ g[_weight_tokens(model, prefix_tokens)].mean(-2)


def xgradcam(rec, model, layer: int | str = -1, prefix_tokens: str = "include"):
    """XGradCAM (Fu et al. 2020) as pytorch-grad-cam computes it: w_c = Σ_t g·a / (Σ_t a + 1e-7); map = a·w.

    The sums run over the tokens `prefix_tokens` picks. pytorch-grad-cam's ViT recipe is layer="norm1",
    prefix_tokens="exclude"; its ReLU, upsampling and min-max scaling of the map are not applied here. Σ_t a is a
    signed sum: on the residual stream (the default layer) it nearly cancels on some channels, so float32 rounding
    reaches ~1e-4 of the map there; `xgradcam_plus` (|a|) has no such cancellation.
    """
    a, g = cam_activation(rec, model, layer)
    t = _weight_tokens(model, prefix_tokens)
    return a @ ((g[t] * a[t]).sum(-2) / (a[t].sum(-2) + 1e-7))


def xgradcam_plus(rec, model, layer: int | str = -1, prefix_tokens: str = "include"):
    """XGradCAM+ (LibraGrad): w_c = Σ_t g·|a| / (Σ_t |a| + 1e-7); map = a·w (signed a), at the CAM layer."""
    a, g = cam_activation(rec, model, layer)
    t = _weight_tokens(model, prefix_tokens)
    return a @ ((g[t] * jnp.abs(a[t])).sum(-2) / (jnp.abs(a[t]).sum(-2) + 1e-7))


def _relu_attn_grad(rec):
    """[mean_h ReLU(A_l ⊙ ∂f/∂A_l)] per layer, (N, N) each."""
    return [jax.nn.relu(a * da).mean(-3) for a, da in zip(rec["attn"], rec["attn_grad"], strict=True)]


def gradsam(rec, model):
    """GradSAM: Σ_l row r of mean_h ReLU(A_l ⊙ ∂f/∂A_l)."""
    row = _row(model)
    return sum(m[row] for m in _relu_attn_grad(rec))


def _row(model) -> int:
    """The attention row the row-reading methods read: the class token's, else the model's `query_row`."""
    caps = model.capabilities
    return 0 if caps.class_token else caps.query_row


def _rollout(mats: list[jax.Array], start_layer: int, row: int) -> jax.Array:
    """Row `row` of M_{L-1}···M_{start}, M_l = ½·mats_l + ½·I, as a row vector times each M_l from the top:
    O(N²) per layer (the full product would be O(N³), a quarter of a 2048-token decoder's gradient)."""
    v = jnp.zeros(mats[0].shape[-1], mats[0].dtype).at[row].set(1)
    for m in reversed(mats[start_layer:]):
        v = 0.5 * (v @ m) + 0.5 * v
    return v


def rawatt(rec, model):
    """Raw attention: mean over heads of the last block's attention, row r."""
    return rec["attn"][-1].mean(-3)[_row(model)]


def rollout(rec, model, start_layer: int = 0):
    """Attention rollout (Abnar & Zuidema): row r of Π_l (½·mean_h A_l + ½·I)."""
    return _rollout([a.mean(-3) for a in rec["attn"]], start_layer, _row(model))


def genatt(rec, model, start_layer: int = 0):
    """GenAtt (Chefer ICCV'21): row r of Π_l (½·mean_h ReLU(A_l ⊙ ∂f/∂A_l) + ½·I).

    The ½-residual form is exactly Chefer's Π(I + Ā_l) times 2^-(L - start_layer) (LibraGrad's scale).
    """
    return _rollout(_relu_attn_grad(rec), start_layer, _row(model))


def attcat(rec, model, pairing: str = "producer"):
    """AttCAT: Σ_l ā_l ⊙ IxG, ā_l[t] = attention token t receives (mean over heads and real query rows; the model
    needs attention: `REQUIREMENTS`).

    pairing="producer" (LibraGrad's code, default): Σ_{l=0}^{L-2} ā_l ⊙ IxG_{l+1}, i.e. each
    block's attention scales the IxG at that block's *output*; the last block has no term.
    pairing="consumer" (official AttCAT code): Σ_{l=0}^{L-1} ā_l ⊙ IxG_l, the attention of the
    block that *reads* h_l, embeddings included.
    """
    real = rec["mask"]
    # padded query rows are never read: they take no part in the mean (a padded sequence = the unpadded one)
    received = [(a.mean(-3) * real[:, None]).sum(-2) / real.sum() for a in rec["attn"]]
    ixg = ixg_layers(rec) + [(rec["h"][-1] * rec["g"][-1]).sum(-1)]
    zero = jnp.zeros_like(received[0])  # a one-block model has no producer term: the map is zero, not a scalar
    if pairing == "producer":
        return sum((a * c for a, c in zip(received[:-1], ixg[1:-1], strict=True)), zero)
    if pairing == "consumer":
        return sum((a * c for a, c in zip(received, ixg[:-1], strict=True)), zero)
    raise ValueError(f"attcat pairing must be 'producer' or 'consumer'; got {pairing!r}")


def _transformation_weight(a: jax.Array, b: jax.Array, real: jax.Array) -> jax.Array:
    """TokenTM W(a, b) diagonal (N,): ‖b_t‖/(‖a_t‖+1e-8) · softmax_t cos(a_t, b_t), the softmax over the real
    tokens `real` (N,) bool (0 at padding).

    cos as torch.cosine_similarity: a·b / sqrt(max(‖a‖²‖b‖², 1e-16)).
    """
    na2, nb2 = (a * a).sum(-1), (b * b).sum(-1)
    cos = (a * b).sum(-1) / jnp.sqrt(jnp.maximum(na2 * nb2, 1e-16))
    return jnp.sqrt(nb2) / (jnp.sqrt(na2) + 1e-8) * jax.nn.softmax(cos, where=real)


def tokentm(rec, model, head_reduce: str = "mean_then_product", measure_on: str = "residual_stream"):
    """TokenTM (Wu et al. CVPR'24) as LibraGrad's implementation defines it; row 0 of C_L.

    C₀ = diag‖h₀[t]‖; per block: U_attn = I + (Ā·W(h_l, x̃_l)) ⊙ mean_h ReLU(∂f/∂A_l),
    U_mlp = I + W(x̃_l, h_{l+1}), C ← U_mlp·U_attn·C (x̃_l: residual after the attention add).
    Options for the points where the paper may differ (unverified against the paper):
    head_reduce="product_then_mean" uses mean_h(A_h ⊙ ReLU(∂f/∂A_h))·W instead;
    measure_on="sublayer_output" measures W on the sub-layer outputs without the skip
    (x̃_l − h_l and h_{l+1} − x̃_l) instead of the residual stream.
    """
    if head_reduce not in ("mean_then_product", "product_then_mean"):
        raise ValueError(f"tokentm head_reduce must be 'mean_then_product' or 'product_then_mean'; got {head_reduce!r}")
    if measure_on not in ("residual_stream", "sublayer_output"):
        raise ValueError(f"tokentm measure_on must be 'residual_stream' or 'sublayer_output'; got {measure_on!r}")
    h0, real = rec["h"][0], rec["mask"]
    eye = jnp.eye(h0.shape[-2], dtype=h0.dtype)
    c = jnp.diag(jnp.linalg.norm(h0, axis=-1))
    for layer, (a, da, post) in enumerate(zip(rec["attn"], rec["attn_grad"], rec["post_attn"], strict=True)):
        pre, out = rec["h"][layer], rec["h"][layer + 1]
        if measure_on == "residual_stream":
            w_attn, w_mlp = _transformation_weight(pre, post, real), _transformation_weight(post, out, real)
        else:
            w_attn = _transformation_weight(pre, post - pre, real)
            w_mlp = _transformation_weight(post, out - post, real)
        relu_grad = jax.nn.relu(da)
        if head_reduce == "mean_then_product":
            mix = (a.mean(-3) * w_attn) * relu_grad.mean(-3)
        else:
            mix = (a * relu_grad).mean(-3) * w_attn
        c = (eye + mix) @ c
        c = c + w_mlp[:, None] * c  # (I + diag w_mlp)·c
    return c[0]


SINGLE_PASS = {
    "ixg": ixg,
    "fullgrad": fullgrad,
    "fullgrad_head_bias": fullgrad_head_bias,
    "fullgrad_plus": fullgrad_plus,
    "fullgrad_plus_skip": fullgrad_plus_skip,
    "hirescam": hirescam,
    "gradcam": gradcam,
    "xgradcam": xgradcam,
    "xgradcam_plus": xgradcam_plus,
    "gradsam": gradsam,
    "rawatt": rawatt,
    "rollout": rollout,
    "genatt": genatt,
    "attcat": attcat,
    "tokentm": tokentm,
}
"""Methods read off the single forward/backward pass: name → fn(record, model, **options)."""

ATTENTION_METHODS = ("gradsam", "rawatt", "rollout", "genatt", "tokentm")
"""Methods that read one row of the attention matrices: the class token's or, all but TokenTM (whose C₀ weighs
a class-token readout), the model's `query_row`."""

REQUIREMENTS = {
    name: (requirements.class_token_row(name) if name == "tokentm" else requirements.query_row(name),)
    + (requirements.attention(name),)
    for name in ATTENTION_METHODS
}
REQUIREMENTS["attcat"] = (requirements.attention("attcat"),)
"""name → requirements (methods/requirements.py), checked when the attribution function is built."""
