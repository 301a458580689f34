"""Showing word attributions: coloured text in the terminal and a self-contained HTML page.

Colours come from the diverging map of `libra_jax.viz` (red positive, blue negative, white at 0) at
score / scale, where the scale is max |score| unless given, so the sign and the relative size of every
score show and 0 stays white. Words are merged from pieces beforehand (`libra_jax.text.words`).
"""

from __future__ import annotations

import html
import os
import sys
from collections.abc import Sequence

import numpy as np

from libra_jax.viz import colorize, write_atomic

Row = tuple[str, Sequence[str], np.ndarray]
"""One line of a page: (label, W words, (W,) scores) — a method, or a generated token."""

_KEY_STEPS = 11


def _scores(words: Sequence[str], scores) -> np.ndarray:
    s = np.asarray(scores, np.float64)
    if s.shape != (len(words),):
        raise ValueError(f"got {len(words)} words but scores of shape {s.shape}; pass one score per word")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf; colour only finite maps")
    return s


def _scale(values: np.ndarray, scale: float | None) -> float:
    """The given scale, else max |value|; 1 for an all-zero map (everything white)."""
    if scale is not None:
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        return float(scale)
    top = float(np.abs(values).max(initial=0.0))
    return top if top > 0 else 1.0


def _text_colour(rgb: np.ndarray) -> tuple[int, int, int]:
    """Black on light backgrounds, white on dark ones (BT.601 luma)."""
    return (0, 0, 0) if rgb @ np.array([0.299, 0.587, 0.114]) >= 128 else (255, 255, 255)


def render_terminal(words: Sequence[str], scores, scale: float | None = None, tty: bool | None = None) -> str:
    """One line of words, each on a 24-bit ANSI background of its score's colour.

    Args:
      words: W words.
      scores: (W,) signed scores.
      scale: the |score| that gets the full colour (default max |score|).
      tty: colour codes or the plain fallback ``word(+0.12)``; default: colour when stdout is a terminal.
    Returns:
      The line (no trailing newline).
    """
    s = _scores(words, scores)
    if tty is None:
        tty = sys.stdout.isatty()
    if not tty:
        return " ".join(f"{w}({v:+.2f})" for w, v in zip(words, s, strict=True))
    colours = colorize(s / _scale(s, scale))
    out = []
    for w, rgb in zip(words, colours, strict=True):
        fg = _text_colour(rgb)
        out.append(f"\x1b[48;2;{rgb[0]};{rgb[1]};{rgb[2]}m\x1b[38;2;{fg[0]};{fg[1]};{fg[2]}m{w}\x1b[0m")
    return " ".join(out)


def _hex(rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in rgb))


def _key(scale_text: tuple[str, str, str]) -> str:
    """The colour key: a gradient bar from −1 to +1 with its three labels."""
    stops = ", ".join(_hex(c) for c in colorize(np.linspace(-1.0, 1.0, _KEY_STEPS)))
    low, mid, high = (html.escape(t) for t in scale_text)
    return (
        f'<div class="key"><div class="bar" style="background: linear-gradient(to right, {stops})"></div>'
        f'<div class="ticks"><span>{low}</span><span>{mid}</span><span>{high}</span></div></div>'
    )


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
th { text-align: right; vertical-align: top; padding: 0.4em 0.8em 0.4em 0; font-weight: 600; white-space: nowrap; }
th small { display: block; font-weight: normal; color: #666; }
td { padding: 0.4em 0; line-height: 1.9; }
.w { padding: 0.1em 0.15em; border-radius: 0.2em; }
.key { width: 22em; margin: 0.5em 0 1.2em; }
.bar { height: 0.9em; border: 1px solid #999; }
.ticks { display: flex; justify-content: space-between; font-size: 0.85em; color: #444; }
"""


def render_html(
    rows: Sequence[Row],
    title: str = "libra-jax attributions",
    scale: str | float = "row",
    path: str | os.PathLike | None = None,
    bold: Sequence[int | None] | None = None,
) -> str:
    """A self-contained HTML page with one row of coloured words per method (or generated token).

    Args:
      rows: (label, words, scores) per row; scores (W,) signed, one per word.
      title: the page heading.
      scale: "row" (each row saturates at its own max |score|, shown under its label), "page" (one
        max |score| for all rows) or a positive number.
      path: if given, the page is also written there atomically (temporary file + `os.replace`).
      bold: per row, the index of one word to set in bold (e.g. a generated token after its context), or None.
    Returns:
      The HTML text. Every word carries a hover title with its score; all text is HTML-escaped.
    """
    checked = [(str(label), list(words), _scores(words, scores)) for label, words, scores in rows]
    bold = [None] * len(checked) if bold is None else list(bold)
    if len(bold) != len(checked):
        raise ValueError(f"bold has {len(bold)} entries for {len(checked)} rows; pass one index (or None) per row")
    if isinstance(scale, str) and scale not in ("row", "page"):
        raise ValueError(f"scale must be 'row', 'page' or a positive number, got {scale!r}")
    if scale == "page":
        page_scale = _scale(np.concatenate([s for _, _, s in checked] or [np.zeros(0)]), None)
    elif scale != "row":
        page_scale = _scale(np.zeros(0), float(scale))
    body = []
    for (label, words, s), strong in zip(checked, bold, strict=True):
        row_scale = _scale(s, None) if scale == "row" else page_scale
        spans = []
        for i, (w, v, rgb) in enumerate(zip(words, s, colorize(s / row_scale), strict=True)):
            fg = _hex(_text_colour(rgb))
            title_text = html.escape(f"{w}: {v:+.4g}", quote=True)
            style = f"background:{_hex(rgb)};color:{fg}" + (
                ";font-weight:bold;outline:1px solid #222" if i == strong else ""
            )
            spans.append(f'<span class="w" style="{style}" title="{title_text}">{html.escape(w)}</span>')
        note = f"<small>max |s| = {row_scale:.3g}</small>" if scale == "row" else ""
        body.append(f"<tr><th>{html.escape(label)}{note}</th><td>{' '.join(spans)}</td></tr>")
    if scale == "row":
        key = _key(("−max |s| of the row", "0", "+max |s| of the row"))
    else:
        key = _key((f"{-page_scale:.3g}", "0", f"{page_scale:+.3g}"))
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n{key}\n<table>\n" + "\n".join(body) + "\n</table>\n</body>\n</html>\n"
    )
    if path is not None:
        write_atomic(path, page.encode("utf-8"))
    return page
