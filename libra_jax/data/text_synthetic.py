"""Synthetic text benchmarks with exact ground truth: evidence-word classification and decoder recall tasks.

Classification (encoders): a sentence is a run of distractor words (`DISTRACTORS`, no class information)
with a few planted evidence words (`EVIDENCE[c]`) of class c. The label is the class of the evidence, so
the rationale (the evidence positions) is exact. "Pair" sentences carry the evidence of two different
classes, for class discrimination: each class's rationale is its own evidence. Every word is one token of
the benchmark's vocabulary (`vocabulary`), so word and token rationales coincide.

Decoder tasks (issue #14), each a fixed-length prompt whose answer token is determined by one earlier
token at a known position (`source`):

* key→value recall: ``[BOS] k₁ v₁ … kₙ vₙ ? k_q`` → v_q; the source is v_q's position.
* induction copy: ``[BOS] s₀ … s_{L−1} s_q`` (distinct symbols) → s_{q+1}; the source is s_{q+1}'s position.

Example i of a call with seed s depends only on (s, task, i), as in `libra_jax.data.synthetic`, so any
slice can be generated on its own and the named splits (`SPLITS`) are disjoint by seed.

`tokenizer_json` builds a `tokenizers` WordPiece tokenizer over a vocabulary (one piece per word), which
an embedded model can ship as its `tokenizer.json`; it reproduces the ids produced here.
"""

from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Sequence

import numpy as np

PAD, UNK, CLS, SEP, MASK, BOS = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[BOS]"
SPECIALS: tuple[str, ...] = (PAD, UNK, CLS, SEP, MASK)
"""Special tokens of the classification vocabulary, ids 0..4 (BERT's order of meaning)."""

DISTRACTORS: tuple[str, ...] = (
    "the", "a", "of", "to", "in", "on", "at", "with", "and", "or", "but", "it", "this", "that", "then",
    "there", "here", "some", "many", "few", "very", "just", "still", "also", "again", "often", "today",
    "later", "people", "thing", "time", "way", "day", "place", "part", "side", "kind", "said", "went",
    "came", "made", "took", "saw", "gave", "told", "looked", "felt", "around",
)  # fmt: skip
"""Words that carry no class information."""

EVIDENCE: tuple[tuple[str, ...], ...] = (
    ("goal", "referee", "stadium"),
    ("rain", "thunder", "forecast"),
    ("bread", "cheese", "soup"),
    ("guitar", "melody", "drum"),
    ("planet", "comet", "orbit"),
    ("bank", "stock", "loan"),
)
"""EVIDENCE[c]: the words that signal class c; a benchmark with num_classes=K uses the first K."""

CLASS_NAMES: tuple[str, ...] = ("sports", "weather", "food", "music", "space", "finance")

SPLITS = types.MappingProxyType({"train": 5_000_011, "val": 6_000_011, "test": 7_000_011, "pairs": 8_000_011})
"""Seeds of the named splits: train / val / test are single-evidence ('pairs': two classes) for
classification; the decoder tasks use train / val / test."""

_SINGLE, _PAIR, _RECALL, _INDUCTION = 1, 2, 3, 4  # task tags mixed into each example's seed


@dataclasses.dataclass(frozen=True)
class TextBenchmarkConfig:
    """Classification generator settings.

    Attributes:
      num_classes: K, the first K entries of `EVIDENCE` (2 ≤ K ≤ len(EVIDENCE)).
      min_words, max_words: sentence length in words (tokens N = max_words + 2 with [CLS] and [SEP]).
      min_evidence, max_evidence: evidence words per class in a sentence (a pair sentence has both
        classes' counts, so it needs min_words ≥ 2·max_evidence).
    """

    num_classes: int = 4
    min_words: int = 10
    max_words: int = 24
    min_evidence: int = 1
    max_evidence: int = 3

    def __post_init__(self):
        if not 2 <= self.num_classes <= len(EVIDENCE):
            raise ValueError(f"num_classes must be in [2, {len(EVIDENCE)}], got {self.num_classes}")
        if not 1 <= self.min_evidence <= self.max_evidence:
            raise ValueError(f"need 1 <= min_evidence <= max_evidence, got {self.min_evidence}, {self.max_evidence}")
        if not 2 * self.max_evidence <= self.min_words <= self.max_words:
            raise ValueError(
                f"need 2·max_evidence <= min_words <= max_words (room for a pair's evidence), got "
                f"max_evidence={self.max_evidence}, min_words={self.min_words}, max_words={self.max_words}"
            )

    @property
    def seq_len(self) -> int:
        """N: tokens per example, [CLS] and [SEP] included (shorter sentences are padded)."""
        return self.max_words + 2


