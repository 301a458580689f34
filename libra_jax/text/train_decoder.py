"""Train the embedded decoder from scratch on the synthetic decoder tasks (optax, CPU-sized).

    from libra_jax.text.train_decoder import train
    result = train(seed=0, out="libra_jax/assets/synthetic_decoder.safetensors")

    libra-jax train --model decoder --out synthetic_decoder.safetensors --seed 0 [--steps N]   (libra_jax/cli/train.py)

A Llama-style `Decoder` (models/decoder.py: RMSNorm, RoPE, grouped-query attention, SwiGLU MLP — the operations
LibraGrad's rules change) over the tasks' vocabulary (`libra_jax.data.text_synthetic.decoder_vocabulary`),
trained on key→value recall and induction copy mixed half and half, every prompt drawn fresh from the 'train'
split. Both tasks answer with the token that followed an earlier occurrence of the last token.

Teacher-forced continuations (`training_batch`): from the answer alone, one loss position per prompt, the model
sat at chance for thousands of steps. Each training prompt is therefore continued as its task goes on — recall
copies the pair list on from the queried pair (``v_q k_{q+1} v_{q+1} …``), induction the symbol sequence
(``s_{q+1} s_{q+2} …``) — and the loss is the cross-entropy at every position whose next token is determined (the
prompt's answer first, then each key's value / each copied symbol).
Relabelled induction rows: the induction rows' symbols are mapped one-to-one onto randomly drawn content tokens
(keys, values and symbols; `content_relabelling`). Without it the induction circuit formed on the symbols alone
and recall stayed at 29 % after 2500 steps (its prediction a random value of the prompt); with it, one circuit
copies any token and serves both tasks.
The accuracy is measured on the exact task prompts of the disjoint 'test' split (next token after the prompt).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from libra_jax import train_driver
from libra_jax.data.text_synthetic import (
    BOS,
    DecoderTaskConfig,
    decoder_vocabulary,
    make_decoder_split,
    tokenizer_json,
)
from libra_jax.models.decoder import VANILLA, Decoder, DecoderConfig
from libra_jax.models.text_inputs import TextInputs, text_inputs

MODEL_NAME = "decoder"
TASKS = ("recall", "induction")


@dataclasses.dataclass(frozen=True)
class DecoderRecipe:
    """Optimisation settings (`train_driver.make_optimizer`: AdamW, warmup + cosine decay) and the batch.

    batch_size: prompts per step, half of each task.
    """

    steps: int = 2500
    batch_size: int = 64
    peak_lr: float = 3e-3
    warmup_steps: int = 100
    final_lr_ratio: float = 0.02
    weight_decay: float = 0.01
    clip_norm: float = 1.0


def model_config(task: DecoderTaskConfig) -> DecoderConfig:
    """The decoder's architecture for the tasks' vocabulary: width 64, 3 layers, 4 query / 2 key-value heads."""
    return DecoderConfig(
        family="llama",
        vocab_size=len(decoder_vocabulary(task)),
        hidden_size=64,
        num_layers=3,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        intermediate_size=128,
        max_positions=32,
    )


def sequence_length(task: DecoderTaskConfig) -> int:
    """T: positions of a training row, the longest continuation of either task."""
    return max(4 * task.num_pairs + 1, 2 * task.copy_length)


def _continue_recall(ids: np.ndarray, answer: int, source: int) -> tuple[list[int], list[int]]:
    """Prompt ``[BOS] k_1 v_1 … k_n v_n ? k_q`` + ``v_q k_{q+1} v_{q+1} … k_n v_n``: the pair list copied on from
    the queried pair, as induction copies the sequence on. Returns (tokens, the label of each position: the next
    token where determined — each key's value —, else -1)."""
    rest = [int(t) for t in ids[source + 1 : len(ids) - 2]]  # k_{q+1} v_{q+1} … k_n v_n
    tail = [answer, *rest]
    seq = [*map(int, ids), *tail]
    labels = [-1] * (len(ids) - 1) + [answer] + [tail[j + 1] if j % 2 else -1 for j in range(len(tail))]
    return seq[:-1], labels[:-1]


def _continue_induction(ids: np.ndarray, answer: int, source: int) -> tuple[list[int], list[int]]:
    """Prompt ``[BOS] s_0 … s_{L−1} s_q`` + ``s_{q+1} … s_{L−2}``: every position from the prompt's last one
    predicts the next symbol of the copy."""
    copy = [int(t) for t in ids[source : len(ids) - 1]]  # s_{q+1} … s_{L−1}
    seq = [*map(int, ids), *copy]
    labels = [-1] * (len(ids) - 1) + copy + [-1]
    return seq[:-1], labels[:-1]


_CONTINUE = {"recall": _continue_recall, "induction": _continue_induction}
_RELABEL_SEED = 104  # stream of the induction rows' symbol → content-token maps


def content_relabelling(task: DecoderTaskConfig, rng: np.random.Generator) -> np.ndarray:
    """A token map (V,) int32 sending the symbols s0… one-to-one onto randomly drawn content tokens (keys, values
    and symbols); every other token to itself."""
    vocab = decoder_vocabulary(task)
    content = np.array([i for i, w in enumerate(vocab) if w[0] in "kvs" and w[1:].isdigit()])
    symbols = np.array([vocab.index(f"s{i}") for i in range(task.num_symbols)])
    table = np.arange(len(vocab), dtype=np.int32)
    table[symbols] = rng.choice(content, len(symbols), replace=False)
    return table


def training_batch(task: DecoderTaskConfig, recipe: DecoderRecipe, t: int) -> tuple[TextInputs, np.ndarray]:
    """Batch t: train-split prompts [t·B/2, (t+1)·B/2) of each task, continued (module docstring) and padded
    right to `sequence_length` → (inputs (B, T), labels int32 (B, T): the next token, -1 where not trained)."""
    half, size = recipe.batch_size // 2, sequence_length(task)
    rng = np.random.default_rng((_RELABEL_SEED, t))
    ids = np.zeros((2 * half, size), np.int32)
    mask = np.zeros((2 * half, size), bool)
    labels = np.full((2 * half, size), -1, np.int32)
    row = 0
    for name in TASKS:
        data = make_decoder_split(task, name, "train", half, start=t * half)
        for prompt, answer, source in zip(data["ids"], data["target"], data["source"], strict=True):
            seq, lab = _CONTINUE[name](prompt, int(answer), int(source))
            if name == "induction":  # copy any content token, so the induction circuit serves recall's keys too
                table = content_relabelling(task, rng)
                seq, lab = table[seq], np.where(np.asarray(lab) >= 0, table[np.maximum(lab, 0)], -1)
            ids[row, : len(seq)], mask[row, : len(seq)], labels[row, : len(lab)] = seq, True, lab
            row += 1
    return text_inputs(ids, mask), labels


def loss_function(model: Decoder) -> Callable[[dict, TextInputs, jax.Array], jax.Array]:
    """Mean next-token cross-entropy over the determined positions: (params, inputs (B, T), labels (B, T)) → scalar."""

    def loss(params, inputs, labels):
        logits, _ = model.apply({"params": params}, inputs, VANILLA)
        trained = labels >= 0
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
        return jnp.sum(ce * trained) / jnp.sum(trained)

    return loss


def predict(model: Decoder, params: dict, ids: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """The greedy next token after each unpadded prompt: ids (n, N) → (n,) int32."""
    apply = jax.jit(lambda p, x: jnp.argmax(model.apply({"params": p}, x, VANILLA)[0][:, -1], axis=-1))
    out = [apply(params, text_inputs(ids[i : i + batch_size])) for i in range(0, len(ids), batch_size)]
    return np.concatenate(jax.device_get(out)).astype(np.int32)


def evaluate(model: Decoder, params: dict, task: DecoderTaskConfig, n: int, split: str = "test") -> dict[str, float]:
    """Accuracy of the next token after the first `n` prompts of `split`, per task: {'<task>_accuracy': …}."""
    out = {}
    for name in TASKS:
        data = make_decoder_split(task, name, split, n)
        out[f"{name}_accuracy"] = float(np.mean(predict(model, params, data["ids"]) == data["target"]))
    return out


def trainee(
    model: Decoder, task: DecoderTaskConfig, recipe: DecoderRecipe, test_prompts: int = 1000
) -> train_driver.Trainee:
    """The decoder as the shared driver's `Trainee` (libra_jax/train_driver.py)."""
    return train_driver.Trainee(
        name=MODEL_NAME,
        module="libra_jax.text.train_decoder",
        model=model,
        example=text_inputs(np.zeros((1, sequence_length(task)), np.int32)),
        loss=loss_function(model),
        batches=lambda: (training_batch(task, recipe, t) for t in range(recipe.steps)),
        evaluate=lambda params: {**evaluate(model, params, task, test_prompts), "test_prompts": test_prompts},
        tokenizer=lambda: tokenizer_json(decoder_vocabulary(task), bos=BOS, eos=None),
    )


def train(
    seed: int = 0,
    steps: int | None = None,
    out: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
    *,
    task: DecoderTaskConfig | None = None,
    recipe: DecoderRecipe | None = None,
    test_prompts: int = 1000,
    tokenizer_out: str | os.PathLike | None = None,
) -> dict:
    """Train the decoder, measure its per-task test accuracy, optionally save a checkpoint and tokenizer.json.

    Args:
      seed: parameter-init seed (the data stream is the fixed 'train' split).
      steps: overrides recipe.steps (the cosine schedule follows it; warmup capped at steps // 2).
      out: if given, where to write the checkpoint; its `source` metadata records the task config ('benchmark'),
        recipe, seed, steps, accuracies and training time.
      task, recipe: defaults `DecoderTaskConfig()`, `DecoderRecipe()`.
      test_prompts: 'test' split prompts per task the accuracy is measured on.
      tokenizer_out: if given, where to write the tasks' tokenizer.json (`tokenizer_json`, [BOS] first, no end token).
    Returns:
      dict(recall_accuracy, induction_accuracy, test_prompts, seconds (training + evaluation wall time), steps).
    """
    task = task or DecoderTaskConfig()
    recipe = recipe or DecoderRecipe()
    if steps is not None:
        recipe = dataclasses.replace(recipe, steps=steps, warmup_steps=min(recipe.warmup_steps, steps // 2))
    model = Decoder(model_config(task))
    return train_driver.train(trainee(model, task, recipe, test_prompts), recipe, task, seed, out, log, tokenizer_out)
