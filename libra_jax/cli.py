"""The `libra-jax` command line.

    libra-jax explain --model vit_base_patch16_224.augreg2_in21k_ft_in1k --image cat.png \\
        --method libra_fullgrad_plus --method gradcam --out heat.png
    libra-jax explain --model hf-hub:timm/vit_base_patch16_clip_224.openai --image zebra.png \\
        --prompt "a photo of a zebra" --prompt "a photo of a horse" --method libra_fullgrad_plus

Every subcommand is one function `run(args) -> exit code` plus one function declaring its arguments,
registered in `COMMANDS`. Mistakes in the user's input raise `UserError`: `main` prints them as one
line on stderr and returns 2, without a traceback.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import json
import os
import pathlib
import sys
from collections.abc import Callable, Sequence

import huggingface_hub
import jax
import numpy as np
from PIL import Image, UnidentifiedImageError

from libra_jax import demo, evaluate, hub, image_text, registry, train, viz
from libra_jax.data.sources import open_source
from libra_jax.loading import load
from libra_jax.preprocess import preprocess
from libra_jax.rules import PRESETS
from libra_jax.run import RunOptions, distributed, run_dataset, step
from libra_jax.run.lock import FolderLockedError, folder_lock


class UserError(Exception):
    """A problem with the command line or the files it names (exit code 2)."""


@dataclasses.dataclass(frozen=True)
class Command:
    """A subcommand: its one-line help, the function adding its arguments, and the function running it."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def model_kw(text: str) -> tuple[str, object]:
    """'key=value' → (key, value); the value is a Python literal (3, 1e-5, (32, 32), False) or else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


# ---------------------------------------------------------------- explain


def add_explain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        required=True,
        help="timm name '<arch>[.<tag>]' (weights from the HF hub), 'hf-hub:org/repo', a libra-jax checkpoint file,"
        f" or an embedded model ({' / '.join(evaluate.EMBEDDED)})",
    )
    p.add_argument("--checkpoint", help="local weights for the named architecture (timm state dict or libra-jax file)")
    p.add_argument(
        "--model-kw",
        type=model_kw,
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="model constructor argument(s), e.g. img_size=384 norm_eps=1e-5",
    )
    p.add_argument(
        "--image",
        required=True,
        action="extend",
        nargs="+",
        metavar="FILE",
        help="image file(s); several images form one batch, one row each in the output",
    )
    p.add_argument(
        "--method",
        action="extend",
        nargs="+",
        metavar="NAME",
        help="attribution method(s), e.g. libra_fullgrad_plus gradcam (default: libra_fullgrad_plus)",
    )
    p.add_argument(
        "--rules",
        choices=sorted(PRESETS),
        help="run every method under this rule preset (default: the preset the method name implies)",
    )
    p.add_argument(
        "--target",
        type=int,
        action="append",
        help="class index to explain (default: each image's top-1 class); repeat for several classes, one row each",
    )
    p.add_argument(
        "--prompt",
        action="append",
        metavar="TEXT",
        help="image–text models (CLIP / SigLIP: --model is an open_clip or HF repo / folder): explain the"
        " image–text logit of this prompt; repeat for several prompts, one map per prompt",
    )
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the map colours (default 0.5)")
    p.add_argument("--scale", type=int, default=1, help="enlarge every panel this many times (small models' crops)")
    p.add_argument("--out", default="heat.png", help="output PNG: input image and one overlay per method, per row")


def resolve_methods(names: Sequence[str], rules: str | None) -> dict[str, tuple[str, str]]:
    """User-facing method names → {name: (method, preset)} (see `libra_jax.run.step.resolve_methods`)."""
    try:
        return step.resolve_methods(names, rules)
    except ValueError as e:
        raise UserError(str(e)) from None


def read_image(path: str) -> np.ndarray:
    """An image file → uint8 RGB (H, W, 3)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise UserError(f"image file not found: {path}") from None
    except UnidentifiedImageError:
        raise UserError(f"cannot decode image file {path}: not a known image format") from None
    except OSError as e:
        raise UserError(f"cannot read image file {path}: {e}") from None


