"""Train the embedded text classifier from scratch on the synthetic text benchmark (optax, CPU-sized).

    from libra_jax.text.train import train
    result = train(seed=0, out="libra_jax/assets/synthetic_bert.safetensors")

    libra-jax train --model bert --out synthetic_bert.safetensors --seed 0 [--steps N]   (libra_jax/cli/train.py)

A post-norm BERT (`BertClassifier`, family 'bert': width 64, 2 layers, 2 heads) over the benchmark's
vocabulary (`libra_jax.data.text_synthetic`). Every training example is drawn fresh from the 'train'
split; the accuracy is measured on the disjoint 'test' split. The optimiser, its schedule and checkpoint
writing are the shared driver's (libra_jax/train_driver.py).

Evidence-free examples: a fraction (`TextRecipe.blank_fraction`) of every batch has its evidence words
replaced by random distractors and a uniform target. The benchmark's distractors carry no class
information, so the right answer without evidence is "no class"; training on it makes the classifier's
confidence rest on the evidence alone (removing the evidence removes the prediction), which is what an
attribution benchmark with exact rationales needs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import jax
import numpy as np
import optax

from libra_jax import train_driver
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

MODEL_NAME = "bert"
_BLANK_SEED = 103  # stream of the evidence-free examples' replacement words


@dataclasses.dataclass(frozen=True)
class TextRecipe:
    """Optimisation settings (`train_driver.make_optimizer`: AdamW, warmup + cosine decay) and the data mix.

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


def loss_function(model: BertClassifier) -> Callable[[dict, TextInputs, jax.Array], jax.Array]:
    """Cross-entropy (params, inputs (B, N), targets (B, K)) → scalar."""

    def loss(params, inputs, targets):
        logits, _ = model.apply({"params": params}, inputs, VANILLA)
        return optax.softmax_cross_entropy(logits, targets).mean()

    return loss


def trainee(
    model: BertClassifier, benchmark: TextBenchmarkConfig, recipe: TextRecipe, test_examples: int = 2000
) -> train_driver.Trainee:
    """The classifier as the shared driver's `Trainee` (libra_jax/train_driver.py)."""
    return train_driver.Trainee(
        name=MODEL_NAME,
        module="libra_jax.text.train",
        model=model,
        example=text_inputs(np.zeros((1, benchmark.seq_len), np.int32)),
        loss=loss_function(model),
        batches=lambda: (batch(benchmark, recipe, t) for t in range(recipe.steps)),
        evaluate=lambda params: {
            "test_accuracy": evaluate(model, params, benchmark, test_examples),
            "test_examples": test_examples,
        },
        tokenizer=lambda: tokenizer_json(vocabulary(benchmark)),
    )


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
      dict(test_accuracy, test_examples, seconds (training + evaluation wall time), steps).
    """
    benchmark = benchmark or TextBenchmarkConfig()
    recipe = recipe or TextRecipe()
    if steps is not None:
        # The schedule needs decay steps after the warmup: a short run warms up over at most half of it.
        recipe = dataclasses.replace(recipe, steps=steps, warmup_steps=min(recipe.warmup_steps, steps // 2))
    model = BertClassifier(model_config(benchmark))
    return train_driver.train(
        trainee(model, benchmark, recipe, test_examples), recipe, benchmark, seed, out, log, tokenizer_out
    )
