"""The one training driver of the embedded models: seeded init, AdamW with warmup and cosine decay, the jitted
step, the logged loop, the held-out evaluation, the timing, and the checkpoint whose `source` records how it
was made.

Each model kind describes itself as a `Trainee` (image ViTs: libra_jax/train.py; the BERT classifier:
libra_jax/text/train.py; the decoder: libra_jax/text/train_decoder.py) and its recipe; `train` does the rest.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import jax
import numpy as np
import optax

from libra_jax.weights.atomic import write_atomic
from libra_jax.weights.formats import save_checkpoint


class Schedule(Protocol):
    """The optimisation fields every recipe has (`libra_jax.train.Recipe`, `text.train.TextRecipe`, …)."""

    steps: int
    peak_lr: float
    warmup_steps: int
    final_lr_ratio: float
    weight_decay: float
    clip_norm: float


@dataclasses.dataclass(frozen=True)
class Trainee:
    """What the driver needs of one model kind.

    Attributes:
      name: the model's name in the record ('vit', 'bert', 'decoder', …).
      module: the module that defines the kind, recorded as `trained_with`.
      model: the untrained Flax module (`config` and, for images, `data_config` are saved with the weights).
      example: one input for `model.init` (shapes only matter).
      loss: (params, *batch) → scalar training loss.
      batches: () → iterator over the batches of the run, each a tuple passed to `loss` after params.
      evaluate: params → the held-out scores as record fields, e.g. {'test_accuracy': 0.98, 'test_images': 2000}.
      log_every: steps between progress lines.
      tokenizer: () → the tokenizer.json text of a text model's vocabulary (None: the model takes no text).
    """

    name: str
    module: str
    model: Any
    example: Any
    loss: Callable[..., jax.Array]
    batches: Callable[[], Iterator[tuple]]
    evaluate: Callable[[dict], dict[str, float | int]]
    log_every: int = 100
    tokenizer: Callable[[], str] | None = None


def _decay_mask(params: dict) -> dict:
    """Weight decay on matmul / conv kernels only (not on biases, norms, tokens, embeddings)."""
    return jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key == "kernel", params)


def make_optimizer(recipe: Schedule) -> optax.GradientTransformation:
    """Clip by global norm, then AdamW (decay on kernels) with linear warmup and cosine decay to final_lr_ratio·peak."""
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=recipe.peak_lr,
        warmup_steps=recipe.warmup_steps,
        decay_steps=recipe.steps,
        end_value=recipe.peak_lr * recipe.final_lr_ratio,
    )
    return optax.chain(
        optax.clip_by_global_norm(recipe.clip_norm),
        optax.adamw(schedule, weight_decay=recipe.weight_decay, mask=_decay_mask),
    )


def fit(
    trainee: Trainee, recipe: Schedule, seed: int = 0, log: Callable[[str], None] = print
) -> tuple[dict, np.ndarray]:
    """Train from `model.init` with `seed` over `recipe.steps` batches of `trainee.batches()`.

    Returns:
      (params, losses float32 (recipe.steps,)): the trained Flax params and the loss of every step.
    """
    params = trainee.model.init(jax.random.key(seed), trainee.example)["params"]
    tx = make_optimizer(recipe)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, *batch):
        loss, grads = jax.value_and_grad(trainee.loss)(params, *batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    every, losses = trainee.log_every, []
    start = time.perf_counter()
    for t, batch in zip(range(recipe.steps), trainee.batches(), strict=False):
        params, opt_state, loss = step(params, opt_state, *batch)
        losses.append(loss)
        if (t + 1) % every == 0 or t + 1 == recipe.steps:
            recent = float(np.mean(jax.device_get(losses[-every:])))
            log(f"step {t + 1}/{recipe.steps}  loss {recent:.4f}  elapsed {time.perf_counter() - start:.0f}s")
    return params, np.asarray(jax.device_get(losses), np.float32)


def train(
    trainee: Trainee,
    recipe: Schedule,
    benchmark: Any,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
    tokenizer_out: str | os.PathLike | None = None,
) -> dict:
    """Fit, evaluate, time, and optionally save a libra-jax checkpoint (and a text model's tokenizer.json).

    Args:
      trainee: the model kind.
      recipe: a frozen dataclass with the `Schedule` fields (and the kind's own), recorded.
      benchmark: the frozen data-generator config, recorded (the evaluation commands regenerate it).
      seed: parameter-init seed.
      out: if given, the checkpoint path; its `source` metadata is a JSON record of the model name, module,
        seed, steps, recipe, benchmark, the evaluation's fields and the wall time.
      log: receives progress lines.
      tokenizer_out: if given, where to write `trainee.tokenizer()`.
    Returns:
      dict(the evaluation's fields, seconds (training + evaluation wall time), steps).
    """
    if tokenizer_out is not None and trainee.tokenizer is None:
        raise ValueError(f"{trainee.name!r} takes no text, so it has no tokenizer to write: drop tokenizer_out")
    log(f"training {trainee.name!r}: {trainee.model.config}")
    start = time.perf_counter()
    params, _ = fit(trainee, recipe, seed, log)
    scores = trainee.evaluate(params)
    seconds = time.perf_counter() - start
    shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in scores.items())
    log(f"{trainee.name}: {shown}, {seconds:.0f}s")
    if out is not None:
        record = {
            "model": trainee.name,
            "trained_with": trainee.module,
            "seed": seed,
            "steps": recipe.steps,
            "recipe": dataclasses.asdict(recipe),
            "benchmark": dataclasses.asdict(benchmark),
            **scores,
            "seconds": round(seconds, 1),
        }
        path = save_checkpoint(out, trainee.model, params, source=json.dumps(record))
        log(f"saved {path}")
    if tokenizer_out is not None:
        write_atomic(Path(tokenizer_out), trainee.tokenizer().encode())
        log(f"saved {tokenizer_out}")
    return {**scores, "seconds": seconds, "steps": recipe.steps}