def label_names(model_name: str, checkpoint: str | None) -> dict[int, str] | None:
    """Class names {index: name} from the `label_names` of the weights' HF `config.json`, if at hand.

    The config is looked for beside a local checkpoint, inside a model folder, or in the HF hub cache
    for a hub name (never downloaded just for the names). None when there is none or it has no names.
    """
    local = checkpoint or (model_name if os.path.exists(model_name) else None)
    if local is not None:
        path = os.path.join(local if os.path.isdir(local) else os.path.dirname(os.path.abspath(local)), "config.json")
    else:
        try:
            ref = hub.parse_hub_name(model_name) or hub.HubRef(registry.resolve(model_name).hf_hub_id)
        except ValueError:
            return None
        if ref.repo_id is None:
            return None
        path = huggingface_hub.try_to_load_from_cache(ref.repo_id, "config.json", revision=ref.revision)
    if not isinstance(path, str) or not os.path.isfile(path):  # the cache answers a sentinel for "known absent"
        return None
    try:
        config = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    names = config.get("label_names") if isinstance(config, dict) else None
    if isinstance(names, list):
        return {i: str(name) for i, name in enumerate(names)}
    if isinstance(names, dict):  # timm also writes {"0": "tench", ...}
        return {int(k): str(v) for k, v in names.items() if str(k).isdigit()}
    return None


def explainer(model, methods: dict[str, tuple[str, str]], target_for: Callable | None = None) -> Callable:
    """One jitted `fn(params, x, y) -> {name: (B, gh, gw)}` for all methods (`target_for`: see
    `step.combined_attribution`).

    Methods under the same preset share one forward/backward pass; each further preset adds its own.
    """
    try:
        return jax.jit(step.combined_attribution(model, methods, target_for))
    except ValueError as e:  # e.g. an attention method on a model without a class token
        raise UserError(str(e)) from None


def display_images(model, x: np.ndarray) -> np.ndarray:
    """Undo the mean/std normalisation: (B, H, W, 3) float → uint8, the crop the model saw."""
    cfg = model.data_config
    pixels = (x * np.asarray(cfg.std) + np.asarray(cfg.mean)) * 255.0
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def print_top5(path: str, probs: np.ndarray, names: dict[int, str] | None) -> None:
    """Print the five most probable classes of one image: probs (K,)."""
    print(f"{path}:")
    for rank, k in enumerate(np.argsort(-probs)[:5], start=1):
        name = f"  {names[k]}" if names and k in names else ""
        print(f"  {rank}. class {k:<5d} p={probs[k]:.4f}{name}")


def explain(args: argparse.Namespace) -> int:
    """Top-5 classes and heat-map overlays for one or more images."""
    methods = resolve_methods(args.method or ["libra_fullgrad_plus"], args.rules)
    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha must lie in [0, 1]; got {args.alpha}")
    if args.scale < 1:
        raise UserError(f"--scale must be a positive integer; got {args.scale}")
    images = [read_image(path) for path in args.image]
    if args.prompt:
        return explain_prompts(args, methods, images)
    try:
        model, params = load(evaluate.model_path(args.model), args.checkpoint, **dict(args.model_kw))
    except (OSError, ValueError, TypeError) as e:
        raise UserError(f"cannot load model {args.model!r}: {hub.cli_message(e)}") from None
    num_classes = model.config.num_classes
    if num_classes <= 0:
        raise UserError(f"model {args.model!r} has no classifier head; there is no class to explain")
    for target in args.target or []:
        if not 0 <= target < num_classes:
            raise UserError(
                f"--target {target} is out of range: the model has {num_classes} classes (0..{num_classes - 1})"
            )

    x = preprocess(model, images)  # (B, h, w, 3): each original resized and cropped like timm's eval transform
    logits = jax.jit(lambda p, v: model.apply({"params": p}, v)[0])(params, x)
    probs = np.asarray(jax.nn.softmax(logits.astype(np.float32), axis=-1))
    names = label_names(args.model, args.checkpoint)
    for path, p in zip(args.image, probs, strict=True):
        print_top5(path, p, names)

    # (B, T) classes: T targets per image share one forward pass
    y = np.tile(args.target, (len(images), 1)) if args.target else probs.argmax(-1)[:, None]
    classes = y[:, 0] if y.shape[1] == 1 else args.target  # per image, or the same several for every image
    print(f"explaining class {', '.join(map(str, classes))} with {', '.join(methods)}")
    maps = explainer(model, methods)(params, x, y.astype(np.int32))
    captions = [[f"class {k}" for k in row] for row in y]
    viz.save_png(args.out, overlay_grid(model, x, maps, captions, methods, args))
    print(f"wrote {args.out}")
    return 0


