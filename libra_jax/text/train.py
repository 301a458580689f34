"""Train the embedded text classifier from scratch on the synthetic text benchmark (optax, CPU-sized).

    from libra_jax.text.train import train
    result = train(seed=0, out="libra_jax/assets/synthetic_bert.safetensors")

    libra-jax train --model bert --out synthetic_bert.safetensors --seed 0 [--steps N]   (libra_jax/cli/train.py)

A post-norm BERT (`BertClassifier`, family 'bert': width 64, 2 layers, 2 heads) over the benchmark's
vocabulary (`libra_jax.data.text_synthetic`). Every training example is drawn fresh from the 'train'
split; the accuracy is measured on the disjoint 'test' split. The optimiser, its schedule and checkpoint
writing are those of the image models (`libra_jax.train.make_optimizer`, `save_checkpoint`).

Evidence-free examples: a fraction (`TextRecipe.blank_fraction`) of every batch has its evidence words
replaced by random distractors and a uniform target. The benchmark's distractors carry no class
information, so the right answer without evidence is "no class"; training on it makes the classifier's
confidence rest on the evidence alone (removing the evidence removes the prediction), which is what an
attribution benchmark with exact rationales needs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import optax

from libra_jax.data.text_synthetic import (
    DISTRACTORS,
    SPECIALS,
    TextBenchmarkConfig,
    make_split,
    tokenizer_json,
    vocabulary,
)
from libra_jax.models.bert import VANILLA, BertClassifier, BertConfig
from libra_jax.models.text_inputs import TextInputs, text_inputs
from libra_jax.train import Recipe, make_optimizer
from libra_jax.weights.atomic import write_atomic
from libra_jax.weights.formats import save_checkpoint

MODEL_NAME = "bert"
_BLANK_SEED = 103  # stream of the evidence-free examples' replacement words


@dataclasses.dataclass(frozen=True)
class TextRecipe:
    """Optimisation settings (AdamW, warmup + cosine decay, as `libra_jax.train.Recipe`) and the data mix.

    blank_fraction: share of each batch whose evidence is replaced by distractors, with a uniform target.
    """

    steps: int = 600
    batch_size: int = 64
    peak_lr: float = 2e-3
    warmup_steps: int = 50
    final_lr_ratio: float = 0.02
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    blank_fraction: float = 0.125

    def optimizer(self) -> optax.GradientTransformation:
        recipe = Recipe(
            steps=self.steps,
            batch_size=self.batch_size,
            peak_lr=self.peak_lr,
            warmup_steps=self.warmup_steps,
            final_lr_ratio=self.final_lr_ratio,
            weight_decay=self.weight_decay,
            clip_norm=self.clip_norm,
        )
        return make_optimizer(recipe)


def model_config(benchmark: TextBenchmarkConfig) -> BertConfig:
    """The classifier's architecture for the benchmark's vocabulary, length and classes."""
    return BertConfig(
        family="bert",
        vocab_size=len(vocabulary(benchmark)),
        hidden_size=64,
        num_layers=2,
        num_heads=2,
        intermediate_size=128,
        max_positions=32 * (benchmark.seq_len // 32 + 1),  # ≥ the longest example, [CLS] and [SEP] included
        type_vocab_size=2,
        num_classes=benchmark.num_classes,
    )


def remove_evidence(ids: np.ndarray, rationale: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """ids (n, N) with every rationale token (n, N) replaced by a uniformly drawn distractor word."""
    distractor_ids = len(SPECIALS) + rng.integers(len(DISTRACTORS), size=ids.shape)
    return np.where(rationale, distractor_ids, ids).astype(np.int32)


def batch(benchmark: TextBenchmarkConfig, recipe: TextRecipe, t: int) -> tuple[TextInputs, np.ndarray]:
    """Batch t: train-split examples [t·B, (t+1)·B) → (inputs (B, N), targets float32 (B, K)).

    The first round(blank_fraction·B) examples lose their evidence (`remove_evidence`) and get the uniform target.
    """
    b, k = recipe.batch_size, benchmark.num_classes
    data = make_split(benchmark, "train", b, start=t * b)
    blank = np.arange(b) < round(recipe.blank_fraction * b)
    rng = np.random.default_rng((_BLANK_SEED, t))
    ids = remove_evidence(data["ids"], data["rationale"] & blank[:, None], rng)
    targets = np.where(blank[:, None], 1.0 / k, np.eye(k, dtype=np.float32)[data["labels"]]).astype(np.float32)
    return text_inputs(ids, data["mask"]), targets


def make_train_step(
    model: BertClassifier, tx: optax.GradientTransformation
) -> Callable[[dict, optax.OptState, TextInputs, jax.Array], tuple[dict, optax.OptState, jax.Array]]:
    """Jitted step (params, opt_state, inputs (B, N), targets (B, K)) → (params, opt_state, loss)."""

    def loss_fn(params, inputs, targets):
        logits, _ = model.apply({"params": params}, inputs, VANILLA)
        return optax.softmax_cross_entropy(logits, targets).mean()

    @jax.jit
    def step(params, opt_state, inputs, targets):
        loss, grads = jax.value_and_grad(loss_fn)(params, inputs, targets)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def fit(
    model: BertClassifier,
    benchmark: TextBenchmarkConfig,
    recipe: TextRecipe,
    seed: int = 0,
    log: Callable[[str], None] = print,
    log_every: int = 100,
) -> tuple[dict, np.ndarray]:
    """Train `model` from a seeded init; returns (params, losses float32 (recipe.steps,))."""
    example = text_inputs(np.zeros((1, benchmark.seq_len), np.int32))
    params = model.init(jax.random.key(seed), example)["params"]
    tx = recipe.optimizer()
    opt_state = tx.init(params)
    step = make_train_step(model, tx)
    losses = []
    start = time.perf_counter()
    for t in range(recipe.steps):
        params, opt_state, loss = step(params, opt_state, *batch(benchmark, recipe, t))
        losses.append(loss)
        if (t + 1) % log_every == 0 or t + 1 == recipe.steps:
            recent = float(np.mean(jax.device_get(losses[-log_every:])))
            log(f"step {t + 1}/{recipe.steps}  loss {recent:.4f}  elapsed {time.perf_counter() - start:.0f}s")
    return params, np.asarray(jax.device_get(losses), np.float32)


def predict_proba(model: BertClassifier, params: dict, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Class probabilities float32 (n, K) of token ids (n, N) with their 1/0 mask (n, N)."""
    logits, _ = jax.jit(model.apply)({"params": params}, text_inputs(ids, mask))
    return np.asarray(jax.nn.softmax(logits, axis=-1), np.float32)


