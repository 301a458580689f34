"""`libra_jax.text.explain_generation` on a tiny random Llama loaded through the fake offline HF cache of
tests/test_decoder.py.

Checked: greedy tokens equal transformers' `generate(do_sample=False)`; each row equals a separate
single-target `attribution` call; rows are exactly 0 at and after their own position and on padding; a
left-padded batch equals the unpadded prompt; the explained values equal torch's; the teacher-forced
continuation target is Σ log p and its maps are the sums of the rows (gradients are linear); bad input raises
clear errors.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from test_decoder import NEW, N, build_torch, save_to_hub_cache

import libra_jax
from libra_jax.text import (
    continuation_target,
    continuation_y,
    explain_generation,
    load_decoder,
    next_token_target,
    text_inputs,
)

torch = pytest.importorskip("torch")

METHODS = ["ixg", "fullgrad", "attcat"]
PAD = 4


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    torch_model = build_torch("llama")
    root = tmp_path_factory.mktemp("hub_llama")
    save_to_hub_cache(torch_model, root, "tiny/llama", "2KB")
    hf_constants = pytest.importorskip("huggingface_hub.constants")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hf_constants, "HF_HUB_OFFLINE", True)
        model, params = load_decoder("tiny/llama", cache_dir=root)
    ids = np.random.RandomState(1).randint(3, model.config.vocab_size, (2, N))
    ids[1, :PAD] = 0  # the second prompt is N − PAD tokens long, left-padded
    mask = np.ones((2, N), int)
    mask[1, :PAD] = 0
    fn = explain_generation(model, METHODS, rules="libra", target="log_prob")
    with jax.default_matmul_precision("highest"):
        out = fn(params, text_inputs(ids, mask), NEW)
    return {"torch": torch_model, "model": model, "params": params, "ids": ids, "mask": mask, "fn": fn, "out": out}


def test_greedy_tokens_equal_transformers_generate(llama):
    generated = np.asarray(llama["out"].continuation)
    for row, start in enumerate((0, PAD)):
        prompt = torch.tensor(llama["ids"][row, start:])[None]
        with torch.no_grad():
            ref = llama["torch"].generate(prompt, max_new_tokens=NEW, do_sample=False)[0, prompt.shape[1] :]
        np.testing.assert_array_equal(generated[row], ref.numpy())


def test_rows_equal_single_target_calls(llama):
    out, model = llama["out"], llama["model"]
    single = jax.jit(
        libra_jax.attribution(model, METHODS, "libra", target=next_token_target("log_prob"), return_tokens=True)
    )
    y = continuation_y(N, out.continuation)  # (B, n, 2)
    full = text_inputs(out.tokens, out.attention_mask)
    for i in range(NEW):
        with jax.default_matmul_precision("highest"):
            ref = single(llama["params"], full, y[:, i])
        for name in METHODS:
            ours, expected = np.asarray(out.maps[name][:, i]), np.asarray(ref[name])
            scale = np.abs(expected).max(-1, keepdims=True)
            assert np.all(scale > 0)
            assert np.all(np.abs(ours - expected) <= 1e-6 * scale), f"{name} row {i}"


def test_causal_and_padding_zeros(llama):
    out = llama["out"]
    for name in METHODS:
        maps = np.asarray(out.maps[name])
        assert maps.shape == (2, NEW, N + NEW)
        for i in range(NEW):
            assert np.all(maps[:, i, N + i :] == 0), f"{name} row {i} reads its own or later positions"
            assert np.all(np.abs(maps[:, i, : N + i]).max(-1) > 0)
        assert np.all(maps[1, :, :PAD] == 0)


def test_left_padded_batch_equals_unpadded_prompt(llama):
    out = llama["out"]
    short = text_inputs(llama["ids"][1:, PAD:])
    with jax.default_matmul_precision("highest"):
        alone = llama["fn"](llama["params"], short, out.continuation[1:])  # the same continuation, teacher-forced
    np.testing.assert_array_equal(np.asarray(alone.tokens[0]), np.asarray(out.tokens[1, PAD:]))
    np.testing.assert_allclose(np.asarray(alone.targets[0]), np.asarray(out.targets[1]), rtol=1e-5, atol=1e-6)
    for name in METHODS:
        ref = np.asarray(alone.maps[name][0])
        np.testing.assert_allclose(
            np.asarray(out.maps[name][1, :, PAD:]), ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max(), err_msg=name
        )


def test_targets_and_teacher_forced_continuation(llama):
    out, model, params = llama["out"], llama["model"], llama["params"]
    with torch.no_grad():
        logits = llama["torch"](torch.tensor(np.asarray(out.tokens[:1]))).logits[0]
    log_p = torch.log_softmax(logits, -1).numpy()
    tokens = np.asarray(out.tokens[0])
    expected = [log_p[N - 1 + i, tokens[N + i]] for i in range(NEW)]
    np.testing.assert_allclose(np.asarray(out.targets[0]), expected, rtol=1e-4, atol=1e-5)
    # Σ log p as ONE target: its value is the sum, its gradient maps the sum of the per-token rows
    y = continuation_y(N, out.continuation)
    fn = jax.jit(libra_jax.attribution(model, "fullgrad", "libra", target=continuation_target(), return_logits=True))
    with jax.default_matmul_precision("highest"):
        maps, full_logits = fn(params, text_inputs(out.tokens, out.attention_mask), y)
    np.testing.assert_allclose(float(continuation_target()(full_logits[0], y[0])), sum(expected), rtol=1e-4, atol=1e-5)
    rows = np.asarray(out.maps["fullgrad"]).sum(1)
    np.testing.assert_allclose(np.asarray(maps), rows, rtol=1e-4, atol=1e-5 * np.abs(rows).max())


def test_bad_inputs_raise_clear_errors(llama):
    model, params, fn = llama["model"], llama["params"], llama["fn"]
    prompt = text_inputs(llama["ids"][:1])
    context = model.config.max_length
    with pytest.raises(ValueError, match=rf"prompt \({N} tokens\) \+ continuation \({context} tokens\) exceed"):
        fn(params, prompt, context)
    with pytest.raises(ValueError, match="must be left-padded"):
        fn(params, text_inputs(llama["ids"][:1], np.r_[np.ones(N - 1), 0][None].astype(int)), 2)
    with pytest.raises(ValueError, match=r"continuation must be \(B=1, n\) token ids"):
        fn(params, prompt, np.zeros((2, 3), int))
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 128\)"):
        fn(params, prompt, np.full((1, 2), 500))
    with pytest.raises(ValueError, match=r"\['rollout'\] read one fixed attention row"):
        explain_generation(model, ["ixg", "rollout"])
    with pytest.raises(ValueError, match="target 'score'"):
        explain_generation(model, "ixg", target="score")
    bert, _ = libra_jax.load("synthetic_bert")
    with pytest.raises(ValueError, match="explains a decoder LM; this model's kind is 'text_classifier'"):
        explain_generation(bert, "ixg")
