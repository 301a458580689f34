"""`libra-jax evaluate`: method × preset tables of faithfulness, segmentation, class
discrimination and completeness, on the synthetic benchmark or a real dataset.

Per batch and preset, every requested method comes out of one multi-method attribution call
(one forward + one backward for the single-pass methods); completeness reuses the same methods
under the preset's logit variant for the top-1 class, and class discrimination explains both
objects of a two-object image with one forward (multi-target).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from libra_jax.data import synthetic
from libra_jax.methods import api
from libra_jax.metrics import faithfulness, segmentation
from libra_jax.preprocess import normalise
from libra_jax.rules import get_rules

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


class Progress:
    """A one-line text progress bar on stderr (images/s, ETA); the first batch (compile) is not timed."""

    def __init__(self, total: int, label: str, stream=sys.stderr):
        self.total, self.label, self.stream = total, label, stream
        self.done, self.timed, self.start = 0, 0, None

    def update(self, n: int) -> None:
        if self.start is None:
            self.start = time.perf_counter()  # after the first (compiling) batch
        else:
            self.timed += n
        self.done += n
        rate = self.timed / max(time.perf_counter() - self.start, 1e-9) if self.timed else 0.0
        speed = f"{rate:.1f} img/s ETA {(self.total - self.done) / rate:.0f}s" if rate else "(compiling)"
        bar = "#" * int(30 * self.done / max(self.total, 1))
        self.stream.write(f"\r{self.label} [{bar:<30}] {self.done}/{self.total} {speed}   ")
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


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


def _pixel_maps(patch_maps: jax.Array, size: tuple[int, int], mode: str) -> jax.Array:
    return segmentation.upsample(patch_maps, size, mode)


def evaluate(
    model,
    params,
    methods: Sequence[str],
    presets: Sequence[str],
    batches: Callable[[], Iterator[Batch]],
    n: int,
    pair_batches: Callable[[], Iterator[Batch]] | None = None,
    n_pairs: int = 0,
    progress: bool = True,
    method_options: dict | None = None,
) -> tuple[dict, dict]:
    """Evaluate methods × presets.

    Returns ({(method, preset): {column: value}}, {(method, preset): merged deletion curves}).

    `batches()` yields single-object batches (labels None → the top-1 prediction is explained;
    masks None → no segmentation columns); `pair_batches()` yields two-object batches with
    labels (B, 2) and masks (B, 2, H, W) for class discrimination.
    """
    methods = supported_methods(model, methods)
    opts = method_options or {}
    acc = {(m, p): _RowAccumulator() for m in methods for p in presets}
    explain = {p: jax.jit(api.attribution(model, methods, rules=p, **opts)) for p in presets}
    logit_opts = opts | ({"unassigned_bias": True} if "fullgrad" in methods else {})  # Mixers' token-MLP biases
    explain_logit = {
        p: jax.jit(
            api.attribution(model, methods, rules=get_rules(p, target="logit"), return_tokens=True, **logit_opts)
        )
        for p in presets
    }
    forward = jax.jit(lambda prm, x: model.apply({"params": prm}, x)[0])
    bar = Progress(n, "evaluate") if progress else None
    for batch in batches():
        x = jnp.asarray(normalise(batch.images, model.data_config))
        logits = forward(params, x)
        top1 = jnp.argmax(logits, -1)
        labels = top1 if batch.labels is None else jnp.asarray(batch.labels)
        size = batch.images.shape[1:3]
        for p in presets:
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
            for p in presets:
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


def format_table(results: dict[tuple[str, str], dict[str, float]], fmt: str = "markdown") -> str:
    """Markdown or CSV table: one row per (method, preset), the columns of `COLUMNS` present."""
    present = [(k, title) for k, title in COLUMNS if any(not math.isnan(r[k]) for r in results.values())]
    rows = [[m, p] + [r[k] for k, _ in present] for (m, p), r in results.items()]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["method", "preset"] + [k for k, _ in present])
        writer.writerows(rows)
        return buf.getvalue()
    head = "| method | preset | " + " | ".join(t for _, t in present) + " |"
    sep = "|---|---|" + "---:|" * len(present)

    def cell(v):
        if not isinstance(v, float):
            return str(v)
        if math.isnan(v):
            return "–"
        return f"{v:.2e}" if 0 < abs(v) < 1e-2 else f"{v:.2f}"

    return "\n".join([head, sep] + ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows])


def table_note(results: dict[tuple[str, str], dict[str, float]]) -> str:
    """The line printed under a markdown table with a completeness column ('' without one)."""
    if not any(not math.isnan(r.get("completeness_error", math.nan)) for r in results.values()):
        return ""
    return (
        "\n\nCompleteness err = mean |Σ map − logit|. FullGrad+ sums the IxG of every block (plus the biases):"
        " it is not meant to be complete, so its error is large under every preset by design."
    )


def plot_curves(curves: dict[tuple[str, str], dict[str, np.ndarray]], path, ratios=faithfulness.RATIOS) -> None:
    """MIF and LIF accuracy curves of every (method, preset) row as one PNG: a panel each, a colour per method,
    a line style per preset (`viz.line_panels`)."""
    from libra_jax import viz

    panels = [
        (f"{v.upper()} {arrow}", label, {key: c[f"{v}_correct"].mean(1) for key, c in sorted(curves.items())})
        for v, arrow, label in (
            ("mif", "(lower is better)", "fraction r of patches removed, most relevant first"),
            ("lif", "(higher is better)", "fraction r of patches kept, most relevant first"),
        )
    ]
    viz.save_png(path, viz.line_panels(panels, ratios, "accuracy"))


def write_results(out_dir, results, curves, meta: dict, plot: bool) -> dict[str, str]:
    """Write results.md, results.csv, results.json (and curves.png) atomically into out_dir."""
    import pathlib

    from libra_jax import viz

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = format_table(results)
    files = {
        "results.md": f"{md}{table_note(results)}\n\n{json.dumps(meta)}\n",
        "results.csv": format_table(results, "csv"),
        "results.json": json.dumps(
            {"meta": meta, "rows": [{"method": m, "preset": p, **r} for (m, p), r in results.items()]}, indent=1
        ),
    }
    for name, text in files.items():
        viz.write_atomic(out / name, text.encode())
    if plot:
        plot_curves(curves, out / "curves.png")
    return {name: str(out / name) for name in (*files, *(["curves.png"] if plot else []))}


EMBEDDED = ("synthetic_vit", "synthetic_swiglu")
"""Names of the embedded default models (trained on the synthetic benchmark, shipped in assets/)."""

DEFAULT_METHODS = (
    "ixg",
    "fullgrad",
    "fullgrad_plus",
    "hirescam",
    "gradcam",
    "xgradcam_plus",
    "ig",
    "genatt",
    "rollout",
)


def model_path(name: str) -> str:
    """An embedded model's name → its shipped checkpoint file; any other name unchanged."""
    from libra_jax.train import asset_path

    return str(asset_path(name.removeprefix("synthetic_"))) if name in EMBEDDED else name


