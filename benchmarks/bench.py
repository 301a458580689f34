"""Attribution cost against the plain-gradient floor, on one random-init ViT and one batch (timing only).

    PYTHONPATH=. python benchmarks/bench.py --model vit_tiny_patch16_224 --batch 8     # CPU-sized
    PYTHONPATH=. python benchmarks/bench.py --batch 64 --out benchmarks/results/h100.md  # ViT-B/16 on a GPU

Variants, each jitted once and timed as the median of --repeats calls after a warm-up call that
compiles it (`block_until_ready` around every call; the timed calls interleave the variants):
  floor        jax.grad of the explained probabilities w.r.t. the input images, vanilla rules;
  libra_fullgrad_plus, vanilla fullgrad_plus;
  all single-pass maps the model supports, LibraGrad rules, from one forward/backward pass;
  torch        (optional) timm's PyTorch model: vanilla input×gradient with autograd, one forward
               and one backward, weights frozen so that only the input gradient is computed.
Prints a Markdown table (and appends it to --out) and PASS/MISS lines against the cost targets.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import importlib.metadata
import os
import pathlib
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from libra_jax.methods import attribution, fullgrad_plus, libra_fullgrad_plus, maps
from libra_jax.models import VisionTransformer, ViTConfig
from libra_jax.viz import write_atomic

GEOMETRIES = {
    "vit_tiny_patch16_224": dict(embed_dim=192, depth=12, num_heads=3),
    "vit_small_patch16_224": dict(embed_dim=384, depth=12, num_heads=6),
    "vit_base_patch16_224": dict(embed_dim=768, depth=12, num_heads=12),
    "vit_large_patch16_224": dict(embed_dim=1024, depth=24, num_heads=16),
}
"""timm ViT geometries (patch 16, 224 px, 1000 classes) built directly, so no hub or loader is needed."""

TARGETS = {"libra_fullgrad_plus": 1.15, "all single-pass (libra)": 1.3}
"""Cost targets: the most a variant may take, as a multiple of the floor's median time."""

FLOOR = "floor: jax.grad (vanilla)"
TORCH = "torch/timm IxG (vanilla autograd)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="On a CPU use a small setting, e.g. --model vit_tiny_patch16_224 --batch 8 --repeats 5.",
    )
    p.add_argument("--model", default="vit_base_patch16_224", choices=sorted(GEOMETRIES))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=10, help="timed calls per variant after the warm-up call")
    p.add_argument("--precision", default="default", choices=("default", "high", "highest"), help="matmul precision")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="dtype of params and inputs")
    p.add_argument(
        "--check-inputs",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="input validation inside the attribution functions (a host callback under jit)",
    )
    p.add_argument("--torch", action=argparse.BooleanOptionalAction, default=True, help="time the PyTorch/timm peer")
    p.add_argument("--out", help="Markdown file to append the results to (written atomically)")
    args = p.parse_args(argv)
    if args.batch < 1 or args.repeats < 1:
        p.error("--batch and --repeats must be positive")
    return args


def build(name: str, batch: int, dtype: jnp.dtype) -> tuple[VisionTransformer, dict, jax.Array, jax.Array]:
    """(model, random params, images (B, 224, 224, 3), class indices (B,)), params and images in `dtype`.

    Params are drawn from the shapes alone (N(0, 0.02²), norm scales 1): `model.init` runs a whole
    forward pass, which takes longer to compile on a CPU than some of the variants timed here.
    """
    model = VisionTransformer(ViTConfig(**GEOMETRIES[name]))
    h, w = model.config.img_size
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((h, w, 3), jnp.float32))
    rng = np.random.default_rng(0)

    def draw(path, spec):
        if path[-1].key == "scale":
            return jnp.ones(spec.shape, dtype)
        return jnp.asarray(0.02 * rng.standard_normal(spec.shape), dtype)

    params = jax.tree_util.tree_map_with_path(draw, shapes["params"])
    x = jax.random.normal(jax.random.PRNGKey(1), (batch, h, w, 3), dtype)
    y = jnp.arange(batch, dtype=jnp.int32) % model.config.num_classes
    return model, params, x, y


def floor_fn(model: VisionTransformer) -> Callable:
    """fn(params, x, y) → ∂(Σ_b softmax(logits_b)[y_b]) / ∂x, (B, H, W, 3): one forward, one backward."""

    def fn(params, x, y):
        def total(images):
            logits, _ = model.apply({"params": params}, images)  # vanilla rules
            probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
            return jnp.take_along_axis(probs, y[:, None], axis=-1).sum()

        return jax.grad(total)(x)

    return fn


def supported_single_pass(model: VisionTransformer) -> list[str]:
    """The single-pass methods `attribution` accepts for this model (attention ones need a class token)."""
    names = []
    for name in maps.SINGLE_PASS:
        try:
            attribution(model, name, rules="libra")
        except ValueError:
            continue
        names.append(name)
    return names


Call = tuple[Callable[[], object], Callable[[object], object]]
"""(run one batch, wait for its result)."""


