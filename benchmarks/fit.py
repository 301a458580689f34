"""Will it fit? XLA's memory estimate for attribution calls on large ViTs, from compilation alone.

    PYTHONPATH=. python benchmarks/fit.py --model vit_large_patch16_224 vit_huge_patch14_224 --batch 64

Nothing is allocated or run: params, images and labels are abstract shapes (`jax.ShapeDtypeStruct`),
each variant is lowered and compiled for the default backend, and XLA's buffer assignment (arguments
+ outputs + temporaries, as in bench.py) is compared with --budget-gib. The number is the compiler's
for *this* backend: run the script on the GPU for the GPU's figure; on a CPU it is an estimate of it
(XLA:CPU fuses differently and needs no cuDNN workspace).
"""

from __future__ import annotations

import argparse
import datetime
import time

import jax
import jax.numpy as jnp
from bench import GEOMETRIES, publish, supported_single_pass, version, xla_bytes

from libra_jax.methods import attribution, libra_fullgrad_plus
from libra_jax.models import VisionTransformer, ViTConfig


def variants(model: VisionTransformer, batch: int) -> dict:
    """Attribution functions fn(params, x, y) whose memory is estimated, by row name."""
    single = supported_single_pass(model)
    chunk = max(1, batch // 4)
    low = model.clone(dtype="bfloat16", remat=True)
    return {
        "libra_fullgrad_plus": libra_fullgrad_plus(model),
        f"all single-pass (libra): {len(single)} maps": attribution(model, single, rules="libra"),
        "bf16: libra_fullgrad_plus": libra_fullgrad_plus(model.clone(dtype="bfloat16")),
        "remat: libra_fullgrad_plus": libra_fullgrad_plus(model.clone(remat=True)),
        "bf16 + remat: libra_fullgrad_plus": libra_fullgrad_plus(low),
        f"chunk_size {chunk}: libra_fullgrad_plus": libra_fullgrad_plus(model, chunk_size=chunk),
        f"bf16 + remat: all single-pass ({len(single)} maps)": attribution(low, single, rules="libra"),
    }


def abstract_arguments(model: VisionTransformer, batch: int) -> tuple:
    """(params, images (B, H, W, 3), labels (B,)) as shapes only."""
    h, w = model.config.img_size
    image = jax.ShapeDtypeStruct((h, w, 3), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), image)["params"]
    return params, jax.ShapeDtypeStruct((batch, h, w, 3), jnp.float32), jax.ShapeDtypeStruct((batch,), jnp.int32)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", nargs="+", default=["vit_large_patch16_224", "vit_huge_patch14_224"], choices=GEOMETRIES)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--budget-gib", type=float, default=78.0, help="usable device memory (an 80 GB H100: about 78)")
    p.add_argument("--out", help="Markdown file to append the results to (written atomically)")
    args = p.parse_args(argv)
    lines = [
        f"## Memory estimate at batch {args.batch} (XLA buffer assignment, nothing run)",
        "",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- backend: {jax.default_backend()} ({jax.devices()[0].device_kind}); jax {jax.__version__}, "
        f"jaxlib {version('jaxlib')}, flax {version('flax')}; float32 params, budget {args.budget_gib:g} GiB",
        "",
        "| model | variant | GiB | fits | compile s |",
        "|---|---|---:|:---:|---:|",
    ]
    for name in args.model:
        model = VisionTransformer(ViTConfig(**GEOMETRIES[name]))
        arguments = abstract_arguments(model, args.batch)
        for row, fn in variants(model, args.batch).items():
            start = time.perf_counter()
            gib = xla_bytes(fn, *arguments) / 2**30
            line = f"| {name} | {row} | {gib:.1f} | {'yes' if gib <= args.budget_gib else 'no'} "
            lines.append(line + f"| {time.perf_counter() - start:.0f} |")
            print(lines[-1], flush=True)
    publish("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
