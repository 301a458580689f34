"""Method × preset evaluation: faithfulness, segmentation, class discrimination and completeness, on
the synthetic benchmark or a real dataset (`libra-jax evaluate`; tables and files: `libra_jax.report`).

    from libra_jax.evaluate import EvaluateOptions, evaluate_data
    result = evaluate_data(model, params, [("fullgrad", "vanilla"), ("fullgrad", "libra")], "benchmark",
                           EvaluateOptions(n=200))
    result.results[("fullgrad", "libra")]["completeness_error"]

Per batch and preset, every requested method comes out of one multi-method attribution call
(one forward + one backward for the single-pass methods); completeness reuses the same methods
under the preset's logit variant for the top-1 class, and class discrimination explains both
objects of a two-object image with one forward (multi-target).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from libra_jax.data import synthetic
from libra_jax.data.imagenet import open_dataset
from libra_jax.methods import api
from libra_jax.metrics import faithfulness, segmentation
from libra_jax.metrics.faithfulness import check_image_model
from libra_jax.preprocess import normalise
from libra_jax.rules import get_rules
from libra_jax.run.progress import Progress

COLUMNS = (
    ("mif", "MIF ↓"),
    ("lif", "LIF ↑"),
    ("srg", "SRG ↑"),
    ("seg_ap", "Seg AP ↑"),
    ("chefer_map", "Chefer mAP ↑"),
    ("chefer_miou", "Chefer mIoU ↑"),
    ("chefer_pixel_acc", "Chefer pix.acc ↑"),
    ("class_disc_ap", "Class-disc AP ↑"),
    ("class_disc_other_ap", "AP on other object ↓"),
    ("completeness_error", "Completeness err ↓"),
)


@dataclasses.dataclass
class Batch:
    """A batch: uint8 images (B, H, W, 3), labels (B,) or None, masks (B, H, W) or None."""

    images: np.ndarray
    labels: np.ndarray | None
    masks: np.ndarray | None


def benchmark_batches(config: synthetic.BenchmarkConfig, split: str, n: int, batch_size: int) -> Iterator[Batch]:
    """Deterministic batches of a synthetic split ('test' single-object, or 'pairs')."""
    for start in range(0, n, batch_size):
        data = synthetic.make_split(config, split, min(batch_size, n - start), start)
        yield Batch(data["images"], data["labels"], data["masks"])


def supported_methods(model, methods: Sequence[str]) -> list[str]:
    """`methods` minus those not defined for the model's architecture (`api.supports`: e.g. cls-row attention
    methods without a class token, attention methods on MLP-Mixers, Chefer's LRP beyond the plain ViT)."""
    return [m for m in methods if api.supports(model, m)]


class _RowAccumulator:
    """Running sums for one (method, preset) row."""

    def __init__(self):
        self.deletion = faithfulness.DeletionAccumulator()
        self.seg_ap: list[np.ndarray] = []
        self.chefer: list[dict] = []
        self.disc_own: list[np.ndarray] = []
        self.disc_other: list[np.ndarray] = []
        self.completeness: list[np.ndarray] = []

    def row(self) -> dict[str, float]:
        out = {k: math.nan for k, _ in COLUMNS}
        if self.completeness:  # every single-object batch adds deletion curves and completeness
            s = self.deletion.summary()
            out |= {"mif": s["mif"], "lif": s["lif"], "srg": s["srg"]}
        if self.seg_ap:
            out["seg_ap"] = 100 * segmentation.mean_ap(np.concatenate(self.seg_ap))
        if self.chefer:
            c = segmentation.chefer_summary(self.chefer)
            out |= {
                "chefer_map": 100 * c["map"],
                "chefer_miou": 100 * c["miou"],
                "chefer_pixel_acc": 100 * c["pixel_accuracy"],
            }
        if self.disc_own:
            out["class_disc_ap"] = 100 * segmentation.mean_ap(np.concatenate(self.disc_own))
            out["class_disc_other_ap"] = 100 * segmentation.mean_ap(np.concatenate(self.disc_other))
        if self.completeness:
            out["completeness_error"] = float(np.mean(np.abs(np.concatenate(self.completeness))))
        return out


def check_rows(rows: Sequence[tuple[str, str]]) -> None:
    """Raise ValueError for a (method, preset) row naming an unknown method or preset."""
    for method, preset in rows:
        if method not in api.METHODS:
            raise ValueError(f"unknown method {method!r}; known: {', '.join(sorted(api.METHODS))}")
        get_rules(preset)


