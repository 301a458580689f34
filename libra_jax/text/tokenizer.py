"""Tokenizers of BERT-family and decoder checkpoints, on Hugging Face `tokenizers` (no hand-written tokenizer).

    tokenizer = load_text_tokenizer("textattack/bert-base-uncased-SST-2")
    inputs = tokenizer(["a fine film", "dull"])          # TextInputs, padded to the longest
    prompt_ids, continuation_ids = load_text_tokenizer("Qwen/Qwen2.5-0.5B").split_continuation("Paris is", " big")

The checkpoint's `tokenizer.json` is used when it ships one (it carries the normaliser, the WordPiece /
BPE model and the [CLS] … [SEP] / <s> … </s> / BOS template); otherwise its `vocab.txt` is read as a
WordPiece vocabulary (`tokenizers.BertWordPieceTokenizer`, lower-casing as `tokenizer_config.json` says).
Special tokens are the ones the `tokenizer.json` post-processor adds (a Llama-style BOS, none for GPT-2),
as transformers 5 does; `tokenizer_config.json`'s `add_bos_token` is not read (transformers 5 ignores it too).

Decoder checkpoints (a decoder `model_type` in config.json) pad on the left (the last position stays the
prompt's last token), pad with the pad token, else EOS, else id 0 (padding is masked, its id is never read),
and refuse a text longer than the context instead of truncating it.
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
from libra_jax.text import decoder_loading
from libra_jax.text.loading import CONFIG_FILE, config_from_hf
from libra_jax.weights import hub

VOCAB_FILE = "vocab.txt"
TOKENIZER_CONFIG = "tokenizer_config.json"
PAD_NAMES = ("[PAD]", "<pad>")
EOS_NAMES = ("</s>", "<|endoftext|>", "<eos>", "<|end_of_text|>")


@dataclasses.dataclass(frozen=True)
class TextTokenizer:
    """Strings (or string pairs) → a padded `TextInputs` (special tokens added by the backend's template)."""

    backend: object  # a `tokenizers.Tokenizer`
    max_length: int
    pad_id: int
    decoder: bool = False  # left padding, no truncation (see the module docstring)

    def __call__(self, texts: str | Sequence[str], pairs: str | Sequence[str] | None = None) -> TextInputs:
        """texts (and optional second segments `pairs`) → TextInputs (B, N), N = the longest, truncated to
        `max_length` (a decoder's: left-padded, never truncated; see `pad`). Raises ValueError for an empty text."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or any(not t.strip() for t in texts):
            raise ValueError("empty text: every text to explain needs at least one word")
        if pairs is not None:
            pairs = [pairs] if isinstance(pairs, str) else list(pairs)
            if len(pairs) != len(texts):
                raise ValueError(f"{len(texts)} texts but {len(pairs)} second segments; pass one pair per text")
        batch = zip(texts, pairs, strict=True) if pairs is not None else texts
        encodings = self.backend.encode_batch(list(batch), add_special_tokens=True)
        return self.pad([e.ids for e in encodings], [e.type_ids for e in encodings])

    def pad(self, ids: Sequence[Sequence[int]], type_ids: Sequence[Sequence[int]] | None = None) -> TextInputs:
        """Token id lists → a padded `TextInputs` (B, N), N = the longest: on the right, or on the left for a
        decoder. Raises ValueError for a decoder text longer than the context (`max_length`)."""
        n = max(len(row) for row in ids)
        if self.decoder and n > self.max_length:
            raise ValueError(
                f"the text is {n} tokens long but the model's context holds {self.max_length} positions;"
                " shorten the prompt (or the continuation)"
            )
        out = np.full((len(ids), n), self.pad_id, np.int32)
        mask = np.zeros((len(ids), n), np.int32)
        types = np.zeros((len(ids), n), np.int32)
        for row, tokens in enumerate(ids):
            span = slice(n - len(tokens), n) if self.decoder else slice(0, len(tokens))
            out[row, span] = tokens
            mask[row, span] = 1
            if type_ids is not None:
                types[row, span] = type_ids[row]
        return text_inputs(out, mask, types)

    def split_continuation(self, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
        """(prompt ids, continuation ids) such that together they are the tokenization of prompt + continuation.

        Raises ValueError when the joined text does not tokenize as the prompt's tokens followed by more
        tokens: a token would straddle the seam (e.g. "Pa" + "ris"), so the continuation cannot be scored
        as tokens that follow this prompt.
        """
        if not continuation:
            raise ValueError("empty continuation: pass the text that follows the prompt")
        head = self.backend.encode(prompt, add_special_tokens=True).ids
        joined = self.backend.encode(prompt + continuation, add_special_tokens=True)
        if joined.ids[: len(head)] == head and len(joined.ids) == len(head):
            raise ValueError(f"the continuation {continuation!r} adds no token to the prompt; pass some text")
        if joined.ids[: len(head)] != head:
            seam = self.tokens(joined.ids[max(len(head) - 1, 0) : len(head) + 1])
            raise ValueError(
                f"the continuation {continuation!r} does not tokenize on its own after the prompt: at the seam the"
                f" prompt ends in {self.tokens(head[-1:])} but prompt + continuation tokenizes as {seam} there;"
                " start the continuation at a word boundary (e.g. with a space) or move the seam"
            )
        return list(head), list(joined.ids[len(head) :])

    def token_id(self, token: str) -> int:
        """The id of one token given as a vocabulary entry ('▁Paris', 'ĠParis') or as text (' Paris'); ValueError
        when the text is not exactly one token."""
        direct = self.backend.token_to_id(token)
        if direct is not None:
            return direct
        pieces = self.backend.encode(token, add_special_tokens=False).tokens
        if len(pieces) != 1:
            raise ValueError(
                f"{token!r} is {len(pieces)} tokens {pieces}, not one; pass a single token of the vocabulary"
                + (f", e.g. {pieces[0]!r}" if pieces else "")
            )
        return self.backend.token_to_id(pieces[0])

    def display(self, ids: Sequence[int]) -> list[str]:
        """One readable string per token (decoded on its own, surrounding spaces dropped; '␣' for a lone space)."""
        shown = [self.backend.decode([int(i)], skip_special_tokens=False) for i in ids]
        return [s.strip() or ("␣" if s else self.backend.id_to_token(int(i))) for s, i in zip(shown, ids, strict=True)]

    def tokens(self, ids: Sequence[int]) -> list[str]:
        """The token strings of `ids` (e.g. for word merging and display)."""
        return [self.backend.id_to_token(int(i)) for i in ids]


def from_files(
    tokenizer_json: Path | None, vocab: Path | None, tokenizer_cfg: dict, max_length: int, decoder: bool = False
) -> TextTokenizer:
    """A `TextTokenizer` from a checkpoint's `tokenizer.json`, else its `vocab.txt` (WordPiece); `decoder`: the
    decoder conventions of the module docstring."""
    tk = _tokenizers()
    if tokenizer_json is not None:
        backend = tk.Tokenizer.from_file(str(tokenizer_json))
    elif vocab is not None:
        lowercase = tokenizer_cfg.get("do_lower_case", True)
        backend = tk.BertWordPieceTokenizer(str(vocab), lowercase=lowercase)
    else:
        raise FileNotFoundError(f"the checkpoint has neither {TOKENIZER_FILE} nor {VOCAB_FILE}")
    backend.no_padding()
    names = [_token_name(tokenizer_cfg.get("pad_token"), PAD_NAMES[0]), *PAD_NAMES]
    if decoder:
        backend.no_truncation()
        names += [_token_name(tokenizer_cfg.get("eos_token"), EOS_NAMES[0]), *EOS_NAMES]
    else:
        backend.enable_truncation(max_length)
    pad = next((backend.token_to_id(n) for n in names if backend.token_to_id(n) is not None), None)
    if pad is None and not decoder:
        raise ValueError(f"the tokenizer has no padding token (looked for {names})")
    return TextTokenizer(backend, max_length, 0 if pad is None else pad, decoder)


def load_text_tokenizer(
    name_or_path: str | os.PathLike,
    *,
    max_length: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    decoder: bool | None = None,
) -> TextTokenizer:
    """The tokenizer of a BERT-family or decoder checkpoint: an HF repo ('org/repo', 'hf-hub:org/repo') or a local
    folder.

    max_length: truncate longer texts (decoders: refuse them) (default: the model's position table, from its
      config.json).
    decoder: the decoder conventions (module docstring); default: whether config.json names a decoder family.
    """
    name = os.fspath(name_or_path)
    ref = hub.repo_ref(name)
    if ref is None and not Path(name).is_dir():
        raise ValueError(f"{name!r} is neither an HF repo nor a folder holding {TOKENIZER_FILE} or {VOCAB_FILE}")

    def get(filename: str) -> Path | None:
        return hub.repo_file(ref, name, filename, cache_dir)

    config = get(CONFIG_FILE)
    if config is None and max_length is None:
        raise FileNotFoundError(f"{name} has no {CONFIG_FILE}; pass max_length=")
    model_cfg = json.loads(config.read_text()) if config is not None else {}
    decoder_checkpoint = model_cfg.get("model_type") in decoder_loading.FAMILIES
    decoder = decoder_checkpoint if decoder is None else decoder
    if max_length is None:
        max_length = (decoder_loading.config_from_hf if decoder_checkpoint else config_from_hf)(model_cfg).max_length
    tok_cfg = get(TOKENIZER_CONFIG)
    tokenizer_cfg = json.loads(tok_cfg.read_text()) if tok_cfg else {}
    return from_files(get(TOKENIZER_FILE), get(VOCAB_FILE), tokenizer_cfg, max_length, decoder)
