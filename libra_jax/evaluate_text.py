"""Method × preset evaluation of a text classifier on the synthetic evidence-word benchmark
(`libra_jax.data.text_synthetic`): plausibility against the exact rationales, ERASER faithfulness, class
discrimination and completeness (`libra-jax evaluate` on a [CLS]-pooled text model; tables: `libra_jax.report`).

    model, params = libra_jax.load("synthetic_bert")
    result = evaluate_text(model, params, [("fullgrad", "vanilla"), ("fullgrad", "libra")], EvaluateOptions(n=200))
    result.results[("fullgrad", "libra")]["rationale_ap"]

Per batch and preset, every requested method comes out of one multi-method attribution call (one forward + one
backward for the single-pass methods), as in `libra_jax.evaluate`. On the `test` split (one class's evidence per
sentence) the maps explain the gold label, as Chefer's benchmark does; every word of the benchmark is one token,
so a word's score (the max over its pieces, `libra_jax.text.words.merge_words`) is its token's score:

* token-F1 (`metrics.rationale.token_f1`, ERASER instance-macro F1, signed scores): the top-k words of each
  sentence against its evidence words, at k = 1, 3, 5 and the mean over Chefer's k = 5, 10, …, 80. Sentences
  have 10–24 words and 1–3 evidence words, so k ≥ 24 predicts every word: Chefer's mean is mostly that
  floor here, and the small k tell the methods apart.
* rationale AUPRC (`metrics.rationale.rationale_ap`) of the word scores against the evidence words.
* ERASER comprehensiveness / sufficiency (`metrics.deletion.comprehensiveness_sufficiency`): AOPC over
  1/5/10/20/50 % of the words removed, on the gold label's probability, with the removed words replaced by
  [MASK] and, separately, deleted (the sequence closes up, padding on the right).
* completeness error: mean |Σ map − logit| of the same methods under the preset's logit variant, for the top-1
  class (the LibraGrad protocol).
* class discrimination on the `pairs` split (evidence of two classes per sentence): both classes explained from
  one forward; AP of each class's word scores against its own evidence (high) and the other class's (low).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from libra_jax.data import text_synthetic
from libra_jax.evaluate import EvaluateOptions, Evaluation, check_rows, preset_explainers
from libra_jax.methods import api
from libra_jax.methods.names import resolve_methods
from libra_jax.metrics import deletion, rationale
from libra_jax.models.text_inputs import text_inputs
from libra_jax.run.progress import Progress
from libra_jax.text.words import covered_words, merge_words

F1_KS: tuple[int, ...] = (1, 3, 5)
"""The top-k sizes of the token-F1 columns (besides the mean over Chefer's k = 5…80)."""

TEXT_COLUMNS = (
    *((f"f1_at_{k}", f"F1@{k} ↑") for k in F1_KS),
    ("f1_chefer", "F1 k=5…80 ↑"),
    ("rationale_ap", "AUPRC ↑"),
    ("comp_mask", "Comp. [MASK] ↑"),
    ("suff_mask", "Suff. [MASK] ↓"),
    ("comp_delete", "Comp. del ↑"),
    ("suff_delete", "Suff. del ↓"),
    ("class_disc_ap", "Class-disc AP ↑"),
    ("class_disc_other_ap", "AP on other class ↓"),
    ("completeness_error", "Completeness err ↓"),
)
"""The text table's (result key, title) columns, for `libra_jax.report`."""

TEXT_METHODS = ("ixg", "fullgrad", "fullgrad_plus", "gradsam", "genatt", "rollout", "rawatt", "attcat", "tokentm")
"""The single-pass token methods of issue #13 defined for a [CLS]-pooled sequence (the CAM methods, defined on the
last block of a ViT, are left out; add any method, e.g. `ig`, by name)."""


def default_rows(model, rules: Sequence[str] = ("vanilla", "libra")) -> list[tuple[str, str]]:
    """The default table: every `TEXT_METHODS` entry the model supports under each of `rules`, then IxG under each
    LRP preset (AttnLRP, CP-LRP, DecompX: single-pass too)."""
    plain = [m for m in TEXT_METHODS if api.supports(model, m)]
    return [*resolve_methods(plain, rules).values(), *(("ixg", p) for p in api.LRP_PRESETS)]


def removals(config: text_synthetic.TextBenchmarkConfig) -> dict[str, deletion.Removal]:
    """The two ERASER removals of the table, by column suffix: [MASK] replacement and deletion (right padding)."""
    vocab = text_synthetic.vocabulary(config)
    return {
        "mask": deletion.Removal("replace", vocab.index(text_synthetic.MASK)),
        "delete": deletion.Removal("delete", vocab.index(text_synthetic.PAD), "right"),
    }


def word_index(content: np.ndarray) -> np.ndarray:
    """The benchmark's token → word index (B, N) int32: word j is token j + 1 ([CLS] first), −1 off the words."""
    return np.where(content, np.arange(content.shape[-1]) - 1, -1).astype(np.int32)


class _TextRow:
    """Running per-example values for one (method, preset) row."""

    def __init__(self):
        self.words: list[np.ndarray] = []  # word scores (B, W)
        self.gold: list[np.ndarray] = []
        self.valid: list[np.ndarray] = []
        self.eraser: dict[str, list[np.ndarray]] = {}
        self.disc_own: list[np.ndarray] = []
        self.disc_other: list[np.ndarray] = []
        self.completeness: list[np.ndarray] = []

    def row(self) -> dict[str, float]:
        out = {k: float("nan") for k, _ in TEXT_COLUMNS}
        if self.words:
            words, gold, valid = (np.concatenate(v) for v in (self.words, self.gold, self.valid))
            f1 = rationale.token_f1(words, gold, valid, F1_KS)["macro_f1"]
            out |= {f"f1_at_{k}": 100 * float(v) for k, v in zip(F1_KS, f1, strict=True)}
            out["f1_chefer"] = 100 * float(rationale.token_f1(words, gold, valid)["macro_f1"].mean())
            out["rationale_ap"] = 100 * float(np.mean(rationale.rationale_ap(words, gold, valid)))
            out["completeness_error"] = float(np.mean(np.abs(np.concatenate(self.completeness))))
        out |= {k: float(np.mean(np.concatenate(v))) for k, v in self.eraser.items()}
        if self.disc_own:
            out["class_disc_ap"] = 100 * float(np.mean(np.concatenate(self.disc_own)))
            out["class_disc_other_ap"] = 100 * float(np.mean(np.concatenate(self.disc_other)))
        return out


def _batches(config, split: str, n: int, batch_size: int) -> Iterator[dict]:
    for start in range(0, n, batch_size):
        yield text_synthetic.make_split(config, split, min(batch_size, n - start), start)


def benchmark_config(model, benchmark: text_synthetic.TextBenchmarkConfig | None = None):
    """`benchmark`, or by default the `TextBenchmarkConfig` with the model's class count."""
    return benchmark or text_synthetic.TextBenchmarkConfig(num_classes=model.capabilities.num_classes)


def check_benchmark_model(model, config: text_synthetic.TextBenchmarkConfig) -> None:
    """Raise ValueError unless `model` is a [CLS]-pooled classifier over `config`'s vocabulary, classes and length."""
    vocab, caps = text_synthetic.vocabulary(config), model.capabilities
    if model.layout.grid is not None or not caps.class_token:
        raise ValueError(
            "the text benchmark scores sequence classifiers that pool a class token ([CLS]); for an image model use"
            " libra_jax.evaluate.evaluate_data"
        )
    if model.config.vocab_size != len(vocab) or caps.num_classes != config.num_classes:
        raise ValueError(
            f"the text benchmark has {len(vocab)} words and {config.num_classes} classes; the model has a vocabulary of"
            f" {model.config.vocab_size} and {caps.num_classes} classes: evaluate a model trained on it"
            " (`libra-jax train --model bert`, or the embedded synthetic_bert)"
        )
    if model.config.max_length < config.seq_len:
        raise ValueError(
            f"the benchmark's sequences have {config.seq_len} tokens; the model takes at most {model.config.max_length}"
        )


def evaluate_text(
    model,
    params,
    rows: Sequence[tuple[str, str]],
    options: EvaluateOptions | None = None,
    benchmark: text_synthetic.TextBenchmarkConfig | None = None,
) -> Evaluation:
    """Evaluate (method, preset) rows on the synthetic text benchmark (methods the model lacks are left out).

    Args:
      model, params: a [CLS]-pooled text classifier (e.g. `libra_jax.load("synthetic_bert")`) and its weights.
      rows: (method, preset) pairs, e.g. `default_rows(model)`.
      options: `n` examples of the `test` split and as many `pairs` sentences, batch size, IG steps, progress bar
        (default `EvaluateOptions()`).
      benchmark: the benchmark the model was trained on (default `TextBenchmarkConfig` with the model's classes).
    Returns:
      `Evaluation` with rows {(method, preset): {column of `TEXT_COLUMNS`: value}}, no curves, nothing skipped.
    Raises:
      ValueError: an unknown method or preset, or a model that does not fit the benchmark.
    """
    check_rows(rows)
    options = options or EvaluateOptions()
    config = benchmark_config(model, benchmark)
    check_benchmark_model(model, config)
    acc = {(m, p): _TextRow() for m, p in rows if api.supports(model, m)}
    steps = {"steps": options.steps} if options.steps else {}
    by_preset, explain, explain_logit = preset_explainers(model, list(acc), steps)
    forward = jax.jit(lambda prm, x: model.apply({"params": prm}, x)[0])

    @jax.jit
    def probabilities(prm, ids, mask):
        return jax.nn.softmax(forward(prm, text_inputs(ids, mask)), -1)

    predict = functools.partial(probabilities, params)
    remove = removals(config)
    n, b = options.n, options.batch_size
    bar = Progress(n, "evaluate", unit="text") if options.progress else None
    for data in _batches(config, "test", n, b):
        x, labels = text_inputs(data["ids"], data["mask"]), jnp.asarray(data["labels"])
        index = word_index(data["content"])
        valid = np.asarray(covered_words(index, config.max_words))
        logits = forward(params, x)
        top1 = jnp.argmax(logits, -1)
        f = np.asarray(logits[jnp.arange(len(top1)), top1])
        for p, methods in by_preset.items():
            out, logit_maps = explain[p](params, x, labels), explain_logit[p](params, x, top1)
            for m in methods:
                row = acc[(m, p)]
                row.words.append(np.asarray(merge_words(out[m], index, config.max_words)))
                row.gold.append(data["word_rationale"])
                row.valid.append(valid)
                row.completeness.append(np.asarray(logit_maps[m]).sum(-1) - f)
                for name, removal in remove.items():
                    scores = deletion.comprehensiveness_sufficiency(
                        predict, data["ids"], data["mask"], out[m], data["content"], removal, labels
                    )
                    for key, column in (("comprehensiveness", "comp"), ("sufficiency", "suff")):
                        row.eraser.setdefault(f"{column}_{name}", []).append(scores[key])
        if bar:
            bar.update(len(labels))
    bar = Progress(n, "class discrimination", unit="text") if options.progress else None
    for data in _batches(config, "pairs", n, b):
        x, index = text_inputs(data["ids"], data["mask"]), word_index(data["content"])
        valid = covered_words(index, config.max_words)
        gold = data["word_rationale"]  # (B, 2, W)
        for p, methods in by_preset.items():
            out = explain[p](params, x, jnp.asarray(data["labels"]))  # (B, 2, N): one forward, two targets
            for m in methods:
                for c in range(2):
                    words = merge_words(out[m][:, c], index, config.max_words)
                    acc[(m, p)].disc_own.append(np.asarray(rationale.rationale_ap(words, gold[:, c], valid)))
                    acc[(m, p)].disc_other.append(np.asarray(rationale.rationale_ap(words, gold[:, 1 - c], valid)))
        if bar:
            bar.update(len(data["labels"]))
    return Evaluation({key: row.row() for key, row in acc.items()}, {}, [])