def preset_explainers(
    model, rows: Sequence[tuple[str, str]], method_options: dict | None = None
) -> tuple[dict[str, list[str]], dict[str, Callable], dict[str, Callable]]:
    """The attribution functions an evaluation runs per preset of `rows` ((method, preset) pairs the model supports).

    Returns ({preset: its methods}, {preset: jitted fn(params, x, y) → {method: map}}, {preset: the same under the
    preset's logit variant, (B, N) token maps, for completeness}): one multi-method call per preset, so the
    single-pass methods share one forward + backward.
    """
    by_preset: dict[str, list[str]] = {}
    for m, p in rows:
        by_preset.setdefault(p, []).append(m)
    # IG's `steps` only for the presets that run IG (attribution refuses options no method of the call takes)
    opts = {
        p: {k: v for k, v in (method_options or {}).items() if k != "steps" or "ig" in methods}
        for p, methods in by_preset.items()
    }
    explain = {p: jax.jit(api.attribution(model, methods, rules=p, **opts[p])) for p, methods in by_preset.items()}
    explain_logit = {
        p: jax.jit(
            api.attribution(
                model,
                methods,
                rules=get_rules(p, target="logit"),
                return_tokens=True,
                **opts[p] | ({"unassigned_bias": True} if "fullgrad" in methods else {}),  # Mixers' token-MLP biases
            )
        )
        for p, methods in by_preset.items()
    }
    return by_preset, explain, explain_logit


def _pixel_maps(patch_maps: jax.Array, size: tuple[int, int], mode: str) -> jax.Array:
    return segmentation.upsample(patch_maps, size, mode)


def evaluate(
    model,
    params,
    rows: Sequence[tuple[str, str]],
    batches: Callable[[], Iterator[Batch]],
    n: int,
    pair_batches: Callable[[], Iterator[Batch]] | None = None,
    n_pairs: int = 0,
    progress: bool = True,
    method_options: dict | None = None,
) -> tuple[dict, dict]:
    """Evaluate (method, preset) rows (methods the model's architecture lacks are left out).

    Returns ({(method, preset): {column: value}}, {(method, preset): merged deletion curves}).

    `batches()` yields single-object batches (labels None → the top-1 prediction is explained;
    masks None → no segmentation columns); `pair_batches()` yields two-object batches with
    labels (B, 2) and masks (B, 2, H, W) for class discrimination.
    """
    check_image_model(model)
    acc = {(m, p): _RowAccumulator() for m, p in rows if api.supports(model, m)}  # table rows in the given order
    by_preset, explain, explain_logit = preset_explainers(model, list(acc), method_options)
    forward = jax.jit(lambda prm, x: model.apply({"params": prm}, x)[0])
    bar = Progress(n, "evaluate") if progress else None
    for batch in batches():
        x = jnp.asarray(normalise(batch.images, model.data_config))
        logits = forward(params, x)
        top1 = jnp.argmax(logits, -1)
        labels = top1 if batch.labels is None else jnp.asarray(batch.labels)
        size = batch.images.shape[1:3]
        for p, methods in by_preset.items():
            out = explain[p](params, x, labels)
            logit_maps = explain_logit[p](params, x, top1)
            f = logits[jnp.arange(len(top1)), top1]
            for m in methods:
                row = acc[(m, p)]
                row.deletion.add(faithfulness.deletion_curves(model, params, x, out[m], labels))
                row.completeness.append(np.asarray(logit_maps[m].sum(-1) - f))
                if batch.masks is not None:
                    masks = jnp.asarray(batch.masks)
                    pixel = _pixel_maps(out[m], size, "bicubic")
                    row.seg_ap.append(np.asarray(segmentation.average_precision(pixel, masks)))
                    chefer = segmentation.chefer_segmentation(_pixel_maps(out[m], size, "bilinear"), masks)
                    row.chefer.append({k: np.asarray(v) for k, v in chefer.items()})
        if bar:
            bar.update(len(batch.images))
    if pair_batches is not None and n_pairs:
        bar = Progress(n_pairs, "class discrimination") if progress else None
        for batch in pair_batches():
            x = jnp.asarray(normalise(batch.images, model.data_config))
            size = batch.images.shape[1:3]
            masks = jnp.asarray(batch.masks)
            for p, methods in by_preset.items():
                out = explain[p](params, x, jnp.asarray(batch.labels))  # (B, 2, gh, gw): one forward, two targets
                for m in methods:
                    for obj in range(2):
                        pixel = _pixel_maps(out[m][:, obj], size, "bicubic")
                        ap = segmentation.class_discrimination_ap(pixel, masks[:, obj], masks[:, 1 - obj])
                        acc[(m, p)].disc_own.append(np.asarray(ap["own"]))
                        acc[(m, p)].disc_other.append(np.asarray(ap["other"]))
            if bar:
                bar.update(len(batch.images))
    return {key: row.row() for key, row in acc.items()}, {key: row.deletion.curves() for key, row in acc.items()}


