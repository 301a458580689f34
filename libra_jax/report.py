"""The tables and pictures of an evaluation: markdown / CSV tables, deletion-curve plot, result files."""

from __future__ import annotations

import csv
import io
import json
import math
import pathlib
from collections.abc import Sequence

import numpy as np

from libra_jax import viz
from libra_jax.evaluate import COLUMNS
from libra_jax.metrics import faithfulness
from libra_jax.rules import PRESETS
from libra_jax.weights.atomic import write_atomic

Columns = Sequence[tuple[str, str]]
"""Table columns: (result key, title) pairs."""


def format_table(
    results: dict[tuple[str, str], dict[str, float]], fmt: str = "markdown", columns: Columns = COLUMNS
) -> str:
    """Markdown or CSV table: one row per (method, preset), the `columns` ((key, title) pairs: the image
    evaluation's `COLUMNS` or the text one's `libra_jax.evaluate_text.TEXT_COLUMNS`) that have a value."""
    present = [(k, title) for k, title in columns if any(not math.isnan(r[k]) for r in results.values())]
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
    """The lines printed under a markdown table: what a completeness column means, and why vanilla `hirescam` at
    its default layer is not a fair row ('' when neither applies)."""
    notes = []
    if any(not math.isnan(r.get("completeness_error", math.nan)) for r in results.values()):
        notes.append(
            "Completeness err = mean |Σ map − logit|. FullGrad+ sums the IxG of every block (plus the biases):"
            " it is not meant to be complete, so its error is large under every preset by design."
        )
    if any(m == "hirescam" and p in PRESETS and PRESETS[p].norm == "plain" for m, p in results):
        notes.append(
            "hirescam (at its default layer, the last block's input) under a plain LayerNorm gradient: on a"
            " class-token-pooled pre-norm ViT a patch token reaches the output only through the last block's"
            " scale-invariant norm1, so the map is a near-total cancellation (~1e-6 of the layer='norm1' map,"
            " dominated by float32 rounding). layer='norm1' is the well-conditioned recipe."
        )
    return "".join(f"\n\n{note}" for note in notes)


def plot_curves(curves: dict[tuple[str, str], dict[str, np.ndarray]], path, ratios=faithfulness.RATIOS) -> None:
    """MIF and LIF accuracy curves of every (method, preset) row as one PNG: a panel each, a colour per method,
    a line style per preset (`viz.line_panels`)."""
    panels = [
        (f"{v.upper()} {arrow}", label, {key: c[f"{v}_correct"].mean(1) for key, c in sorted(curves.items())})
        for v, arrow, label in (
            ("mif", "(lower is better)", "fraction r of patches removed, most relevant first"),
            ("lif", "(higher is better)", "fraction r of patches kept, most relevant first"),
        )
    ]
    viz.save_png(path, viz.line_panels(panels, ratios, "accuracy"))


def write_results(
    out_dir, results, curves, meta: dict, plot: bool, columns: Columns = COLUMNS, note: str = ""
) -> dict[str, str]:
    """Write results.md, results.csv, results.json (and curves.png) atomically into out_dir (tables of `columns`,
    `note` under the markdown table)."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = format_table(results, columns=columns)
    files = {
        "results.md": f"{md}{table_note(results)}{note}\n\n{json.dumps(meta)}\n",
        "results.csv": format_table(results, "csv", columns),
        "results.json": json.dumps(
            {"meta": meta, "rows": [{"method": m, "preset": p, **r} for (m, p), r in results.items()]}, indent=1
        ),
    }
    for name, text in files.items():
        write_atomic(out / name, text.encode())
    if plot:
        plot_curves(curves, out / "curves.png")
    return {name: str(out / name) for name in (*files, *(["curves.png"] if plot else []))}
