"""`libra-jax explain --image`: top-5 classes and heat-map overlays for one or more images (the command's
dispatch, and its text modules, are in cli/explain_command.py).

    libra-jax explain --model vit_base_patch16_224.augreg2_in21k_ft_in1k --image cat.png \\
        --method libra_fullgrad_plus gradcam --out heat.png
    libra-jax explain --model hf-hub:timm/vit_base_patch16_clip_224.openai --image zebra.png \\
        --prompt "a photo of a zebra" --prompt "a photo of a horse" --method libra_fullgrad_plus

The top-5 and the maps come out of one jitted call with one forward per rule preset
(`libra_jax.run.step.predict_and_attribute`, the step `libra-jax run` uses too).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
from collections.abc import Callable

import huggingface_hub
import jax
import numpy as np
from PIL import Image, UnidentifiedImageError

from libra_jax import image_text, labels, viz
from libra_jax.cli.options import (
    UserError,
    add_method_arguments,
    add_model_arguments,
    methods_from,
    model_from,
    require_kind,
)
from libra_jax.preprocess import preprocess
from libra_jax.run import predict_and_attribute
from libra_jax.weights import hub, registry


def class_target(text: str) -> int | str:
    """--target: a class index, or (text classifiers) a label name."""
    try:
        return int(text)
    except ValueError:
        return text


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The model, method and image arguments (--target and --out are shared with the text modules)."""
    add_model_arguments(p)
    p.add_argument(
        "--image",
        action="extend",
        nargs="+",
        metavar="FILE",
        help="image file(s); several images form one batch, one row each in the output",
    )
    add_method_arguments(p, ["libra_fullgrad_plus"])
    p.add_argument(
        "--target",
        type=class_target,
        action="append",
        help="class index to explain (text classifiers: or a label name; default: each input's top-1 class);"
        " repeat for several classes, one row each",
    )
    p.add_argument(
        "--prompt",
        action="append",
        metavar="TEXT",
        help="with --image, image–text models (CLIP / SigLIP: --model is an open_clip or HF repo / folder): explain"
        " the image–text logit of this prompt; repeat for several prompts, one map per prompt. Without --image, a"
        " decoder LM's prompt (see --generate)",
    )
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the map colours (default 0.5)")
    p.add_argument("--scale", type=int, default=1, help="enlarge every panel this many times (small models' crops)")
    p.add_argument(
        "--out",
        help="images: output PNG, the input and one overlay per method, per row (default heat.png); text: the HTML"
        " page, one row per method / generated token (default explain.html)",
    )