def evaluate(model: BertClassifier, params: dict, benchmark: TextBenchmarkConfig, n: int) -> float:
    """Accuracy on the first `n` examples of the 'test' split."""
    data = make_split(benchmark, "test", n)
    return float(np.mean(predict_proba(model, params, data["ids"], data["mask"]).argmax(-1) == data["labels"]))


def train(
    seed: int = 0,
    steps: int | None = None,
    out: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
    *,
    benchmark: TextBenchmarkConfig | None = None,
    recipe: TextRecipe | None = None,
    test_examples: int = 2000,
    tokenizer_out: str | os.PathLike | None = None,
) -> dict:
    """Train the text classifier, measure test accuracy, optionally save a libra-jax checkpoint.

    Args:
      seed: parameter-init seed (the data stream is the fixed 'train' split).
      steps: overrides recipe.steps (the cosine schedule follows it; warmup capped at steps // 2).
      out: if given, where to write the checkpoint; its `source` metadata is a JSON record of the
        benchmark config, recipe, seed, steps, test accuracy and training time.
      benchmark, recipe: defaults `TextBenchmarkConfig()`, `TextRecipe()`.
      test_examples: number of 'test' split examples the accuracy is measured on.
      tokenizer_out: if given, where to write the benchmark vocabulary's tokenizer.json (`tokenizer_json`).
    Returns:
      dict(test_accuracy, seconds (training + evaluation wall time), steps).
    """
    benchmark = benchmark or TextBenchmarkConfig()
    recipe = recipe or TextRecipe()
    if steps is not None:
        # The schedule needs decay steps after the warmup: a short run warms up over at most half of it.
        recipe = dataclasses.replace(recipe, steps=steps, warmup_steps=min(recipe.warmup_steps, steps // 2))
    model = BertClassifier(model_config(benchmark))
    log(f"training {MODEL_NAME!r}: {model.config}")
    start = time.perf_counter()
    params, _ = fit(model, benchmark, recipe, seed, log)
    accuracy = evaluate(model, params, benchmark, test_examples)
    seconds = time.perf_counter() - start
    log(f"{MODEL_NAME}: test accuracy {accuracy:.4f} on {test_examples} examples, {seconds:.0f}s")
    if out is not None:
        record = {
            "model": MODEL_NAME,
            "trained_with": "libra_jax.text.train",
            "seed": seed,
            "steps": recipe.steps,
            "recipe": dataclasses.asdict(recipe),
            "benchmark": dataclasses.asdict(benchmark),
            "test_accuracy": accuracy,
            "test_examples": test_examples,
            "seconds": round(seconds, 1),
        }
        path = save_checkpoint(out, model, params, source=json.dumps(record))
        log(f"saved {path}")
    if tokenizer_out is not None:
        write_atomic(Path(tokenizer_out), tokenizer_json(vocabulary(benchmark)).encode())
        log(f"saved {tokenizer_out}")
    return {"test_accuracy": accuracy, "seconds": seconds, "steps": recipe.steps}
