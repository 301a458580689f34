"""Image–text tokenizers (`libra_jax.image_text.tokenizer`) against open_clip's `SimpleTokenizer`."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from test_loading import make_hub_cache, offline  # noqa: F401 (fixture)

from libra_jax.image_text import tokenizer as tok

open_clip_tokenizer = pytest.importorskip("open_clip.tokenizer")
tokenizers = pytest.importorskip("tokenizers")

PROMPTS = [
    "a photo of a zebra",
    "A   Photo OF a ZEBRA!!",
    "it's a dog's life, isn't it? 123 4.5",
    "naïve café — über 東京",
    "  leading\tand trailing \n ",
    "x " * 100,  # truncated to [SOT, ..., EOT]
    "",
]
OPEN_CLIP_CFG = {"model_cfg": {"embed_dim": 8, "vision_cfg": {}, "text_cfg": {"context_length": 77}}}


@pytest.fixture(scope="module")
def reference():
    return open_clip_tokenizer.SimpleTokenizer()(PROMPTS).numpy()


def test_clip_bpe_matches_open_clip_simple_tokenizer(reference):
    ours = tok.Tokenizer(tok.clip_bpe(), 77, eos=49407, bos=49406)(PROMPTS)
    assert ours.dtype == np.int32 and ours.shape == (len(PROMPTS), 77)
    np.testing.assert_array_equal(ours, reference)
    assert ours[5, -1] == 49407 and ours[0, 0] == 49406 and ours[0, -1] == 0


def test_load_tokenizer_from_open_clip_repos(offline, tmp_path, reference):  # noqa: F811
    """Without tokenizer.json: the rebuilt BPE; with one (here the same tokenizer saved): that file."""
    config = json.dumps(OPEN_CLIP_CFG).encode()
    make_hub_cache(tmp_path / "hub", "timm/no-tokenizer-json", {"open_clip_config.json": config})
    plain = tok.load_tokenizer("hf-hub:timm/no-tokenizer-json", cache_dir=tmp_path / "hub")
    np.testing.assert_array_equal(plain(PROMPTS), reference)
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "open_clip_config.json").write_bytes(config)
    tok.clip_bpe().save(str(folder / "tokenizer.json"))
    from_json = tok.load_tokenizer(folder)
    assert from_json.context_length == 77
    np.testing.assert_array_equal(from_json(PROMPTS), reference)


def test_siglip_layout_pads_to_the_context_with_eos_last(tmp_path):
    """SigLIP: no start token, '</s>' after the words, the pad id of tokenizer_config.json to the full context."""
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "a": 3, "photo": 4, "of": 5, "zebra": 6}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    backend.save(str(tmp_path / "tokenizer.json"))
    hf_cfg = {"model_type": "siglip", "text_config": {"max_position_embeddings": 8}, "vision_config": {}}
    (tmp_path / "config.json").write_text(json.dumps(hf_cfg))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>", "pad_token": "<pad>"}))
    ids = tok.load_tokenizer(tmp_path)(["a photo of a zebra", "a zebra a zebra a zebra a zebra"])
    np.testing.assert_array_equal(ids, [[3, 4, 5, 3, 6, 1, 0, 0], [3, 6, 3, 6, 3, 6, 3, 1]])


def test_missing_tokenizers_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(ImportError, match=r"libra-jax\[clip\]"):
        tok.clip_bpe()
