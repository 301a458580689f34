"""Text tokenizers for image–text models, on Hugging Face `tokenizers` (the optional `clip` extra).

    tokenizer = load_tokenizer("hf-hub:timm/vit_base_patch16_clip_224.openai")
    ids = tokenizer(["a photo of a zebra", "a photo of a horse"])        # (2, 77) int32

A checkpoint's own `tokenizer.json` is used when it ships one (HF CLIP / SigLIP repos, timm open_clip
repos). An open_clip checkpoint without one gets open_clip's CLIP BPE (`bpe_simple_vocab_16e6.txt.gz`)
rebuilt as a `tokenizers` BPE model, with open_clip `SimpleTokenizer`'s pre-tokenisation (its regex,
byte-level alphabet, '</w>' word ends) and cleaning (whitespace collapsed, lower case).

Sequences are laid out as the upstream tokenizers do: CLIP [SOT, …, EOT] padded with 0 (open_clip)
and truncated to [SOT, …, EOT] of `context_length`; SigLIP […, </s>] padded with its pad id to the full
context (SigLIP pools the last position, so padding to the context length is part of the model).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from libra_jax.image_text import hf, open_clip
from libra_jax.weights import hub

CLIP_SOT, CLIP_EOT = "<|startoftext|>", "<|endoftext|>"
CLIP_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
CLIP_MERGES = 49152 - 256 - 2  # open_clip uses the first 48894 merges of the vocab file
TOKENIZER_FILE = "tokenizer.json"


def _tokenizers():
    try:
        import tokenizers
    except ImportError as e:
        raise ImportError(
            "text tokenization needs the `tokenizers` package: pip install 'libra-jax[clip]' (or tokenizers>=0.15)"
        ) from e
    return tokenizers


@dataclasses.dataclass(frozen=True)
class Tokenizer:
    """Strings → (n, context_length) int32 token ids. `bos` None: no start token (SigLIP)."""

    backend: object  # a `tokenizers.Tokenizer`; its own special-token post-processing is not used
    context_length: int
    eos: int
    bos: int | None = None
    pad: int = 0

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        prefix = [] if self.bos is None else [self.bos]
        room = self.context_length - len(prefix) - 1
        out = np.full((len(texts), self.context_length), self.pad, np.int32)
        for row, text in enumerate(texts):
            ids = [*prefix, *self.backend.encode(text, add_special_tokens=False).ids[:room], self.eos]
            out[row, : len(ids)] = ids
        return out


def clip_bpe(vocab_path: str | os.PathLike | None = None):
    """open_clip's `SimpleTokenizer` as a `tokenizers.Tokenizer` built from its BPE merges file.

    vocab_path: `bpe_simple_vocab_16e6.txt.gz`; default: the copy inside an installed `open_clip`.
    """
    tk = _tokenizers()
    if vocab_path is None:
        try:
            import open_clip as oc
        except ImportError as e:
            raise FileNotFoundError(
                "this checkpoint has no tokenizer.json; pass the CLIP BPE merges file (bpe_simple_vocab_16e6.txt.gz)"
                " or install open_clip_torch, which ships it"
            ) from e
        vocab_path = Path(oc.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(vocab_path).read().decode("utf-8").split("\n")[1 : CLIP_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    # GPT-2's byte alphabet in `bytes_to_unicode` order: printable bytes as themselves (< 256), then the
    # others mapped to 256 + k in byte order, so code-point order is the vocab order.
    alphabet = sorted(tk.pre_tokenizers.ByteLevel.alphabet())
    words = [*alphabet, *(c + "</w>" for c in alphabet), *("".join(m) for m in merges), CLIP_SOT, CLIP_EOT]
    model = tk.models.BPE(
        vocab={w: i for i, w in enumerate(words)}, merges=merges, end_of_word_suffix="</w>", fuse_unk=False
    )
    tokenizer = tk.Tokenizer(model)
    norm = tk.normalizers
    tokenizer.normalizer = norm.Sequence(
        [norm.NFC(), norm.Replace(tk.Regex(r"\s+"), " "), norm.Strip(), norm.Lowercase()]
    )
    tokenizer.pre_tokenizer = tk.pre_tokenizers.Sequence(
        [
            tk.pre_tokenizers.Split(tk.Regex(CLIP_PATTERN), behavior="removed", invert=True),
            tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    return tokenizer


def from_files(tokenizer_json: Path | None, model_cfg: dict, tokenizer_cfg: dict | None = None) -> Tokenizer:
    """A `Tokenizer` from a checkpoint's files: `tokenizer.json` (or None: open_clip's CLIP BPE), its model
    config (open_clip or HF, for the context length) and `tokenizer_config.json` (pad / eos names)."""
    tk = _tokenizers()
    backend = clip_bpe() if tokenizer_json is None else tk.Tokenizer.from_file(str(tokenizer_json))
    if "vision_config" in model_cfg or "text_config" in model_cfg:
        context = hf.architecture(model_cfg).text.context_length
    else:
        context = open_clip.model_config(model_cfg)[0]["text_cfg"].get("context_length", 77)
    if backend.token_to_id(CLIP_SOT) is not None:
        return Tokenizer(backend, context, eos=backend.token_to_id(CLIP_EOT), bos=backend.token_to_id(CLIP_SOT))
    tcfg = tokenizer_cfg or {}
    eos, pad = _token_name(tcfg.get("eos_token"), "</s>"), _token_name(tcfg.get("pad_token"), "</s>")
    ids = {name: backend.token_to_id(name) for name in (eos, pad)}
    if None in ids.values():
        raise ValueError(f"tokenizer.json lacks the special tokens {[n for n, i in ids.items() if i is None]}")
    return Tokenizer(backend, context, eos=ids[eos], pad=ids[pad])


def _token_name(entry, default: str) -> str:
    """tokenizer_config.json names a token as a string or an {"content": ...} dict."""
    if isinstance(entry, dict):
        return entry.get("content", default)
    return entry or default


def load_tokenizer(name_or_path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None) -> Tokenizer:
    """The tokenizer of an image–text checkpoint: an HF repo ('hf-hub:org/repo') or a local directory."""
    name = os.fspath(name_or_path)
    ref = None if os.path.exists(name) else hub.parse_hub_name(name)
    if ref is None and not Path(name).is_dir():
        raise ValueError(f"{name!r} is neither an HF repo ('hf-hub:org/repo') nor a directory")

    def get(filename: str) -> Path | None:
        return hub.repo_file(ref, name, filename, cache_dir)

    config = get(open_clip.CONFIG_FILE) or get(hf.CONFIG_FILE)
    if config is None:
        raise FileNotFoundError(f"{name} has no {open_clip.CONFIG_FILE} or {hf.CONFIG_FILE}")
    tok_cfg = get("tokenizer_config.json")
    model_cfg = json.loads(config.read_text())
    text_cfg = open_clip.model_config(model_cfg)[0].get("text_cfg", {})
    tokenizer_json = get(TOKENIZER_FILE)
    if tokenizer_json is None and text_cfg.get("hf_tokenizer_name"):
        raise FileNotFoundError(f"{name} uses the HF tokenizer {text_cfg['hf_tokenizer_name']!r}; load that repo's")
    return from_files(tokenizer_json, model_cfg, json.loads(tok_cfg.read_text()) if tok_cfg else None)