def read_image(path: str) -> np.ndarray:
    """An image file → uint8 RGB (H, W, 3)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise UserError(f"image file not found: {path}") from None
    except UnidentifiedImageError:
        raise UserError(f"cannot decode image file {path}: not a known image format") from None
    except Image.DecompressionBombError as e:  # not an OSError: PIL refuses to decode it at all
        raise UserError(f"cannot read image file {path}: too large to decode safely ({e}); downscale it") from None
    except OSError as e:
        raise UserError(f"cannot read image file {path}: {e}") from None


def label_names(model_name: str, checkpoint: str | None, num_classes: int) -> dict[int, str] | None:
    """Class names {index: name} (`libra_jax.labels.class_names`): the `id2label` / `label_names` of the weights'
    HF `config.json` when at hand, else the ImageNet-1k names for a 1000-class head; None otherwise.

    The config is looked for beside a local checkpoint, inside a model folder, or in the HF hub cache
    for a hub name (never downloaded just for the names).
    """
    local = checkpoint or (model_name if os.path.exists(model_name) else None)
    if local is not None:
        path = os.path.join(local if os.path.isdir(local) else os.path.dirname(os.path.abspath(local)), "config.json")
    else:
        try:
            ref = hub.parse_hub_name(model_name) or hub.HubRef(registry.resolve(model_name).hf_hub_id)
        except ValueError:
            ref = None
        path = None
        if ref is not None and ref.repo_id is not None:
            path = huggingface_hub.try_to_load_from_cache(ref.repo_id, "config.json", revision=ref.revision)
    config = None
    if isinstance(path, str) and os.path.isfile(path):  # the cache answers a sentinel for "known absent"
        try:
            config = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            config = None
    try:
        names = labels.class_names(config if isinstance(config, dict) else None, num_classes, short=True)
    except ValueError:  # a re-trained head whose config still names the old classes
        return None
    return dict(enumerate(names)) if names else None


def explainer(model, methods: dict[str, tuple[str, str]], target_for: Callable | None = None) -> Callable:
    """One jitted `fn(params, x, y) -> (output, {name: maps})` for all methods (see
    `libra_jax.run.step.predict_and_attribute`; y None: each image's top-1 class)."""
    try:
        return jax.jit(predict_and_attribute(model, methods, target_for))
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


def run(args: argparse.Namespace) -> int:
    """`libra-jax explain`: top-5 classes and heat-map overlays for one or more images; the exit code."""
    methods = methods_from(args)
    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha must lie in [0, 1]; got {args.alpha}")
    if args.scale < 1:
        raise UserError(f"--scale must be a positive integer; got {args.scale}")
    images = [read_image(path) for path in args.image]
    if args.prompt:
        return explain_prompts(args, methods, images)
    model, params, _ = model_from(args)
    require_kind(model, args.model, "image", "--image")
    num_classes = model.config.num_classes
    if num_classes <= 0:
        raise UserError(f"model {args.model!r} has no classifier head; there is no class to explain")
    for target in args.target or []:
        if isinstance(target, str):
            raise UserError(f"--target {target!r}: image models take class indices")
        if not 0 <= target < num_classes:
            raise UserError(
                f"--target {target} is out of range: the model has {num_classes} classes (0..{num_classes - 1})"
            )

    x = preprocess(model, images)  # (B, h, w, 3): each original resized and cropped like timm's eval transform
    # (B, T) classes: T targets per image share one forward pass; None: each image's top-1, from that forward
    y = np.tile(np.asarray(args.target, np.int32), (len(images), 1)) if args.target else None
    logits, maps = explainer(model, methods)(params, x, y)
    probs = np.asarray(jax.nn.softmax(logits.astype(np.float32), axis=-1))
    names = label_names(args.model, args.checkpoint, num_classes)
    for path, p in zip(args.image, probs, strict=True):
        print_top5(path, p, names)
    if y is None:
        y, maps = probs.argmax(-1)[:, None], {name: m[:, None] for name, m in maps.items()}
    classes = y[:, 0] if y.shape[1] == 1 else args.target  # per image, or the same several for every image
    print(f"explaining class {', '.join(map(str, classes))} with {', '.join(methods)}")
    captions = [[f"class {k}" + (f" {names[k]}" if names and k in names else "") for k in row] for row in y]
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
    y = np.broadcast_to(np.asarray(text), (len(images), *text.shape))  # T prompts per image: one image forward
    # the N2U rule of the target follows each method's preset
    step = explainer(model, methods, lambda preset: image_text.model_target(params, preset))
    emb, maps = step(params, x, y)  # emb (B, E): the image embeddings of the maps' forward
    target = image_text.model_target(params, "vanilla")
    logits = np.asarray(jax.vmap(lambda e: jax.vmap(lambda t: target(e, t))(text))(emb))  # (B, T)
    for path, row in zip(args.image, logits, strict=True):
        print(f"{path}:")
        for prompt, value in zip(args.prompt, row, strict=True):
            print(f"  {value:9.4f}  {prompt}")
    print(f"explaining {len(args.prompt)} prompt(s) with {', '.join(methods)}")
    captions = [[repr(prompt) for prompt in args.prompt]] * len(images)
    viz.save_png(args.out, overlay_grid(model, x, maps, captions, methods, args))
    print(f"wrote {args.out}")
    return 0
