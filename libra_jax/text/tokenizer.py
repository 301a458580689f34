"""Tokenizers of BERT-family checkpoints, on Hugging Face `tokenizers` (no hand-written tokenizer).

    tokenizer = load_text_tokenizer("textattack/bert-base-uncased-SST-2")
    inputs = tokenizer(["a fine film", "dull"])          # TextInputs, padded to the longest

The checkpoint's `tokenizer.json` is used when it ships one (it carries the normaliser, the WordPiece /
BPE model and the [CLS] … [SEP] / <s> … </s> template); otherwise its `vocab.txt` is read as a
WordPiece vocabulary (`tokenizers.BertWordPieceTokenizer`, lower-casing as `tokenizer_config.json` says).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from libra_jax.image_text.tokenizer import TOKENIZER_FILE, _token_name, _tokenizers
from libra_jax.models.text_inputs import TextInputs, text_inputs
from libra_jax.text.loading import CONFIG_FILE, config_from_hf
from libra_jax.weights import hub

VOCAB_FILE = "vocab.txt"
TOKENIZER_CONFIG = "tokenizer_config.json"
PAD_NAMES = ("[PAD]", "<pad>")


@dataclasses.dataclass(frozen=True)
class TextTokenizer:
    """Strings (or string pairs) → a padded `TextInputs` (special tokens added by the backend's template)."""

    backend: object  # a `tokenizers.Tokenizer`
    max_length: int
    pad_id: int

    def __call__(self, texts: str | Sequence[str], pairs: str | Sequence[str] | None = None) -> TextInputs:
        """texts (and optional second segments `pairs`) → TextInputs (B, N), N = the longest, truncated to
        `max_length`. Raises ValueError for an empty text."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or any(not t.strip() for t in texts):
            raise ValueError("empty text: every text to explain needs at least one word")
        if pairs is not None:
            pairs = [pairs] if isinstance(pairs, str) else list(pairs)
            if len(pairs) != len(texts):
                raise ValueError(f"{len(texts)} texts but {len(pairs)} second segments; pass one pair per text")
        batch = zip(texts, pairs, strict=True) if pairs is not None else texts
        encodings = self.backend.encode_batch(list(batch), add_special_tokens=True)
        n = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), n), self.pad_id, np.int32)
        mask = np.zeros((len(encodings), n), np.int32)
        types = np.zeros((len(encodings), n), np.int32)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
            types[row, : len(e.ids)] = e.type_ids
        return text_inputs(ids, mask, types)

    def tokens(self, ids: Sequence[int]) -> list[str]:
        """The token strings of `ids` (e.g. for word merging and display)."""
        return [self.backend.id_to_token(int(i)) for i in ids]


def from_files(tokenizer_json: Path | None, vocab: Path | None, tokenizer_cfg: dict, max_length: int) -> TextTokenizer:
    """A `TextTokenizer` from a checkpoint's `tokenizer.json`, else its `vocab.txt` (WordPiece)."""
    tk = _tokenizers()
    if tokenizer_json is not None:
        backend = tk.Tokenizer.from_file(str(tokenizer_json))
    elif vocab is not None:
        lowercase = tokenizer_cfg.get("do_lower_case", True)
        backend = tk.BertWordPieceTokenizer(str(vocab), lowercase=lowercase)
    else:
        raise FileNotFoundError(f"the checkpoint has neither {TOKENIZER_FILE} nor {VOCAB_FILE}")
    backend.no_padding()
    backend.enable_truncation(max_length)
    names = [_token_name(tokenizer_cfg.get("pad_token"), PAD_NAMES[0]), *PAD_NAMES]
    pad = next((backend.token_to_id(n) for n in names if backend.token_to_id(n) is not None), None)
    if pad is None:
        raise ValueError(f"the tokenizer has no padding token (looked for {names})")
    return TextTokenizer(backend, max_length, pad)


def load_text_tokenizer(
    name_or_path: str | os.PathLike, *, max_length: int | None = None, cache_dir: str | os.PathLike | None = None
) -> TextTokenizer:
    """The tokenizer of a BERT-family checkpoint: an HF repo ('org/repo', 'hf-hub:org/repo') or a local folder.

    max_length: truncate longer texts (default: the model's position table, from its config.json).
    """
    name = os.fspath(name_or_path)
    ref = hub.repo_ref(name)
    if ref is None and not Path(name).is_dir():
        raise ValueError(f"{name!r} is neither an HF repo nor a folder holding {TOKENIZER_FILE} or {VOCAB_FILE}")

    def get(filename: str) -> Path | None:
        return hub.repo_file(ref, name, filename, cache_dir)

    if max_length is None:
        config = get(CONFIG_FILE)
        if config is None:
            raise FileNotFoundError(f"{name} has no {CONFIG_FILE}; pass max_length=")
        max_length = config_from_hf(json.loads(config.read_text())).max_length
    tok_cfg = get(TOKENIZER_CONFIG)
    tokenizer_cfg = json.loads(tok_cfg.read_text()) if tok_cfg else {}
    return from_files(get(TOKENIZER_FILE), get(VOCAB_FILE), tokenizer_cfg, max_length)
