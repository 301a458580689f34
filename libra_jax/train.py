"""Train the embedded default models from scratch on the synthetic shapes benchmark (optax, CPU-sized).

    from libra_jax.train import train
    result = train("vit", seed=0, out="libra_jax/assets/synthetic_vit.safetensors")

    libra-jax train --model swiglu --out synthetic_swiglu.safetensors --seed 0 [--steps N]   (libra_jax/cli/train.py)

Two models of the timm ViT family, sized so that two CPU cores train each in about ten minutes:
'vit' (class token, GELU MLP) and 'swiglu' (timm `SwiGLUPacked` gated MLP with SiLU, average
pooling), the gated architecture the LibraGrad ½ gate rule applies to. Every training example is
drawn fresh from the 'train' split (no example is seen twice, so no augmentation is needed); the
test accuracy is measured on the first `test_images` examples of the disjoint 'test' split.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from libra_jax import train_driver
from libra_jax.data.synthetic import SPLITS, BenchmarkConfig, make_single
from libra_jax.models.config import DataConfig, ViTConfig
from libra_jax.models.vit import VisionTransformer
from libra_jax.preprocess import normalise
from libra_jax.rules import PRESETS
from libra_jax.weights import embedded

MODEL_NAMES = ("vit", "swiglu")
VANILLA = PRESETS["vanilla"]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Optimisation settings: AdamW with linear warmup and cosine decay to `final_lr_ratio`·peak.

    easy_steps: the first `easy_steps` batches come from the benchmark without clutter (no
      distractors, no pixel noise; see `easy_benchmark`). From scratch, a small ViT on the cluttered
      images long sits at chance before it finds the object; a short clean start skips that phase.
    pool_size: 0 draws every later batch fresh from the generator. P > 0 generates P train-split
      examples once and then serves shuffled epochs of them, each image under a random one of the
      8 rotations / reflections of the square (labels are invariant: every class is drawn at a
      uniform random angle and every shape is mirror-symmetric). On 2 cores, generating fresh
      images costs a quarter of each step; the pool spends that time on training instead.
    """

    steps: int = 2900
    batch_size: int = 128
    peak_lr: float = 2e-3
    warmup_steps: int = 100
    final_lr_ratio: float = 0.02
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    easy_steps: int = 300
    pool_size: int = 50_000


def asset_path(model_name: str) -> Path:
    """Path of the shipped checkpoint of 'vit' or 'swiglu' (libra-jax safetensors format)."""
    _check_name(model_name)
    return embedded.path(f"synthetic_{model_name}")


def _check_name(model_name: str) -> None:
    if model_name not in MODEL_NAMES:
        raise ValueError(f"unknown model {model_name!r}; expected one of {MODEL_NAMES}")


def data_config(benchmark: BenchmarkConfig) -> DataConfig:
    """Preprocessing of the benchmark models: uint8 / 255, then (x - 0.5) / 0.5, no resize or crop."""
    size = benchmark.image_size
    return DataConfig(mean=(0.5,) * 3, std=(0.5,) * 3, input_size=(size, size), crop_pct=1.0)


def model_config(model_name: str, benchmark: BenchmarkConfig) -> ViTConfig:
    """Architecture of 'vit' or 'swiglu' for the benchmark's image size and class count (patch 8)."""
    _check_name(model_name)
    common = dict(
        img_size=benchmark.image_size,
        patch_size=8,
        embed_dim=64,
        depth=4,
        num_heads=2,
        num_classes=benchmark.num_classes,
    )
    if model_name == "vit":
        return ViTConfig(**common, global_pool="token")
    # timm SwiGLUPacked: fc1 of width 2·(≈8/3)·dim split into (gate, value), SiLU gate, avg pooling + fc_norm;
    # 5.375·64 = 344 = 2·172 (2·8/3·64 would be an odd 341, which cannot be split).
    return ViTConfig(**common, mlp_layer="glu", act="silu", mlp_ratio=5.375, global_pool="avg")


def build_model(model_name: str, benchmark: BenchmarkConfig) -> VisionTransformer:
    """The untrained `VisionTransformer` of 'vit' or 'swiglu', with the benchmark's preprocessing."""
    return VisionTransformer(model_config(model_name, benchmark), data_config(benchmark))


def loss_function(model: VisionTransformer, recipe: Recipe) -> Callable[[dict, jax.Array, jax.Array], jax.Array]:
    """Label-smoothed cross-entropy (params, x (B, H, W, 3) float32, y (B,) int32) → scalar."""
    k = model.config.num_classes

    def loss(params, x, y):
        logits, _ = model.apply({"params": params}, x, VANILLA)
        targets = optax.smooth_labels(jax.nn.one_hot(y, k), recipe.label_smoothing)
        return optax.softmax_cross_entropy(logits, targets).mean()

    return loss


def easy_benchmark(benchmark: BenchmarkConfig) -> BenchmarkConfig:
    """The same classes, sizes and colours without distractors or pixel noise."""
    return dataclasses.replace(benchmark, min_distractors=0, max_distractors=0, max_noise=0.0)


