"""Decoder tokenizers (`libra_jax.text.load_text_tokenizer` on a decoder checkpoint) against transformers'.

Two tokenizer.json files are written here with the `tokenizers` library: a Llama-style one (SentencePiece-like
Metaspace BPE, the post-processor adds BOS) and a GPT-2-style byte-level BPE (no BOS). Checked: the ids equal
transformers' `AutoTokenizer` on the same folder (special tokens as the post-processor says), left padding,
the prompt / continuation split and its seam error, and the context-length error.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from libra_jax.text import load_text_tokenizer

tokenizers = pytest.importorskip("tokenizers")

CORPUS = [
    "the capital of france is paris",
    "the cat sat on the mat",
    "hello world, hello there",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z",
] * 5
TEXTS = ["the capital of france is paris", "the cat sat", "hello, world!"]


def llama_style_tokenizer(vocab_size: int = 100):
    """A SentencePiece-style BPE ('▁' for spaces, prepended once) whose post-processor adds <s> (id 1)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"]))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tok


def gpt2_style_tokenizer():
    """A byte-level BPE as GPT-2's: 'Ġ' for spaces, no BOS, <|endoftext|> the only special token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def write_checkpoint_files(folder, tok, model_type: str, max_positions: int, tokenizer_cfg: dict) -> None:
    """tokenizer.json, tokenizer_config.json and a minimal config.json (what the tokenizer loader reads)."""
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_cfg))
    positions = "n_positions" if model_type == "gpt2" else "max_position_embeddings"
    config = {"model_type": model_type, "vocab_size": tok.get_vocab_size(), positions: max_positions}
    if model_type == "gpt2":
        config |= dict(n_embd=8, n_layer=1, n_head=2)
    else:
        config |= dict(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def checkpoint(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "llama":
        tok, cfg = llama_style_tokenizer(), {"bos_token": "<s>", "eos_token": "</s>"}
    else:
        tok, cfg = gpt2_style_tokenizer(), {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}
    write_checkpoint_files(folder, tok, request.param, 16, cfg)
    return request.param, folder


def test_ids_match_transformers_and_pad_on_the_left(checkpoint):
    transformers = pytest.importorskip("transformers")
    name, folder = checkpoint
    ours = load_text_tokenizer(folder)
    assert ours.decoder and ours.max_length == 16
    reference = transformers.AutoTokenizer.from_pretrained(str(folder))
    expected = [reference(t)["input_ids"] for t in TEXTS]
    assert (expected[0][0] == 1) == (name == "llama")  # BOS from the post-processor only
    batch = ours(TEXTS)
    n = max(map(len, expected))
    for row, ids in enumerate(expected):
        np.testing.assert_array_equal(np.asarray(batch.ids[row, n - len(ids) :]), ids)
        np.testing.assert_array_equal(np.asarray(batch.attention_mask[row]), [0] * (n - len(ids)) + [1] * len(ids))
    eos = reference.convert_tokens_to_ids(reference.eos_token)
    assert np.all(np.asarray(batch.ids)[np.asarray(batch.attention_mask) == 0] == eos)  # no pad token: EOS


def test_continuation_split_and_seam_error(checkpoint):
    _, folder = checkpoint
    tok = load_text_tokenizer(folder)
    prompt_ids, continuation_ids = tok.split_continuation("the capital of france is", " paris")
    assert prompt_ids + continuation_ids == tok.backend.encode("the capital of france is paris").ids
    assert prompt_ids == tok.backend.encode("the capital of france is").ids and continuation_ids
    with pytest.raises(ValueError, match=r"does not tokenize on its own after the prompt.*with a space"):
        tok.split_continuation("the capital of fr", "ance is paris")
    with pytest.raises(ValueError, match="empty continuation"):
        tok.split_continuation("the cat", "")


def test_text_longer_than_the_context_is_refused(checkpoint):
    _, folder = checkpoint
    with pytest.raises(ValueError, match=r"tokens long but the model's context holds 16 positions; shorten"):
        load_text_tokenizer(folder)("the cat sat on the mat " * 6)
