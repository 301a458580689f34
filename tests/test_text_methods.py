"""Text models through the model contract: every method defined for a [CLS]-pooled BERT and for a Llama-style
decoder's next-token logit runs through `libra_jax.attribution` on (B, N) `TextInputs`, gives (B, N) maps, exactly
zero on padding and equal to the unpadded single example; FullGrad is complete under `libra_logit`; methods that
need a class token refuse the decoder; image and text inputs given to the wrong model fail clearly.

Tiny random models built directly in Flax; one jitted call computes every method per model and input shape.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from libra_jax import attribution
from libra_jax.models.bert import BertClassifier, BertConfig
from libra_jax.models.config import DataConfig, ViTConfig
from libra_jax.models.decoder import Decoder, DecoderConfig
from libra_jax.models.vit import VisionTransformer
from libra_jax.text import text_inputs
from libra_jax.text.next_token import next_token_target, target_at

VOCAB, N, SHORT = 40, 7, 4
LRP_PRESETS = ("attnlrp", "cp_lrp", "decompx")
COMMON = ("ixg", "fullgrad", "fullgrad_plus", "ig", "smoothgrad", "gradsam", "genatt", "rollout", "rawatt", "attcat")
BERT_METHODS = (
    *COMMON,
    "ig_tokenspace_paper",
    "tokentm",
    "transformer_attribution",
    "partial_lrp",
    "full_lrp",
    "attn_gradcam",
)
OPTIONS = {"steps": 4, "samples": 4}  # IG steps, SmoothGrad samples: few, so the test compiles and runs fast


def _ids(rng) -> np.ndarray:
    return rng.integers(2, VOCAB, size=(2, N)).astype(np.int32)


def _bert():
    sizes = {"hidden_size": 16, "num_layers": 2, "num_heads": 2, "intermediate_size": 32, "max_positions": 16}
    cfg = BertConfig(vocab_size=VOCAB, num_classes=3, **sizes)
    ids = _ids(np.random.default_rng(0))
    ids[1, SHORT:] = cfg.pad_token_id  # right padding
    mask = np.ones_like(ids)
    mask[1, SHORT:] = 0
    padded, single = text_inputs(ids, mask), text_inputs(ids[1:, :SHORT])
    y = np.array([0, 1])  # classes where attn_gradcam is defined (its min-max is 0/0 when M is constant)
    return BertClassifier(cfg), padded, single, y, y[1:], BERT_METHODS, "logit", slice(SHORT, None)


def _decoder():
    cfg = DecoderConfig(  # Llama layout (GQA, RoPE, RMSNorm, gated MLP) with Qwen2's q/k/v biases for FullGrad
        vocab_size=VOCAB,
        hidden_size=16,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=4,
        intermediate_size=32,
        max_positions=16,
        qkv_bias=True,
    )
    ids = _ids(np.random.default_rng(1))
    mask = np.ones_like(ids)
    mask[1, : N - SHORT] = 0  # left padding
    padded, single = text_inputs(ids, mask), text_inputs(ids[1:, N - SHORT :])
    y = np.stack([target_at(N - 1, 5), target_at(N - 1, 11)])
    y_single = np.asarray(target_at(SHORT - 1, 11))[None]
    return Decoder(cfg), padded, single, y, y_single, COMMON, None, slice(0, N - SHORT)


def _run(model, params, x, y, methods, target):
    """Every method (libra rules), the LRP presets' IxG, and FullGrad under libra_logit with the logits."""
    out = attribution(model, methods, target=target, **OPTIONS)(params, x, y)
    for preset in LRP_PRESETS:
        out[preset] = attribution(model, "ixg", rules=preset, target=target)(params, x, y)
    out["complete"], logits = attribution(model, "fullgrad", rules="libra_logit", target=target, return_logits=True)(
        params, x, y
    )
    return out, logits


@pytest.fixture(scope="module", params=["bert", "decoder"])
def case(request):
    model, padded, single, y, y_single, methods, target, pad = {"bert": _bert, "decoder": _decoder}[request.param]()
    if target is None:
        target = next_token_target("logit")
    params = model.init(jax.random.PRNGKey(0), padded)["params"]
    run = jax.jit(lambda p, x, t: _run(model, p, x, t, methods, target))
    with jax.default_matmul_precision("highest"):
        batch, logits = run(params, padded, y)
        alone, _ = run(params, single, y_single)
    return {"model": model, "methods": methods, "y": y, "pad": pad, "batch": batch, "logits": logits, "alone": alone}


def test_every_method_gives_a_finite_map_per_token(case):
    assert set(case["batch"]) == {*case["methods"], *LRP_PRESETS, "complete"}
    for name, m in case["batch"].items():
        assert m.shape == (2, N), name
        assert np.isfinite(np.asarray(m)).all(), name
        assert np.abs(np.asarray(m[0])).max() > 0, name


def test_padding_gets_zero_and_a_padded_batch_equals_the_unpadded_example(case):
    real = np.ones(N, bool)
    real[case["pad"]] = False
    for name, m in case["batch"].items():
        m = np.asarray(m[1])
        assert np.all(m[~real] == 0), name
        ref = np.asarray(case["alone"][name][0])
        np.testing.assert_allclose(m[real], ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max(), err_msg=name)


def test_fullgrad_is_complete_under_libra_logit(case):
    sums = np.asarray(case["batch"]["complete"]).sum(-1)
    logits, y = np.asarray(case["logits"]), case["y"]
    if logits.ndim == 3:  # decoder: the logit of token y[b, 1] at position y[b, 0]
        explained = logits[np.arange(2), y[:, 0], y[:, 1]]
    else:
        explained = logits[np.arange(2), y]
    np.testing.assert_allclose(sums, explained, rtol=1e-4, atol=1e-5)


def test_the_decoder_refuses_class_token_methods():
    model = _decoder()[0]
    for name in ("tokentm", "transformer_attribution", "partial_lrp", "full_lrp", "attn_gradcam"):
        with pytest.raises(ValueError, match="no class token"):
            attribution(model, name)


def test_image_and_text_inputs_given_to_the_wrong_model_fail_clearly():
    bert = _bert()[0]
    params = jax.eval_shape(bert.init, jax.random.PRNGKey(0), text_inputs(np.ones((1, 3), np.int32)))["params"]
    image = jnp.zeros((1, 32, 32, 3))
    with pytest.raises(ValueError, match="TextInputs.*load_text_tokenizer"):
        attribution(bert, "ixg")(params, image, jnp.array([0]))
    with pytest.raises(ValueError, match="TextInputs.*load_text_tokenizer"):
        _decoder()[0].check_inputs(image)
    vit = VisionTransformer(
        ViTConfig(img_size=(32, 32), patch_size=(16, 16), embed_dim=8, depth=1, num_heads=2, num_classes=3),
        DataConfig(),
    )
    with pytest.raises(ValueError, match=r"image array .*libra_jax.preprocess.*TextInputs"):
        vit.check_inputs(text_inputs(np.ones((1, 3), np.int32)))
