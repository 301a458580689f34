"""Attribution cost against the plain-gradient floor, on one random-init ViT and one batch (timing only).

    PYTHONPATH=. python benchmarks/bench.py --model vit_tiny_patch16_224 --batch 8     # CPU-sized
    PYTHONPATH=. python benchmarks/bench.py --batch 64 --out benchmarks/results/h100.md  # ViT-B/16 on a GPU

Variants, each jitted once and timed as the median of --repeats calls after a warm-up call that
compiles it (`block_until_ready` around every call; the timed calls interleave the variants):
  floor        jax.grad of the explained probabilities w.r.t. the input images, vanilla rules;
  libra_fullgrad_plus, vanilla fullgrad_plus;
  all single-pass maps the model supports, LibraGrad rules, from one forward/backward pass;
  libra_legrad over all layers (its own pass: a forward plus one local backward per block);
  libra_ig     Integrated Gradients, --ig-steps steps (--ig-chunk at a time);
  memory controls: libra_fullgrad_plus with bf16 compute, with rematerialised blocks, and with the
               batch evaluated --chunk examples at a time;
  torch        (--torch) the PyTorch peers of torch_peer.py: timm + autograd input×gradient, and
               hook-based Libra FullGrad+ (`.detach()` on attention, LN denominator, GELU gate).
Memory: JAX rows report XLA's buffer assignment of the compiled call (arguments + outputs +
temporaries); torch rows the peak allocation of one call on a GPU, on a CPU the growth of the
process's peak RSS during its first call (a lower bound). Prints a Markdown table (and appends it to
--out), the bf16 deviation from float32, and PASS/MISS lines against the cost targets.
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

from libra_jax.methods import attribution, fullgrad_plus, libra_fullgrad_plus, libra_legrad, maps
from libra_jax.models import VisionTransformer, ViTConfig
from libra_jax.viz import write_atomic

GEOMETRIES = {
    "vit_tiny_patch16_224": dict(embed_dim=192, depth=12, num_heads=3),
    "vit_small_patch16_224": dict(embed_dim=384, depth=12, num_heads=6),
    "vit_base_patch16_224": dict(embed_dim=768, depth=12, num_heads=12),
    "vit_large_patch16_224": dict(embed_dim=1024, depth=24, num_heads=16),
    "vit_huge_patch14_224": dict(embed_dim=1280, depth=32, num_heads=16, patch_size=14),
}
"""timm ViT geometries (224 px, 1000 classes; patch 16 unless given) built directly, so no hub or loader is needed."""

TARGETS = {"libra_fullgrad_plus": 1.15, "all single-pass (libra)": 1.3, "libra_legrad": 2.0}
"""Cost targets: the most a variant may take, as a multiple of the floor's median time."""