def vocabulary(config: TextBenchmarkConfig) -> tuple[str, ...]:
    """The classification vocabulary, by id: specials, distractors, then the K classes' evidence words."""
    return SPECIALS + DISTRACTORS + tuple(w for words in EVIDENCE[: config.num_classes] for w in words)


def class_names(config: TextBenchmarkConfig) -> tuple[str, ...]:
    """Names of the config's K classes, by label."""
    return CLASS_NAMES[: config.num_classes]


def encode(
    sentences: Sequence[Sequence[str]], vocab: Sequence[str], seq_len: int, *, bos: str = CLS, eos: str | None = SEP
) -> tuple[np.ndarray, np.ndarray]:
    """Word lists → token ids, one id per word, `bos` first, `eos` last (if given), padded right with [PAD].

    Args:
      sentences: n lists of words, each in `vocab`.
      vocab: the words by id (must contain bos, eos and [PAD]).
      seq_len: N, the padded length.
    Returns:
      (ids int32 (n, N), mask bool (n, N): True on real tokens).
    """
    index = {w: i for i, w in enumerate(vocab)}
    specials = [bos, PAD] + ([eos] if eos is not None else [])
    missing = sorted({w for s in sentences for w in s if w not in index} | {w for w in specials if w not in index})
    if missing:
        raise ValueError(f"words not in the vocabulary: {missing[:10]}; build the vocabulary that produced them")
    ids = np.full((len(sentences), seq_len), index[PAD], np.int32)
    mask = np.zeros((len(sentences), seq_len), bool)
    for j, words in enumerate(sentences):
        row = [index[bos]] + [index[w] for w in words] + ([index[eos]] if eos is not None else [])
        if len(row) > seq_len:
            raise ValueError(f"sentence {j} needs {len(row)} tokens but seq_len is {seq_len}; raise seq_len")
        ids[j, : len(row)] = row
        mask[j, : len(row)] = True
    return ids, mask


def _sentence(config: TextBenchmarkConfig, rng: np.random.Generator, labels) -> tuple[list[str], np.ndarray]:
    """Words of one sentence with evidence of each of `labels`, and (len(labels), words) bool rationales."""
    n = int(rng.integers(config.min_words, config.max_words + 1))
    counts = rng.integers(config.min_evidence, config.max_evidence + 1, size=len(labels))
    positions = rng.permutation(n)
    words = [DISTRACTORS[i] for i in rng.integers(len(DISTRACTORS), size=n)]
    rationale = np.zeros((len(labels), n), bool)
    start = 0
    for c, (label, m) in enumerate(zip(labels, counts, strict=True)):
        pos = positions[start : start + m]
        start += m
        for p, w in zip(pos, rng.integers(len(EVIDENCE[label]), size=m), strict=True):
            words[p] = EVIDENCE[label][w]
        rationale[c, pos] = True
    return words, rationale