@dataclasses.dataclass(frozen=True)
class EvaluateOptions:
    """Settings of `evaluate_data` (and of `libra_jax.evaluate_text.evaluate_text`, which reads n, batch_size, steps
    and progress).

    Attributes:
      n: images (sentences) evaluated (on the benchmark: also the number of two-object images / two-class sentences).
      batch_size: images (sentences) per batch.
      steps: IG steps (None: IG's default).
      class_map: imagenet-s data: ImageNet-S id → ImageNet-1k index JSON file (see libra_jax.data.imagenet).
      progress: print a progress bar on stderr.
    """

    n: int = 1000
    batch_size: int = 100
    steps: int | None = None
    class_map: str | None = None
    progress: bool = True

    def __post_init__(self):
        if self.n <= 0 or self.batch_size <= 0:
            raise ValueError(
                f"the number of images and the batch size must be positive; got {self.n}, {self.batch_size}"
            )


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What `evaluate_data` measured: rows {(method, preset): {column: value}}, their deletion curves, and the
    images of a real dataset that could not be read [(path, reason)]."""

    results: dict[tuple[str, str], dict[str, float]]
    curves: dict[tuple[str, str], dict[str, np.ndarray]]
    skipped: list[tuple[str, str]]


def evaluate_data(
    model,
    params,
    rows: Sequence[tuple[str, str]],
    data: str = "benchmark",
    options: EvaluateOptions = EvaluateOptions(),
    benchmark: synthetic.BenchmarkConfig | None = None,
) -> Evaluation:
    """Evaluate (method, preset) rows on `data`.

    Args:
      model, params: a libra-jax classifier and its weights.
      rows: (method, preset) pairs, e.g. the values of `libra_jax.methods.names.resolve_methods`.
      data: 'benchmark' (the synthetic test split, plus as many two-object 'pairs' images for class
        discrimination), or a dataset of `libra_jax.data.imagenet.open_dataset` ('imagenet:PATH',
        'imagenet-s:PATH', 'imagenet-seg:PATH').
      options: image count, batch size, IG steps, progress bar.
      benchmark: the benchmark the model was trained on (default: `BenchmarkConfig` at the model's
        input size and class count).
    Raises:
      ValueError: an unknown method or data source, a benchmark whose image size is not the model's, or a text
        model (`libra_jax.evaluate_text` scores those).
    """
    check_image_model(model)
    check_rows(rows)
    methods = {m for m, _ in rows}
    kw = {"method_options": {"steps": options.steps} if options.steps and "ig" in methods else {}}
    kw["progress"] = options.progress
    if data == "benchmark":
        k = model.config.num_classes
        if benchmark is None and not synthetic.MIN_CLASSES <= k <= len(synthetic.CLASSES):
            raise ValueError(
                f"the synthetic benchmark has {synthetic.MIN_CLASSES}–{len(synthetic.CLASSES)} shape classes, so a"
                f" {k}-class model cannot be scored on it: evaluate a model trained on it (`libra-jax train`, or"
                " the embedded synthetic_vit), or evaluate this one on a real dataset (--data imagenet:PATH)"
            )
        cfg = benchmark or synthetic.BenchmarkConfig(image_size=model.config.img_size[0], num_classes=k)
        if (cfg.image_size, cfg.image_size) != model.config.img_size:
            raise ValueError(f"the benchmark makes {cfg.image_size}px images; the model takes {model.config.img_size}")
        n, b = options.n, options.batch_size
        results, curves = evaluate(
            model,
            params,
            rows,
            lambda: benchmark_batches(cfg, "test", n, b),
            n,
            pair_batches=lambda: benchmark_batches(cfg, "pairs", n, b),
            n_pairs=n,
            **kw,
        )
        return Evaluation(results, curves, [])
    class_map = {"class_map": options.class_map} if options.class_map and data.startswith("imagenet-s:") else {}
    dataset = open_dataset(data, model.data_config, **class_map)
    n = min(options.n, len(dataset))

    def real_batches():
        for batch in dataset.iter_batches(options.batch_size, limit=n):
            yield Batch(batch["images"], batch["labels"], batch["masks"])

    results, curves = evaluate(model, params, rows, real_batches, n, **kw)
    return Evaluation(results, curves, list(dataset.skipped))
