"""IxG at the word embeddings alone (LXT's convention, `ixg(embedding="word")`) against jax.grad of a function of
the word embeddings written here, and the completeness split under `libra_logit`: word IxG + the position / type
embeddings' share + the bias maps = the logit. A tiny random BERT (re-drawn biases and norm affines) and a tiny
GPT-2-layout decoder (learned positions) for the decoder's word probe."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from libra_jax import attribution
from libra_jax.models import VisionTransformer, ViTConfig
from libra_jax.models.bert import BertClassifier, BertConfig
from libra_jax.models.decoder import Decoder, DecoderConfig
from libra_jax.rules import get_rules
from libra_jax.text import text_inputs
from libra_jax.text.next_token import next_token_target, target_at
from tests.helpers import TINY, randomize

VOCAB, N = 30, 6


def _bert():
    cfg = BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_layers=2,
        num_heads=2,
        intermediate_size=32,
        max_positions=8,
        num_classes=3,
    )
    ids = np.random.default_rng(0).integers(1, VOCAB, size=(2, N)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 4:] = 0
    ids[1, 4:] = 0
    types = np.zeros_like(ids)
    types[:, 3:] = 1
    x = text_inputs(ids, mask, types)
    model = BertClassifier(cfg)
    params = randomize(model.init(jax.random.PRNGKey(0), x)["params"], jax.random.PRNGKey(1))
    return model, params, x


def _word_gradients(model, params, x, y, rules):
    """(words, positions + types, ∂f/∂words), each (B, N, C): f a function of the word embeddings w alone, the
    position and type embeddings added from the params as constants."""
    other = params["position_embeddings"][jnp.arange(N)] + params["token_type_embeddings"][x.token_type_ids]
    words = params["word_embeddings"][x.ids]
    score = jax.nn.softmax if rules.target == "prob" else (lambda z: z)

    def grad(b):
        def f(w):
            mask = x.attention_mask[b] > 0
            logits, _ = model.apply({"params": params}, w + other[b], rules, method="forward_tokens", mask=mask)
            return score(logits)[y[b]]

        return jax.grad(f)(words[b])

    return words, other, jnp.stack([grad(b) for b in range(len(y))])


@pytest.mark.parametrize("preset", ["vanilla", "libra", "attnlrp"])
def test_word_ixg_is_the_word_embeddings_times_their_gradient(preset, highest_precision):
    model, params, x = _bert()
    y = jnp.array([2, 1])

    @jax.jit
    def run(params, x, y):
        word = attribution(model, "ixg", rules=preset, embedding="word")(params, x, y)
        words, _, grad = _word_gradients(model, params, x, y, get_rules(preset))
        return word, (words * grad).sum(-1), attribution(model, "ixg", rules=preset)(params, x, y)

    got, want, summed = run(params, x, y)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * float(jnp.abs(want).max()))
    assert np.all(np.asarray(got[1, 4:]) == 0)  # padding
    assert not np.allclose(got, summed)  # positions and types carry relevance of their own


def test_word_ixg_completeness_split_under_libra_logit(highest_precision):
    model, params, x = _bert()
    y = jnp.array([0, 2])
    rules = get_rules("libra_logit")

    @jax.jit
    def run(params, x, y):
        maps, logits = attribution(model, ["ixg", "fullgrad"], rules=rules, return_logits=True)(params, x, y)
        word = attribution(model, "ixg", rules=rules, embedding="word")(params, x, y)
        _, other, grad = _word_gradients(model, params, x, y, rules)
        share = (other * grad).sum(-1)  # ∂f/∂w = ∂f/∂h₀: h₀ = w + positions + types
        biases = maps["fullgrad"] - maps["ixg"]
        return (word + share + biases).sum(-1), logits[jnp.arange(2), y]

    total, explained = run(params, x, y)
    np.testing.assert_allclose(total, explained, rtol=1e-5, atol=1e-5)


def test_decoder_word_ixg_plus_the_learned_positions_share_is_ixg_at_h0(highest_precision):
    cfg = DecoderConfig(
        family="gpt2",
        vocab_size=VOCAB,
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        num_kv_heads=2,
        head_dim=8,
        intermediate_size=32,
        max_positions=8,
        positions="learned",
        norm="layer",
        gated_mlp=False,
        act="gelu",
    )
    model = Decoder(cfg)
    ids = np.random.default_rng(2).integers(1, VOCAB, size=(1, N)).astype(np.int32)
    x = text_inputs(ids)
    params = randomize(model.init(jax.random.PRNGKey(0), x)["params"], jax.random.PRNGKey(3))
    target = next_token_target("logit")
    y = np.asarray(target_at(N - 1, 5))[None]
    positions = params["embed_positions"][jnp.arange(N)]
    words = params["embed_tokens"][ids[0]]

    @jax.jit
    def run(params, x, y):
        word = attribution(model, "ixg", target=target, embedding="word")(params, x, y)
        summed = attribution(model, "ixg", target=target)(params, x, y)

        def f(h):
            logits, _ = model.apply({"params": params}, h, get_rules("libra"), method="forward_tokens")
            return target(logits, y[0])

        return word, summed, (positions * jax.grad(f)(words + positions)).sum(-1)

    word, summed, share = run(params, x, y)
    np.testing.assert_allclose(word[0] + share, summed[0], rtol=1e-5, atol=1e-6 * float(jnp.abs(summed).max()))


def params(model):
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((32, 32, 3)))["params"]


def test_word_ixg_refuses_an_image_model():
    model = VisionTransformer(ViTConfig(**TINY))
    image, y = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32), jax.ShapeDtypeStruct((1,), jnp.int32)
    with pytest.raises(ValueError, match="word embeddings of a text model.*embedding='input'"):
        jax.eval_shape(attribution(model, "ixg", embedding="word", check_inputs=False), params(model), image, y)
    with pytest.raises(ValueError, match="ixg embedding must be one of"):
        jax.eval_shape(attribution(model, "ixg", embedding="words", check_inputs=False), params(model), image, y)