def overlay_grid(
    model, x: np.ndarray, maps: dict, captions: list[list[str]], methods: dict, args: argparse.Namespace
) -> np.ndarray:
    """One row per image and target: the input crop, then one overlay per method, all captioned.

    maps: {name: (B, T, gh, gw)}; captions: B lists of T target captions. Returns uint8 (H, W, 3).
    """
    pixels = display_images(model, x).repeat(args.scale, axis=1).repeat(args.scale, axis=2)
    titles = [name + (f" ({preset})" if args.rules else "") for name, (_, preset) in methods.items()]
    rows, labels = [], []
    for i, path in enumerate(args.image):
        for t, caption in enumerate(captions[i]):
            overlays = [
                viz.overlay(pixels[i], np.asarray(maps[n][i, t], np.float32), alpha=args.alpha) for n in methods
            ]
            rows.append([pixels[i], *overlays])
            labels.append([f"{os.path.basename(path)}: {caption}", *titles])
    return viz.grid(rows, labels)


def explain_prompts(args: argparse.Namespace, methods: dict[str, tuple[str, str]], images: list) -> int:
    """Image–text models: the logit scale·cos(image, prompt) (+ bias) of every prompt, one map per prompt."""
    if args.target is not None or args.checkpoint:
        raise UserError("--prompt explains text prompts of an image–text model: drop --target / --checkpoint")
    try:
        model, params = image_text.load_image_text(args.model, **dict(args.model_kw))
        tokenizer = image_text.load_tokenizer(args.model)
    except (OSError, ValueError, TypeError, ImportError) as e:
        raise UserError(f"cannot load image–text model {args.model!r}: {e}") from None
    text = image_text.text_embeddings(model, params, tokenizer(args.prompt))  # (T, E) unit vectors
    x = preprocess(model, images)
    emb = jax.jit(lambda p, v: model.apply({"params": p}, v, method="encode_image"))(params, x)
    target = image_text.model_target(params, "vanilla")
    logits = np.asarray(jax.vmap(lambda e: jax.vmap(lambda t: target(e, t))(text))(emb))  # (B, T)
    for path, row in zip(args.image, logits, strict=True):
        print(f"{path}:")
        for prompt, value in zip(args.prompt, row, strict=True):
            print(f"  {value:9.4f}  {prompt}")
    y = np.broadcast_to(np.asarray(text), (len(images), *text.shape))  # T prompts per image: one image forward
    # the N2U rule of the target follows each method's preset
    maps = explainer(model, methods, lambda preset: image_text.model_target(params, preset))(params, x, y)
    print(f"explaining {len(args.prompt)} prompt(s) with {', '.join(methods)}")
    captions = [[repr(prompt) for prompt in args.prompt]] * len(images)
    viz.save_png(args.out, overlay_grid(model, x, maps, captions, methods, args))
    print(f"wrote {args.out}")
    return 0


# ---------------------------------------------------------------- run