def load_model(name: str, checkpoint: str | None = None):
    """(model, params, benchmark config or None): embedded names resolve to the shipped checkpoints."""
    from libra_jax.loading import load
    from libra_jax.serialization import is_libra_checkpoint, read_libra_checkpoint

    path = model_path(name)
    model, params = load(path, checkpoint)
    bench = None
    if checkpoint is None and is_libra_checkpoint(path):
        try:
            record = json.loads(read_libra_checkpoint(path).source)
        except (json.JSONDecodeError, TypeError):
            record = None
        if isinstance(record, dict) and "benchmark" in record:
            bench = synthetic.BenchmarkConfig(**record["benchmark"])
    return model, params, bench


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="synthetic_vit", help=f"timm name, checkpoint path, or {' / '.join(EMBEDDED)}")
    p.add_argument("--checkpoint", default=None, help="weights file for a named architecture")
    p.add_argument(
        "--data",
        default="benchmark",
        help="benchmark (synthetic test split + two-object pairs), imagenet:PATH, imagenet-s:PATH, imagenet-seg:PATH",
    )
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="comma-separated method names")
    p.add_argument("--presets", default="vanilla,libra", help="comma-separated rule presets")
    p.add_argument("--n", type=int, default=1000, help="number of images (and of two-object images on the benchmark)")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--steps", type=int, default=None, help="IG steps (default 50)")
    p.add_argument("--out", default="outputs/evaluate", help="folder for results.md / .csv / .json (and curves.png)")
    p.add_argument("--plot", action="store_true", help="also write the deletion curves as curves.png")
    p.add_argument(
        "--class-map",
        default=None,
        help="imagenet-s: ImageNet-S id → ImageNet-1k index, as a JSON file {id: index} (see libra_jax.data.imagenet)",
    )


def run_evaluate(args: argparse.Namespace, error: Callable[[str], Exception] = ValueError) -> int:
    """Run `libra-jax evaluate`; user mistakes raise `error(message)`."""
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    for m in methods:
        if m not in api.METHODS:
            raise error(f"unknown method {m!r}; known: {', '.join(sorted(api.METHODS))}")
    for p in presets:
        get_rules(p)
    if args.n <= 0 or args.batch <= 0:
        raise error("--n and --batch must be positive")
    model, params, bench = load_model(args.model, args.checkpoint)
    options = {"steps": args.steps} if args.steps and "ig" in methods else {}
    if args.data == "benchmark":
        cfg = bench or synthetic.BenchmarkConfig(
            image_size=model.config.img_size[0], num_classes=model.config.num_classes
        )
        if (cfg.image_size, cfg.image_size) != model.config.img_size:
            raise error(f"the benchmark makes {cfg.image_size}px images; the model takes {model.config.img_size}")
        results, curves = evaluate(
            model,
            params,
            methods,
            presets,
            lambda: benchmark_batches(cfg, "test", args.n, args.batch),
            args.n,
            pair_batches=lambda: benchmark_batches(cfg, "pairs", args.n, args.batch),
            n_pairs=args.n,
            method_options=options,
        )
    else:
        from libra_jax.data.imagenet import open_dataset

        kwargs = {"class_map": args.class_map} if args.class_map and args.data.startswith("imagenet-s:") else {}
        dataset = open_dataset(args.data, model.data_config, **kwargs)
        n = min(args.n, len(dataset))

        def real_batches():
            for batch in dataset.iter_batches(args.batch, limit=n):
                yield Batch(batch["images"], batch["labels"], batch["masks"])

        results, curves = evaluate(model, params, methods, presets, real_batches, n, method_options=options)
        if dataset.skipped:
            print(f"skipped {len(dataset.skipped)} unreadable images:", file=sys.stderr)
            for path, reason in dataset.skipped:
                print(f"  {path}: {reason}", file=sys.stderr)
    meta = {"model": args.model, "data": args.data, "n": args.n, "methods": methods, "presets": presets}
    print(format_table(results) + table_note(results))
    for path in write_results(args.out, results, curves, meta, args.plot).values():
        print(f"wrote {path}", file=sys.stderr)
    return 0
