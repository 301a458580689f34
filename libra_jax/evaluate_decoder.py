"""Method × preset evaluation of a decoder LM on the synthetic decoder tasks (`libra-jax evaluate --model
synthetic_decoder`; tables and files: `libra_jax.report`).

    from libra_jax.evaluate_decoder import DecoderEvalOptions, evaluate_decoder
    result = evaluate_decoder(model, params, [("fullgrad", "vanilla"), ("fullgrad", "libra")], task,
                              DecoderEvalOptions(n=100))
    result.results[("fullgrad", "libra")]["recall_top1"]

Each task prompt (`libra_jax.data.text_synthetic.make_decoder_task`, the 'test' split) has one true source: the
earlier token that determines the answer. Explained: the model's own greedy next token after the prompt (not the
gold answer), at the last position, as the preset's scalar (the probability under vanilla / libra / cp_lrp, the
logit under attnlrp / decompx; `text.next_token.next_token_target`). Scored positions ("candidates"): the prompt
without [BOS] and without the last token (the query itself, which the prediction is made at).

* source AP / top-1 (`metrics.rationale.source_hits`): AP of the signed map against the one-hot source and whether
  the map's top candidate is the source, per task, in %.
* deletion (`metrics.deletion.deletion_curves`): the logit of the predicted token after removing the ⌈r·n⌉ most
  (MoRF) / least (LeRF) relevant candidates, r = 0, 0.1, …, 1, both tasks pooled; MoRF / LeRF are the areas under
  the curves and ABPC = LeRF − MoRF. Removal: deletion with left padding (`Removal("delete", [PAD], "left")`): the
  prompt closes up towards the last position, which stays the query (positions count real tokens, so a left-padded
  prompt is the shorter prompt).
* completeness: mean |Σ map − logit| of the same method under the preset's logit variant.

Per batch and preset, every requested method comes out of one multi-method attribution call (one forward + one
backward for the single-pass methods; IG / SmoothGrad add their own passes), plus one for completeness.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from libra_jax.data.text_synthetic import PAD, DecoderTaskConfig, decoder_vocabulary, make_decoder_split
from libra_jax.methods import api
from libra_jax.metrics.deletion import CURVE_FRACTIONS, Removal, deletion_curves
from libra_jax.metrics.rationale import source_hits
from libra_jax.models.text_inputs import text_inputs
from libra_jax.rules import get_rules
from libra_jax.run.progress import Progress
from libra_jax.text.next_token import next_token_target

TASKS = ("recall", "induction")
METHODS = (
    "ixg",
    "fullgrad",
    "fullgrad_plus",
    "gradsam",
    "genatt",
    "rollout",
    "rawatt",
    "attcat",
    "ig",
    "smoothgrad",
)
"""The token methods defined for a causal decoder without a class token (issue #14 item 3), run under each of
`--rules`; `LRP_ROWS` add the IxG presets."""
LRP_ROWS = (("ixg", "attnlrp"), ("ixg", "cp_lrp"), ("ixg", "decompx"))

COLUMNS = (
    ("recall_ap", "Recall AP ↑"),
    ("recall_top1", "Recall top-1 ↑"),
    ("induction_ap", "Induction AP ↑"),
    ("induction_top1", "Induction top-1 ↑"),
    ("morf", "MoRF ↓"),
    ("lerf", "LeRF ↑"),
    ("abpc", "ABPC ↑"),
    ("completeness_error", "Completeness err ↓"),
)


@dataclasses.dataclass(frozen=True)
class DecoderEvalOptions:
    """Settings of `evaluate_decoder`: n prompts per task, batch size, IG steps (None: IG's default), progress bar."""

    n: int = 500
    batch_size: int = 100
    steps: int | None = None
    progress: bool = True

    def __post_init__(self):
        if self.n <= 0 or self.batch_size <= 0:
            raise ValueError(
                f"the number of prompts and the batch size must be positive; got {self.n}, {self.batch_size}"
            )


@dataclasses.dataclass(frozen=True)
class DecoderEvaluation:
    """Rows {(method, preset): {column: value}}, their pooled deletion curves {(method, preset): {'morf', 'lerf':
    (n, F)}}, the removal's name, the wall time in seconds, and no skipped inputs (the prompts are generated; the
    command reports `skipped` of every evaluation)."""

    results: dict[tuple[str, str], dict[str, float]]
    curves: dict[tuple[str, str], dict[str, np.ndarray]]
    removal: str
    seconds: float
    skipped: tuple[tuple[str, str], ...] = ()


def removal(task: DecoderTaskConfig) -> Removal:
    """Deletion with left padding by [PAD] (module docstring)."""
    return Removal("delete", decoder_vocabulary(task).index(PAD), "left")


def candidates(mask: np.ndarray) -> np.ndarray:
    """(B, N) bool: the scored / removable positions of unpadded prompts, all but [BOS] and the last token."""
    out = np.asarray(mask, bool).copy()
    out[:, 0] = out[:, -1] = False
    return out


def _area(curves: np.ndarray) -> float:
    """Mean over prompts of the trapezoid area under (n, F) curves over `CURVE_FRACTIONS`."""
    return float(np.mean(np.trapezoid(curves, CURVE_FRACTIONS, axis=-1)))


class _Row:
    """Running values of one (method, preset) row."""

    def __init__(self):
        self.hits = {name: {"ap": [], "top1": []} for name in TASKS}
        self.morf: list[np.ndarray] = []
        self.lerf: list[np.ndarray] = []
        self.residuals: list[np.ndarray] = []

    def add(self, name: str, hits: dict, curves: dict, residual: np.ndarray) -> None:
        for key in ("ap", "top1"):
            self.hits[name][key].append(np.asarray(hits[key], np.float64))
        self.morf.append(curves["morf"])
        self.lerf.append(curves["lerf"])
        self.residuals.append(np.asarray(residual))

    def row(self) -> dict[str, float]:
        out = {k: math.nan for k, _ in COLUMNS}
        for name, hits in self.hits.items():
            if hits["ap"]:
                out[f"{name}_ap"] = 100 * float(np.mean(np.concatenate(hits["ap"])))
                out[f"{name}_top1"] = 100 * float(np.mean(np.concatenate(hits["top1"])))
        morf, lerf = np.concatenate(self.morf), np.concatenate(self.lerf)
        out |= {"morf": _area(morf), "lerf": _area(lerf), "abpc": _area(lerf - morf)}
        out["completeness_error"] = float(np.mean(np.abs(np.concatenate(self.residuals))))
        return out

    def curves(self) -> dict[str, np.ndarray]:
        return {"morf": np.concatenate(self.morf), "lerf": np.concatenate(self.lerf)}


def check_task(model, task: DecoderTaskConfig) -> None:
    """Raise ValueError unless `model`'s vocabulary is the tasks' (a model trained on them)."""
    size = len(decoder_vocabulary(task))
    if model.config.vocab_size != size:
        raise ValueError(
            f"the decoder tasks have a vocabulary of {size} tokens but the model has {model.config.vocab_size}:"
            " evaluate a model trained on them (the embedded synthetic_decoder, or `libra-jax train --model decoder`)"
        )


def evaluate_decoder(
    model,
    params,
    rows: Sequence[tuple[str, str]],
    task: DecoderTaskConfig | None = None,
    options: DecoderEvalOptions = DecoderEvalOptions(),
) -> DecoderEvaluation:
    """Evaluate (method, preset) rows on the first `options.n` 'test' prompts of each task.

    Args:
      model, params: a decoder LM (models/decoder.py contract) trained on the tasks, and its weights.
      rows: (method, preset) pairs (methods the model does not support are left out).
      task: the task config the model was trained on (default `DecoderTaskConfig()`).
      options: prompt count, batch size, IG steps, progress bar.
    Raises:
      ValueError: an unknown method or preset, or a model whose vocabulary is not the tasks'.
    """
    task = task or DecoderTaskConfig()
    check_task(model, task)
    for method, preset in rows:
        if method not in api.METHODS:
            raise ValueError(f"unknown method {method!r}; known: {', '.join(sorted(api.METHODS))}")
        get_rules(preset)
    acc = {(m, p): _Row() for m, p in rows if api.supports(model, m)}
    by_preset: dict[str, list[str]] = {}
    for m, p in acc:
        by_preset.setdefault(p, []).append(m)

    def build(preset: str, methods: list[str], logit: bool):
        rules = get_rules(preset, target="logit") if logit else get_rules(preset)
        steps = {"steps": options.steps} if options.steps and "ig" in methods else {}
        return jax.jit(api.attribution(model, methods, rules=rules, target=next_token_target(rules.target), **steps))

    explain = {p: build(p, methods, False) for p, methods in by_preset.items()}
    explain_logit = {p: build(p, methods, True) for p, methods in by_preset.items()}
    last_logits = jax.jit(lambda prm, ids, mask: model.apply({"params": prm}, text_inputs(ids, mask))[0][:, -1])
    remove = removal(task)
    bar = Progress(len(TASKS) * options.n, "evaluate decoder", unit="prompt") if options.progress else None
    start = time.perf_counter()
    for name in TASKS:
        for first in range(0, options.n, options.batch_size):
            data = make_decoder_split(task, name, "test", min(options.batch_size, options.n - first), first)
            ids, mask = data["ids"], data["mask"]
            logits = last_logits(params, ids, mask)
            pred = jnp.argmax(logits, -1)
            f = np.asarray(logits[jnp.arange(len(pred)), pred])
            y = jnp.stack([jnp.full_like(pred, ids.shape[1] - 1), pred], -1)  # (B, 2): (last position, token)
            valid = candidates(mask)

            def score(i, m, pred=pred):
                return last_logits(params, i, m)[jnp.arange(len(pred)), pred]

            for p, methods in by_preset.items():
                out, out_logit = (
                    explain[p](params, text_inputs(ids, mask), y),
                    explain_logit[p](params, text_inputs(ids, mask), y),
                )
                for m in methods:
                    hits = source_hits(out[m], data["source"], valid)
                    curves = deletion_curves(score, ids, mask, out[m], valid, remove)
                    acc[(m, p)].add(name, hits, curves, np.asarray(out_logit[m]).sum(-1) - f)
            if bar:
                bar.update(len(ids))
    seconds = time.perf_counter() - start
    results = {key: row.row() for key, row in acc.items()}
    return DecoderEvaluation(results, {key: row.curves() for key, row in acc.items()}, remove.name, seconds)


def table_note(evaluation: DecoderEvaluation, n: int) -> str:
    """The lines printed under the decoder table: what was explained, scored and removed."""
    return (
        f"\n\nn = {n} test prompts per task; explained: the model's greedy next token at the last position (the"
        " preset's scalar; completeness under its logit variant, mean |Σ map − logit|). Source AP / top-1 in %,"
        " over the prompt without [BOS] and the query token. MoRF / LeRF: area under the predicted token's logit"
        f" as the most / least relevant tokens are removed by {evaluation.removal} (deletion, the prompt closes up"
        f" towards the last position); ABPC = LeRF − MoRF. {evaluation.seconds:.0f} s."
    )