def make_classification(config: TextBenchmarkConfig, n: int, seed: int, start: int = 0, pair: bool = False) -> dict:
    """Classification examples start … start+n-1 of `seed` (single-evidence, or two-class if `pair`).

    Returns (N = config.seq_len; token 0 is [CLS], then one token per word, [SEP], [PAD]s):
      text: n strings (the words joined by single spaces);
      ids int32 (n, N) in `vocabulary(config)`; mask bool (n, N): real tokens;
      content bool (n, N): word tokens (mask without [CLS] / [SEP]);
      labels int32 (n,) — pair: (n, 2), two different classes;
      rationale bool (n, N): the evidence tokens — pair: (n, 2, N), each class's own evidence (disjoint);
      word_rationale bool (n, max_words) — pair: (n, 2, max_words): the same on the words of `text`
        (for other tokenizers: `libra_jax.text.words.word_to_token_mask`).
    """
    k, size = (2 if pair else 1), config.seq_len
    sentences, labels = [], np.empty((n, k), np.int32)
    rationale = np.zeros((n, k, size), bool)
    for j in range(n):
        rng = np.random.default_rng((seed, _PAIR if pair else _SINGLE, start + j))
        labels[j] = rng.choice(config.num_classes, 2, replace=False) if pair else rng.integers(config.num_classes)
        words, rat = _sentence(config, rng, labels[j])
        sentences.append(words)
        rationale[j, :, 1 : 1 + len(words)] = rat  # token 0 is [CLS]
    ids, mask = encode(sentences, vocabulary(config), size)
    content = mask.copy()
    content[:, 0] = False
    content[np.arange(n), mask.sum(1) - 1] = False  # [SEP]
    if not pair:
        labels, rationale = labels[:, 0], rationale[:, 0]
    return {
        "text": [" ".join(s) for s in sentences],
        "ids": ids,
        "mask": mask,
        "content": content,
        "labels": labels,
        "rationale": rationale,
        "word_rationale": rationale[..., 1 : 1 + config.max_words],
    }


def make_split(config: TextBenchmarkConfig, split: str, n: int, start: int = 0) -> dict:
    """Classification examples of a named split ('train', 'val', 'test': single; 'pairs': two-class)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    return make_classification(config, n, SPLITS[split], start, pair=split == "pairs")


# ---------------------------------------------------------------- decoder tasks


@dataclasses.dataclass(frozen=True)
class DecoderTaskConfig:
    """Decoder task settings; both tasks share one vocabulary (`decoder_vocabulary`).

    Attributes:
      num_keys, num_values: key words k0… and value words v0… of the recall task.
      num_pairs: n, key→value pairs in a recall prompt (distinct keys); prompt length 2n + 3.
      num_symbols: symbol words s0… of the induction task.
      copy_length: L, distinct symbols in an induction prompt; prompt length L + 2.
    """

    num_keys: int = 16
    num_values: int = 16
    num_pairs: int = 6
    num_symbols: int = 32
    copy_length: int = 12

    def __post_init__(self):
        if not 1 <= self.num_pairs <= self.num_keys or self.num_values < 2:
            raise ValueError(
                f"need 1 <= num_pairs <= num_keys and num_values >= 2, got num_pairs={self.num_pairs}, "
                f"num_keys={self.num_keys}, num_values={self.num_values}"
            )
        if not 2 <= self.copy_length <= self.num_symbols:
            raise ValueError(f"need 2 <= copy_length <= num_symbols, got {self.copy_length}, {self.num_symbols}")


QUERY = "?"


def decoder_vocabulary(config: DecoderTaskConfig) -> tuple[str, ...]:
    """[PAD], [UNK], [BOS], '?', keys k0…, values v0…, symbols s0…, by id."""
    return (
        (PAD, UNK, BOS, QUERY)
        + tuple(f"k{i}" for i in range(config.num_keys))
        + tuple(f"v{i}" for i in range(config.num_values))
        + tuple(f"s{i}" for i in range(config.num_symbols))
    )


def _recall(config: DecoderTaskConfig, rng: np.random.Generator) -> tuple[list[str], str, int]:
    keys = rng.choice(config.num_keys, config.num_pairs, replace=False)
    values = rng.integers(config.num_values, size=config.num_pairs)
    q = int(rng.integers(config.num_pairs))
    words = [w for k, v in zip(keys, values, strict=True) for w in (f"k{k}", f"v{v}")] + [QUERY, f"k{keys[q]}"]
    return words, f"v{values[q]}", 2 + 2 * q  # [BOS] shifts positions by one


def _induction(config: DecoderTaskConfig, rng: np.random.Generator) -> tuple[list[str], str, int]:
    symbols = [f"s{i}" for i in rng.choice(config.num_symbols, config.copy_length, replace=False)]
    q = int(rng.integers(config.copy_length - 1))
    return symbols + [symbols[q]], symbols[q + 1], q + 2


_DECODER_TASKS = {"recall": (_RECALL, _recall), "induction": (_INDUCTION, _induction)}


def make_decoder_task(config: DecoderTaskConfig, task: str, n: int, seed: int, start: int = 0) -> dict:
    """Prompts start … start+n-1 of `seed` for `task` ('recall' or 'induction').

    Returns (N = 2·num_pairs + 3 for recall, copy_length + 2 for induction; token 0 is [BOS], no padding):
      text: n prompt strings (without [BOS]); ids int32 (n, N) in `decoder_vocabulary(config)`;
      mask bool (n, N) (all True); target int32 (n,): the answer token id (the next token after the
      prompt); source int32 (n,): the prompt position of the one earlier token that determines it.
    """
    if task not in _DECODER_TASKS:
        raise ValueError(f"unknown decoder task {task!r}; expected one of {sorted(_DECODER_TASKS)}")
    tag, generate = _DECODER_TASKS[task]
    vocab = decoder_vocabulary(config)
    prompts, answers, sources = [], [], []
    for j in range(n):
        words, answer, source = generate(config, np.random.default_rng((seed, tag, start + j)))
        prompts.append(words)
        answers.append(vocab.index(answer))
        sources.append(source)
    size = len(prompts[0]) + 1 if prompts else 0
    ids, mask = encode(prompts, vocab, size, bos=BOS, eos=None)
    return {
        "text": [" ".join(p) for p in prompts],
        "ids": ids,
        "mask": mask,
        "target": np.asarray(answers, np.int32),
        "source": np.asarray(sources, np.int32),
    }


def make_decoder_split(config: DecoderTaskConfig, task: str, split: str, n: int, start: int = 0) -> dict:
    """Prompts of a named split ('train', 'val', 'test') of a decoder task (see `make_decoder_task`)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown decoder split {split!r}; expected 'train', 'val' or 'test'")
    return make_decoder_task(config, task, n, SPLITS[split], start)