def dihedral(images: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Image i (n, H, H, C) rotated by k_i·90° and, for k_i ≥ 4, transposed: the 8 symmetries of the square."""
    out = np.empty_like(images)
    for v in range(8):
        sel = k == v
        turned = np.rot90(images[sel], v % 4, axes=(1, 2))
        out[sel] = turned.transpose(0, 2, 1, 3) if v >= 4 else turned
    return out


_ORDER_SEED, _AUGMENT_SEED = 101, 102  # streams of the pool's epoch orders and per-batch symmetries


def batches(
    model: VisionTransformer, benchmark: BenchmarkConfig, recipe: Recipe
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Batches (x (B, H, W, 3), y (B,)) of the train split, a deterministic function of the recipe.

    Batch t < recipe.easy_steps: examples [t·B, (t+1)·B) of `easy_benchmark(benchmark)`. Later batches:
    without a pool, examples [t·B, (t+1)·B) of `benchmark`; with one, the pool is examples
    [E·B, E·B + P) (E = easy_steps) and batch E + j takes positions [j·B, (j+1)·B) of the endless
    stream of its seeded epoch permutations, each image under a seeded random symmetry (`dihedral`).
    Work is done one batch ahead in a worker thread, overlapping the training step.
    """
    b, first = recipe.batch_size, recipe.easy_steps
    easy = easy_benchmark(benchmark)
    pool: dict[str, np.ndarray] = {}

    def from_pool(j: int) -> tuple[np.ndarray, np.ndarray]:
        if not pool:
            pool.update(make_single(benchmark, recipe.pool_size, SPLITS["train"], start=first * b))
        size = recipe.pool_size
        positions = np.arange(j * b, (j + 1) * b)
        epochs = {e: np.random.default_rng((_ORDER_SEED, e)).permutation(size) for e in set(positions // size)}
        index = np.array([epochs[q // size][q % size] for q in positions])
        k = np.random.default_rng((_AUGMENT_SEED, j)).integers(8, size=b)
        return dihedral(pool["images"][index], k), pool["labels"][index]

    def make(t: int) -> tuple[np.ndarray, np.ndarray]:
        if t >= first and recipe.pool_size:
            images, labels = from_pool(t - first)
        else:
            data = make_single(easy if t < first else benchmark, b, SPLITS["train"], start=t * b)
            images, labels = data["images"], data["labels"]
        return normalise(images, model.data_config), labels

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as workers:
        pending = workers.submit(make, 0)
        for t in range(recipe.steps):
            batch = pending.result()
            if t + 1 < recipe.steps:
                pending = workers.submit(make, t + 1)
            yield batch


def trainee(
    model: VisionTransformer, benchmark: BenchmarkConfig, recipe: Recipe, name: str = "vit", test_images: int = 2000
) -> train_driver.Trainee:
    """The image model as the shared driver's `Trainee` (libra_jax/train_driver.py): fresh train-split batches,
    accuracy on the first `test_images` test-split images."""
    size = benchmark.image_size
    return train_driver.Trainee(
        name=name,
        module="libra_jax.train",
        model=model,
        example=jnp.zeros((size, size, 3), jnp.float32),
        loss=loss_function(model, recipe),
        batches=lambda: batches(model, benchmark, recipe),
        evaluate=lambda params: {
            "test_accuracy": evaluate(model, params, benchmark, test_images),
            "test_images": test_images,
        },
        log_every=250,
    )


def fit(
    model: VisionTransformer,
    benchmark: BenchmarkConfig,
    recipe: Recipe,
    seed: int = 0,
    log: Callable[[str], None] = print,
    log_every: int = 250,
) -> tuple[dict, np.ndarray]:
    """Train `model` from a seeded init on fresh train-split batches (`train_driver.fit`).

    Returns:
      (params, losses float32 (recipe.steps,)): the trained Flax params and the loss of every step.
    """
    return train_driver.fit(
        dataclasses.replace(trainee(model, benchmark, recipe), log_every=log_every), recipe, seed, log
    )


def predict(model: VisionTransformer, params: dict, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Predicted classes (n,) int32 of uint8 images (n, H, W, 3)."""
    apply = jax.jit(lambda p, x: jnp.argmax(model.apply({"params": p}, x, VANILLA)[0], axis=-1))
    dc = model.data_config
    out = [apply(params, normalise(images[i : i + batch_size], dc)) for i in range(0, len(images), batch_size)]
    return np.concatenate(jax.device_get(out)).astype(np.int32)


def evaluate(model: VisionTransformer, params: dict, benchmark: BenchmarkConfig, n: int) -> float:
    """Accuracy on the first `n` examples of the 'test' split."""
    data = make_single(benchmark, n, SPLITS["test"])
    return float(np.mean(predict(model, params, data["images"]) == data["labels"]))


def train(
    model_name: str,
    seed: int = 0,
    steps: int | None = None,
    out: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
    *,
    benchmark: BenchmarkConfig | None = None,
    recipe: Recipe | None = None,
    test_images: int = 2000,
) -> dict:
    """Train 'vit' or 'swiglu' on the benchmark, measure test accuracy, optionally save a checkpoint.

    Args:
      model_name: 'vit' or 'swiglu' (see `model_config`).
      seed: parameter-init seed (the data stream is the fixed 'train' split).
      steps: overrides recipe.steps (the cosine schedule follows it).
      out: if given, where to write the libra-jax checkpoint; its `source` metadata is a JSON record
        of the benchmark config, recipe, seed, steps, test accuracy and training time.
      log: receives progress lines.
      benchmark, recipe: generator and optimisation settings (default: `BenchmarkConfig()`, `Recipe()`).
      test_images: number of 'test' split images the accuracy is measured on.
    Returns:
      dict(test_accuracy, test_images, seconds (training + evaluation wall time), steps).
    """
    benchmark = benchmark or BenchmarkConfig()
    recipe = recipe or Recipe()
    if steps is not None:
        recipe = dataclasses.replace(recipe, steps=steps)
    model = build_model(model_name, benchmark)
    return train_driver.train(
        trainee(model, benchmark, recipe, model_name, test_images), recipe, benchmark, seed, out, log
    )
