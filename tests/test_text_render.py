"""Terminal and HTML rendering of word attributions: colours by sign, plain fallback, escaping, atomic writes."""

from __future__ import annotations

import re

import numpy as np
import pytest

from libra_jax.text.render import render_html, render_terminal
from libra_jax.viz import colorize

ANSI_BG = re.compile(r"\x1b\[48;2;(\d+);(\d+);(\d+)m\x1b\[38;2;\d+;\d+;\d+m(.*?)\x1b\[0m")
HTML_SPAN = re.compile(
    r'<span class="w" style="background:#(..)(..)(..);color:#[0-9a-f]{6}" title="([^"]*)">([^<]*)</span>'
)


def test_plain_fallback():
    assert render_terminal(["good", "bad", "the"], [0.5, -1.0, 0.0], tty=False) == "good(+0.50) bad(-1.00) the(+0.00)"


def test_terminal_colours_follow_the_sign():
    line = render_terminal(["good", "bad", "the"], [0.5, -1.0, 0.0], tty=True)
    cells = ANSI_BG.findall(line)
    assert [c[3] for c in cells] == ["good", "bad", "the"]
    (r1, g1, b1), (r2, g2, b2), (r3, g3, b3) = ([int(v) for v in c[:3]] for c in cells)
    assert r1 > b1 and b2 > r2  # red positive, blue negative
    assert min(r3, g3, b3) > 240  # zero is white
    # Scale = max |s| unless given: a larger scale makes the same score paler.
    pale = [int(v) for v in ANSI_BG.findall(render_terminal(["good"], [0.5], scale=5.0, tty=True))[0][:3]]
    assert min(pale) > min(r1, g1, b1)


def test_bad_scores():
    with pytest.raises(ValueError, match="one score per word"):
        render_terminal(["a", "b"], [1.0], tty=False)
    with pytest.raises(ValueError, match="NaN"):
        render_terminal(["a"], [np.nan], tty=False)
    with pytest.raises(ValueError, match="scale"):
        render_html([("m", ["a"], [1.0])], scale="global")


def test_html_page_escapes_colours_and_writes_atomically(tmp_path):
    rows = [
        ("libra <fullgrad>", ["<script>", "A&B", "plain"], np.array([0.2, -0.4, 0.0])),
        ("rollout", ["<script>", "A&B", "plain"], np.array([1.0, 0.5, 0.25])),
    ]
    path = tmp_path / "out" / "page.html"
    page = render_html(rows, title="t & <u>", path=path)
    assert path.read_text(encoding="utf-8") == page
    assert [p.name for p in path.parent.iterdir()] == ["page.html"]  # no temporary file left
    assert page.startswith("<!DOCTYPE html>") and "<script>" not in page and "t &amp; &lt;u&gt;" in page
    assert "libra &lt;fullgrad&gt;" in page and 'class="key"' in page and "linear-gradient" in page
    spans = HTML_SPAN.findall(page)
    assert [s[4] for s in spans] == ["&lt;script&gt;", "A&amp;B", "plain"] * 2
    assert spans[0][3] == "&lt;script&gt;: +0.2" and spans[1][3] == "A&amp;B: -0.4"
    rgb = [tuple(int(v, 16) for v in s[:3]) for s in spans]
    assert rgb[0][0] > rgb[0][2] and rgb[1][2] > rgb[1][0]  # red positive, blue negative
    # Per-row scale: each row's top |score| gets the end colour (the first row's −0.4, the second's 1.0).
    blue_end, red_end = (tuple(int(v) for v in c) for c in colorize(np.array([-1.0, 1.0])))
    assert rgb[1] == blue_end and rgb[3] == red_end and rgb[0] != red_end
    # One page scale: the first row is paler than with its own scale.
    shared = [tuple(int(v, 16) for v in s[:3]) for s in HTML_SPAN.findall(render_html(rows, scale="page"))]
    assert sum(shared[1]) > sum(rgb[1]) and shared[3] == rgb[3]
    assert "max |s| = 0.4" in page and "max |s|" not in render_html(rows, scale=2.0).split("<table>")[1]


def test_html_bold_word_per_row():
    page = render_html([("a", ["x", "y"], [1.0, 0.0]), ("b", ["x"], [0.5])], bold=[1, None])
    bold = re.findall(r'style="[^"]*font-weight:bold[^"]*" title="[^"]*">([^<]*)</span>', page)
    assert bold == ["y"]
    with pytest.raises(ValueError, match="bold has 1 entries for 2 rows"):
        render_html([("a", ["x"], [1.0]), ("b", ["x"], [0.5])], bold=[0])