def target_arg(text: str) -> str | int:
    """'top1' | 'label' | a class index."""
    if text in step.TARGETS:
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected top1, label or a class index, got {text!r}") from None


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="synthetic_vit",
        help=f"timm name, libra-jax checkpoint file, or {' / '.join(evaluate.EMBEDDED)} (default synthetic_vit)",
    )
    p.add_argument("--checkpoint", help="local weights for the named architecture")
    p.add_argument(
        "--data",
        required=True,
        help="folder:PATH, list:FILE ('PATH [LABEL]' per line), imagenet:PATH, imagenet-s:PATH, imagenet-seg:PATH,"
        " benchmark[:SPLIT], or an existing folder / list file",
    )
    p.add_argument(
        "--method",
        action="extend",
        nargs="+",
        metavar="NAME",
        help="attribution method(s), all computed per batch (default: libra_fullgrad_plus)",
    )
    p.add_argument("--rules", choices=sorted(PRESETS), help="run every plain method name under this rule preset")
    p.add_argument("--target", type=target_arg, default="top1", help="class explained: top1, label or an index")
    p.add_argument("--out", required=True, help="output folder (shards/, manifest.json); rerun to resume")
    p.add_argument("--batch", type=int, default=64, help="images per batch, over all devices (default 64)")
    p.add_argument("--shard-size", type=int, help="images per shard file, a multiple of --batch (default 16 batches)")
    p.add_argument("--limit", type=int, help="only the first N images (the benchmark's size; default 1000 there)")
    p.add_argument("--prefetch", type=int, default=2, help="batches decoded ahead on a background thread (0: off)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--class-map", help="imagenet-s: ImageNet-S id → ImageNet-1k index JSON file")
    group = p.add_argument_group("several processes (hosts): run the same command once per process")
    group.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0")
    group.add_argument("--num-processes", type=int, help="number of processes")
    group.add_argument("--process-id", type=int, help="this process's id, 0..num-processes-1")


def run_attributions(args: argparse.Namespace) -> int:
    """Attribute a whole dataset into shards + manifest (resumable); see docs/run.md."""
    distributed.initialize(args.coordinator, args.num_processes, args.process_id)  # before any device use
    methods = resolve_methods(args.method or ["libra_fullgrad_plus"], args.rules)
    options = RunOptions(
        batch_size=args.batch,
        shard_size=args.shard_size or 16 * args.batch,
        target=args.target,
        limit=args.limit,
        prefetch=args.prefetch,
        progress=not args.no_progress,
    )
    model, params, bench = evaluate.load_model(args.model, args.checkpoint)
    kwargs = {"class_map": args.class_map} if args.class_map else {}
    dataset = open_source(args.data, model.data_config, bench, size=args.limit or 1000, **kwargs)
    provenance = {"model": args.model, "checkpoint": args.checkpoint, "data": args.data}
    manifest = run_dataset(model, params, dataset, methods, args.out, options, provenance=provenance)
    if jax.process_index() == 0:
        print(f"attributed {manifest['num_attributed']} images with {', '.join(methods)}: {args.out}/manifest.json")
        for entry in manifest["skipped"]:
            print(f"skipped {entry['path']}: {entry['reason']}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- entry point


def _user_errors(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Report bad paths and values from a subcommand as one-line user errors."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except (OSError, ValueError) as e:
            raise UserError(hub.cli_message(e)) from None

    return wrapped


def _locking(run: Callable[[argparse.Namespace], int], folder_of=lambda args: args.out):
    """`run` holding the lock of the folder it writes (`libra_jax.run.lock`): one command per output folder."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            with folder_lock(folder_of(args)):
                return run(args)
        except FolderLockedError as e:
            raise UserError(str(e)) from None

    return wrapped


COMMANDS: dict[str, Command] = {
    "explain": Command(
        "explain images with attribution maps (top-5 + heat-map PNG)",
        add_explain_arguments,
        _locking(explain, lambda args: os.path.dirname(os.path.abspath(args.out))),
    ),
    "demo": Command(
        "explain synthetic benchmark images with the embedded default model and print the metrics table",
        demo.add_demo_arguments,
        _locking(_user_errors(demo.run_demo)),
    ),
    "evaluate": Command(
        "method × preset table: faithfulness, segmentation, class discrimination, completeness",
        evaluate.add_evaluate_arguments,
        _locking(_user_errors(functools.partial(evaluate.run_evaluate, error=UserError))),
    ),
    "run": Command(
        "attribute a whole dataset with several methods into resumable .npz shards + a manifest (multi-device)",
        add_run_arguments,
        _user_errors(run_attributions),
    ),
    "train": Command(
        "train a small model on the synthetic benchmark (reproduces the embedded checkpoints)",
        train.add_train_arguments,
        _user_errors(train.run_train),
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="libra-jax", description="LibraGrad attributions for Vision Transformers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        command.add_arguments(p)
        p.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 success, 2 user error)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse exits for --help (0) and usage errors (2, message already printed)
        return e.code if isinstance(e.code, int) else 2
    try:
        return args.run(args)
    except UserError as e:
        print(f"libra-jax {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