def measure(calls: dict[str, Call], repeats: int) -> dict[str, tuple[float, float]]:
    """{name: (seconds of the first call, which compiles; median seconds of `repeats` further calls)}.

    The timed calls go round-robin over the variants, so background load on a shared machine spreads
    over all of them instead of skewing whichever variant happened to run during it.
    """
    first, times = {}, {name: [] for name in calls}
    for name, (call, sync) in calls.items():
        start = time.perf_counter()
        sync(call())
        first[name] = time.perf_counter() - start
        print(f"compiled and ran {name}: {first[name]:.1f} s", flush=True)
    for _ in range(repeats):
        for name, (call, sync) in calls.items():
            start = time.perf_counter()
            sync(call())
            times[name].append(time.perf_counter() - start)
    return {name: (first[name], statistics.median(times[name])) for name in calls}


def torch_peer(name: str, batch: int, dtype: str) -> tuple[Call, str] | None:
    """timm's model with autograd input×gradient as a `Call`, and a note on device and threads.

    None if torch or timm is missing.
    """
    try:
        import timm
        import torch
    except ImportError:
        return None
    # XLA's CPU client runs one intra-op thread per available core; give torch the same number
    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    device = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
    tdtype = getattr(torch, dtype)
    model = timm.create_model(name, pretrained=False).eval().to(device, tdtype).requires_grad_(False)
    x = torch.randn(batch, 3, 224, 224, device=device, dtype=tdtype)
    y = torch.arange(batch, device=device) % 1000

    def step():
        xi = x.clone().requires_grad_(True)
        probs = model(xi).float().softmax(-1)
        probs.gather(1, y[:, None]).sum().backward()
        return (xi * xi.grad).sum(1)

    def sync(out):
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    return (step, sync), f"torch {device}, torch.set_num_threads({threads})"


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def report(args: argparse.Namespace, results: dict[str, tuple[float, float]], notes: list[str]) -> str:
    """Markdown: a header, the table (variant, median ms, images/s, × floor, first call s), PASS/MISS lines."""
    floor = results[FLOOR][1]
    geometry = GEOMETRIES[args.model]
    lines = [
        f"## {args.model}, batch {args.batch}",
        "",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- device: {jax.devices()}",
        f"- versions: jax {jax.__version__}, jaxlib {version('jaxlib')}, flax {version('flax')}, "
        f"torch {version('torch')}, timm {version('timm')}",
        f"- model: {args.model} (random init; embed {geometry['embed_dim']}, depth {geometry['depth']}, "
        f"heads {geometry['num_heads']}), batch {args.batch}, dtype {args.dtype}",
        f"- matmul precision: {args.precision}; check_inputs: {args.check_inputs}; "
        f"median of {args.repeats} calls after one warm-up (compiling) call, variants interleaved",
        *(f"- {note}" for note in notes),
        "",
        "| variant | median ms | images/s | × floor | first call s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (first, median) in results.items():
        lines.append(
            f"| {name} | {median * 1e3:.1f} | {args.batch / median:.1f} | {median / floor:.3f} | {first:.1f} |"
        )
    lines.append("")
    for name, limit in TARGETS.items():
        ratio = next(median for row, (_, median) in results.items() if row.startswith(name)) / floor
        verdict = "PASS" if ratio <= limit else "MISS"
        lines.append(f"{verdict} {name}: {ratio:.3f}× floor (target ≤ {limit:.2f}×)  ")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model, params, x, y = build(args.model, args.batch, jnp.dtype(args.dtype))
    single = supported_single_pass(model)
    variants = {
        FLOOR: floor_fn(model),
        "libra_fullgrad_plus": libra_fullgrad_plus(model, check_inputs=args.check_inputs),
        "fullgrad_plus (vanilla)": fullgrad_plus(model, check_inputs=args.check_inputs),
        f"all single-pass (libra): {len(single)} maps": attribution(
            model, single, rules="libra", check_inputs=args.check_inputs
        ),
    }
    calls = {
        name: (functools.partial(jax.jit(fn), params, x, y), jax.block_until_ready) for name, fn in variants.items()
    }
    notes = [f"single-pass maps: {', '.join(single)}"]
    peer = torch_peer(args.model, args.batch, args.dtype) if args.torch else None
    if peer is not None:
        calls[TORCH], note = peer
        notes.append(note)
    elif args.torch:
        notes.append("torch peer skipped: torch or timm not installed")
    precision = (
        contextlib.nullcontext() if args.precision == "default" else jax.default_matmul_precision(args.precision)
    )
    load_before = os.getloadavg()[0]
    with precision:
        results = measure(calls, args.repeats)
    notes.append(f"1-min load average before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f}")
    text = report(args, results, notes)
    print("\n" + text, end="")
    if args.out:
        out = pathlib.Path(args.out)
        previous = out.read_text(encoding="utf-8") + "\n" if out.exists() else ""
        write_atomic(out, (previous + text).encode("utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
