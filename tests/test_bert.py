"""BERT-family classifiers: forward parity with transformers (through the loader and a fake offline HF
cache), padding, FullGrad completeness under every family's head, the tanh rule, bad-input errors.

Tiny random models (hidden 32, 2 layers, 4 heads, vocab 100) with re-randomised biases and LayerNorm
affines and q/k/v weights of std 2/√fan_in, so attention is far from uniform.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_loading import make_hub_cache

from libra_jax import ops
from libra_jax.methods import core, maps
from libra_jax.ops import reference
from libra_jax.rules import PRESETS
from libra_jax.text import check_text_inputs, load_text_classifier, load_text_tokenizer, text_inputs
from libra_jax.weights.keymap import CheckpointMismatchError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

FAMILIES = ("bert", "roberta", "distilbert")
IDS = np.array([[5, 17, 33, 8, 9, 2, 0, 0], [7, 11, 12, 13, 14, 15, 16, 3]])
MASK = np.array([[1, 1, 1, 1, 1, 1, 0, 0], [1] * 8])
TARGETS = np.array([1, 2])


def _hf_model(family: str):
    common = dict(vocab_size=100, max_position_embeddings=40, num_labels=3)
    if family == "distilbert":
        cfg = transformers.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64, **common)
        cls = transformers.DistilBertForSequenceClassification
    else:
        arch = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
        cfg = getattr(transformers, f"{family.capitalize()}Config")(**arch, **common)
        cls = getattr(transformers, f"{family.capitalize()}ForSequenceClassification")
    torch.manual_seed(FAMILIES.index(family))
    model = cls(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
            elif p.ndim == 1:  # LayerNorm γ
                p.normal_(1, 0.1)
            elif "embeddings" not in name:
                p.normal_(0, 2 / p.shape[1] ** 0.5)
    return model


def _ids(family: str) -> np.ndarray:
    """The test batch; RoBERTa pads with its pad id 1 (position ids skip pad tokens)."""
    return np.where(MASK == 0, 1, IDS) if family == "roberta" else IDS


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """A fake offline HF cache with one repo per family: safetensors for BERT / RoBERTa, a torch
    `pytorch_model.bin` for DistilBERT; yields (cache dir, {family: torch model})."""
    root = tmp_path_factory.mktemp("hf_cache")
    models = {}
    for family in FAMILIES:
        model = _hf_model(family)
        folder = tmp_path_factory.mktemp(family)
        model.save_pretrained(folder)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        if family == "distilbert":
            torch.save(state, folder / "pytorch_model.bin")
            weights = {"pytorch_model.bin": (folder / "pytorch_model.bin").read_bytes()}
        else:
            weights = {"model.safetensors": safetensors_torch.save(state)}
        files = {"config.json": (folder / "config.json").read_bytes(), **weights}
        make_hub_cache(root, f"libra-test/{family}-tiny", files)
        models[family] = model
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pytest.importorskip("huggingface_hub.constants"), "HF_HUB_OFFLINE", True)
        yield root, models


@pytest.fixture(scope="module", params=FAMILIES)
def loaded(request, hub_cache):
    """(family, torch model, our model, params), ours loaded by hub name from the offline cache."""
    root, models = hub_cache
    model, params = load_text_classifier(f"libra-test/{request.param}-tiny", cache_dir=root)
    return request.param, models[request.param], model, params


def test_forward_parity(loaded, highest_precision):
    family, ref, model, params = loaded
    ids = _ids(family)
    with torch.no_grad():
        want = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(MASK)).logits.numpy()
    logits, aux = model.apply({"params": params}, text_inputs(ids, MASK))
    assert np.abs(np.asarray(logits) - want).max() <= 1e-4
    attn = np.asarray(aux["blocks"][0]["attn"])[1]
    assert attn.max(-1).mean() > 0.3  # far from uniform (1/8)


def _maps(model, params, inputs, preset: str):
    """Per example: (FullGrad map (N,), explained logit, IxG_0 (N,)) under `preset`, vmapped over the batch."""
    rules = PRESETS[preset]
    target = core.target_function(rules, None)

    def one(x, y):
        rec = core.single_pass(model, params, x, y, rules, target)
        return maps.fullgrad(rec, model), rec["target"], maps.ixg(rec, model)

    return jax.jit(jax.vmap(one))(inputs, jnp.asarray(TARGETS[: inputs.ids.shape[0]]))


def test_completeness_and_padding(loaded, highest_precision):
    """Σ FullGrad = logit under libra_logit (post-norm, tanh / ReLU heads), not under vanilla; padded
    positions get exactly zero; the padded example equals the unpadded one."""
    family, _, model, params = loaded
    inputs = text_inputs(_ids(family), MASK)
    fullgrad, f, ixg = _maps(model, params, inputs, "libra_logit")
    np.testing.assert_allclose(fullgrad.sum(-1), f, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(fullgrad)[0, 6:] == 0) and np.all(np.asarray(ixg)[0, 6:] == 0)
    vanilla, f_vanilla, _ = _maps(model, params, inputs, "vanilla_logit")
    np.testing.assert_array_equal(f_vanilla, f)
    assert np.abs(np.asarray(vanilla.sum(-1) - f)).min() > 1e-2
    single, f_single, _ = _maps(model, params, text_inputs(_ids(family)[:1, :6]), "libra_logit")
    np.testing.assert_allclose(f_single, f[:1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(single, fullgrad[:1, :6], rtol=1e-4, atol=1e-6)


def test_tanh_gate_rule_is_safe_at_zero():
    """tanh under "detach": value tanh(x), gradient tanh(x)/x (its limit 1 at 0, no NaN), as the reference form."""
    x = np.array([0.0, 1e-6, -3e-5, 0.5, -4.0], np.float32)
    g = jax.grad(lambda v: ops.activation(v, "tanh", "detach").sum())(jnp.asarray(x))
    safe = np.where(x == 0, 1.0, x).astype(np.float64)
    np.testing.assert_allclose(g, np.where(x == 0, 1.0, np.tanh(safe) / safe), rtol=1e-6)
    g_ref = jax.grad(lambda v: reference.activation_reference(v, "tanh", "detach").sum())(jnp.asarray(x))
    np.testing.assert_allclose(g, g_ref, rtol=1e-6)


def test_bad_inputs(loaded):
    _, _, model, _ = loaded
    cfg = model.config
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 100\)"):
        check_text_inputs(text_inputs(np.array([[2, 100, 3]])), cfg)
    with pytest.raises(ValueError, match="attention_mask has shape .* pass one per id"):
        text_inputs(np.zeros((2, 5), np.int32), np.ones((2, 4), np.int32))
    too_long = np.full((1, cfg.max_length + 1), 5)
    with pytest.raises(ValueError, match=f"{cfg.max_length + 1} tokens exceed the model's {cfg.max_length} positions"):
        check_text_inputs(text_inputs(too_long), cfg)
    with pytest.raises(ValueError, match="empty text"):
        check_text_inputs(text_inputs(np.zeros((1, 0), np.int32)), cfg)
    with pytest.raises(ValueError, match="no real token"):
        check_text_inputs(text_inputs(np.array([[2, 3]]), np.array([[0, 0]])), cfg)
    image = np.zeros((1, 32, 32, 3), np.float32)
    with pytest.raises(ValueError, match="token ids must be integers.*an image"):
        text_inputs(image)
    with pytest.raises(ValueError, match="a text model takes a TextInputs batch"):
        check_text_inputs(image, cfg)
    check_text_inputs(text_inputs(_ids(loaded[0]), MASK), cfg)  # the test batch itself is fine


def test_loader_reports_key_diff_and_family(hub_cache, tmp_path):
    _, models = hub_cache
    ref = models["bert"]
    ref.save_pretrained(tmp_path)
    state = {k: v.contiguous() for k, v in ref.state_dict().items() if k != "classifier.weight"}
    state["cls.predictions.bias"] = torch.zeros(3)
    safetensors_torch.save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointMismatchError, match=r"(?s)classifier/kernel.*cls\.predictions\.bias"):
        load_text_classifier(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    with pytest.raises(ValueError, match="model_type 'gpt2'; text classifiers supported: bert, roberta, distilbert"):
        load_text_classifier(tmp_path / "model.safetensors", config={**config, "model_type": "gpt2"})


def test_tokenizer_vocab_and_json(tmp_path):
    """vocab.txt (WordPiece) and the equivalent tokenizer.json give the same batch; errors on empty text."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "fine", "film", "dull", "##s", "play"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = load_text_tokenizer(tmp_path, max_length=16)
    batch = tokenizer(["A fine film", "plays dull."])
    np.testing.assert_array_equal(batch.ids, [[2, 5, 6, 7, 3, 0], [2, 10, 9, 8, 1, 3]])
    np.testing.assert_array_equal(batch.attention_mask, [[1, 1, 1, 1, 1, 0], [1] * 6])
    assert tokenizer.tokens(batch.ids[1]) == ["[CLS]", "play", "##s", "dull", "[UNK]", "[SEP]"]
    pair = tokenizer("fine", "film")
    np.testing.assert_array_equal(pair.token_type_ids, [[0, 0, 0, 1, 1]])
    tokenizer.backend.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "vocab.txt").unlink()
    np.testing.assert_array_equal(
        load_text_tokenizer(tmp_path, max_length=16)(["A fine film", "plays dull."]).ids, batch.ids
    )
    with pytest.raises(ValueError, match="empty text"):
        tokenizer(["fine", "  "])
