"""The tables and pictures of an evaluation: markdown / CSV tables, deletion-curve plot, result files."""

from __future__ import annotations

import csv
import io
import json
import math
import pathlib

import numpy as np
from PIL import Image, ImageDraw

from libra_jax import viz
from libra_jax.evaluate import COLUMNS
from libra_jax.metrics import faithfulness
from libra_jax.weights.atomic import write_atomic


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


def plot_curves(curves: dict[tuple[str, str], dict[str, np.ndarray]], path, ratios=faithfulness.RATIOS) -> None:
    """MIF (solid) and LIF (dashed) accuracy curves of every row as one PNG (PIL only)."""
    w, h, pad = 900, 520, 50
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle([pad, pad, w - 260, h - pad], outline="black")
    palette = viz.colormap("sequential", max(len(curves), 2) + 2)[1:-1]

    def xy(r, acc):
        return pad + (r - ratios[0]) / (ratios[-1] - ratios[0]) * (w - 260 - pad), h - pad - acc * (h - 2 * pad)

    for i, ((m, p), c) in enumerate(sorted(curves.items())):
        colour = tuple(int(v) for v in palette[i])
        for variant, dash in (("mif", False), ("lif", True)):
            pts = [xy(r, a) for r, a in zip(ratios, c[f"{variant}_correct"].mean(1), strict=True)]
            for j, (a, b) in enumerate(zip(pts[:-1], pts[1:], strict=True)):
                if not dash or j % 2 == 0:
                    draw.line([a, b], fill=colour, width=2)
        draw.text((w - 250, pad + 14 * i), f"{m} / {p}", fill=colour)
    draw.text((pad, h - pad + 8), "ratio r (MIF: most relevant removed, solid; LIF: top kept, dashed)", fill="black")
    draw.text((pad, pad - 16), "accuracy", fill="black")
    viz.save_png(path, np.asarray(img))


def write_results(out_dir, results, curves, meta: dict, plot: bool) -> dict[str, str]:
    """Write results.md, results.csv, results.json (and curves.png) atomically into out_dir."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = format_table(results)
    files = {
        "results.md": f"{md}\n\n{json.dumps(meta)}\n",
        "results.csv": format_table(results, "csv"),
        "results.json": json.dumps(
            {"meta": meta, "rows": [{"method": m, "preset": p, **r} for (m, p), r in results.items()]}, indent=1
        ),
    }
    for name, text in files.items():
        write_atomic(out / name, text.encode())
    if plot:
        plot_curves(curves, out / "curves.png")
    return {name: str(out / name) for name in (*files, *(["curves.png"] if plot else []))}