# ---------------------------------------------------------------- tokenizer


_SPECIAL = re.compile(r"^\[[A-Z]+\]$")


def tokenizer_json(vocab: Sequence[str], *, bos: str = CLS, eos: str | None = SEP) -> str:
    """A `tokenizers` WordPiece tokenizer over `vocab` (one piece per word) as tokenizer.json text.

    Lower-cases, splits on whitespace and punctuation (BERT pre-tokenizer), maps unknown words to
    [UNK] and wraps each text as ``bos … eos``; every bracketed entry ([PAD], [MASK], …) is a special
    token. Encoding `make_classification`'s text gives its ids (without padding) — likewise for the
    decoder tasks with bos=[BOS], eos=None.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    index = {w: i for i, w in enumerate(vocab)}
    for name in (bos, eos, UNK):
        if name is not None and name not in index:
            raise ValueError(f"{name} is not in the vocabulary; add it (see `vocabulary`)")
    tok = Tokenizer(models.WordPiece(vocab=index, unk_token=UNK, max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    template = f"{bos} $A" + (f" {eos}" if eos is not None else "")
    pair = f"{bos} $A" + (f" {eos} $B:1 {eos}:1" if eos is not None else " $B:1")
    used = [bos] + ([eos] if eos is not None else [])
    tok.post_processor = processors.TemplateProcessing(
        single=template, pair=pair, special_tokens=[(w, index[w]) for w in used]
    )
    tok.decoder = decoders.WordPiece()
    tok.add_special_tokens([w for w in vocab if _SPECIAL.match(w)])
    return tok.to_str()