FLOOR = "floor: jax.grad (vanilla)"
BF16 = "bf16 compute: libra_fullgrad_plus"


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
    p.add_argument("--torch", action=argparse.BooleanOptionalAction, default=True, help="time the PyTorch/timm peers")
    p.add_argument("--ig-steps", type=int, default=50, help="Integrated Gradients steps")
    p.add_argument("--ig-chunk", type=int, default=None, help="IG steps evaluated at a time (internal_batch_size)")
    p.add_argument("--chunk", type=int, default=None, help="chunk_size of the chunked row (default: batch // 4)")
    p.add_argument("--out", help="Markdown file to append the results to (written atomically)")
    args = p.parse_args(argv)
    if args.batch < 1 or args.repeats < 1 or args.ig_steps < 1:
        p.error("--batch, --repeats and --ig-steps must be positive")
    args.chunk = args.chunk or max(1, args.batch // 4)
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
    x = jax.random.uniform(jax.random.PRNGKey(1), (batch, h, w, 3), dtype, -1.0, 1.0)  # normalised pixels
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


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment(packages: tuple[str, ...] = ("torch", "timm")) -> list[str]:
    """Markdown list lines: date, device, and the versions of jax, jaxlib, flax and `packages`."""
    versions = ", ".join(f"{name} {version(name)}" for name in ("jaxlib", "flax", *packages))
    return [
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- device: {jax.devices()}",
        f"- versions: jax {jax.__version__}, {versions}",
    ]


def table(
    results: dict[str, tuple[float, float]], memory: dict[str, int], items: int, unit: str, targets: dict[str, float]
) -> list[str]:
    """Markdown lines: the table (variant, median ms, `unit`/s for `items` per call, × floor, memory, first call s)
    and a PASS/MISS line per target (the first row whose name starts with the target's key)."""
    floor = results[FLOOR][1]
    lines = [
        f"| variant | median ms | {unit}/s | × floor | peak MiB | first call s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, (first, median) in results.items():
        lines.append(
            f"| {name} | {median * 1e3:.1f} | {items / median:.2f} | {median / floor:.3f} "
            f"| {memory[name] / 2**20:.0f} | {first:.1f} |"
        )
    lines.append("")
    for name, limit in targets.items():
        ratio = next(median for row, (_, median) in results.items() if row.startswith(name)) / floor
        verdict = "PASS" if ratio <= limit else "MISS"
        lines.append(f"{verdict} {name}: {ratio:.3f}× floor (target ≤ {limit:.2f}×)  ")
    return lines


def report(
    args: argparse.Namespace, results: dict[str, tuple[float, float]], memory: dict[str, int], notes: list[str]
) -> str:
    """Markdown: a header, the table (variant, median ms, images/s, × floor, memory, first call s), PASS/MISS."""
    geometry = GEOMETRIES[args.model]
    lines = [
        f"## {args.model}, batch {args.batch}",
        "",
        *environment(),
        f"- model: {args.model} (random init; embed {geometry['embed_dim']}, depth {geometry['depth']}, "
        f"heads {geometry['num_heads']}), batch {args.batch}, dtype {args.dtype}",
        f"- matmul precision: {args.precision}; check_inputs: {args.check_inputs}; "
        f"median of {args.repeats} calls after one warm-up (compiling) call, variants interleaved",
        *(f"- {note}" for note in notes),
        "",
        *table(results, memory, args.batch, "images", TARGETS),
    ]
    return "\n".join(lines) + "\n"


def xla_bytes(jitted: Callable, *args) -> int:
    """Arguments + outputs + temporaries of XLA's buffer assignment for `jitted(*args)` (the compile is cached)."""
    stats = jax.jit(jitted).lower(*args).compile().memory_analysis()
    return (
        stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes - stats.alias_size_in_bytes
    )


def publish(text: str, out: str | None) -> None:
    """Print a Markdown report and append it to `out` (written atomically), if given."""
    print("\n" + text, end="")
    if out:
        path = pathlib.Path(out)
        previous = path.read_text(encoding="utf-8") + "\n" if path.exists() else ""
        write_atomic(path, (previous + text).encode("utf-8"))


def max_deviation(low: jax.Array, ref: jax.Array) -> float:
    """max |low − ref| / max |ref| over the whole batch."""
    return float(jnp.abs(low - ref).max() / jnp.abs(ref).max())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model, params, x, y = build(args.model, args.batch, jnp.dtype(args.dtype))
    single = supported_single_pass(model)
    check = args.check_inputs
    variants = {
        FLOOR: floor_fn(model),
        "libra_fullgrad_plus": libra_fullgrad_plus(model, check_inputs=check),
        "fullgrad_plus (vanilla)": fullgrad_plus(model, check_inputs=check),
        f"all single-pass (libra): {len(single)} maps": attribution(model, single, rules="libra", check_inputs=check),
        "libra_legrad (all layers)": libra_legrad(model, layer_index=0, check_inputs=check),
        f"libra_ig ({args.ig_steps} steps)": attribution(
            model, "ig", rules="libra", steps=args.ig_steps, internal_batch_size=args.ig_chunk, check_inputs=check
        ),
        BF16: libra_fullgrad_plus(model.clone(dtype="bfloat16"), check_inputs=check),
        "remat: libra_fullgrad_plus": libra_fullgrad_plus(model.clone(remat=True), check_inputs=check),
        f"chunk_size {args.chunk}: libra_fullgrad_plus": libra_fullgrad_plus(
            model, check_inputs=check, chunk_size=args.chunk
        ),
    }
    jitted = {name: jax.jit(fn) for name, fn in variants.items()}
    calls = {name: (functools.partial(fn, params, x, y), jax.block_until_ready) for name, fn in jitted.items()}
    notes = [f"single-pass maps: {', '.join(single)}"]
    torch_memory = {}
    if args.torch:
        import torch_peer  # torch only ever enters here

        steps, sync, peak_bytes, note = torch_peer.peers(
            args.model, args.batch, args.dtype, jax.default_backend() == "gpu"
        )
        torch_memory = {name: peak_bytes(step) for name, step in steps.items()}  # before anything else grows the RSS
        calls |= {name: (step, sync) for name, step in steps.items()}
        notes.append(note + "; the torch rows' first call follows one memory-measuring call")
    precision = (
        contextlib.nullcontext() if args.precision == "default" else jax.default_matmul_precision(args.precision)
    )
    load_before = os.getloadavg()[0]
    with precision:
        results = measure(calls, args.repeats)
        memory = {name: xla_bytes(fn, params, x, y) for name, fn in jitted.items()} | torch_memory
        deviation = max_deviation(jitted[BF16](params, x, y), jitted["libra_fullgrad_plus"](params, x, y))
    notes.append(f"1-min load average before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f}")
    notes.append(f"bf16 compute, libra_fullgrad_plus: max |bf16 − float32| / max |float32| = {deviation:.2e}")
    publish(report(args, results, memory, notes), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
