"""Every ```python block of README.md and docs/*.md runs offline, as written.

* One fresh subprocess per Markdown file runs that file's blocks in order in one shared namespace, so a
  block may use what an earlier block of the same file defined (README: `model`, `params`, `x`, `y`),
  as a reader following the page would; the subprocess starts in an empty temporary folder with
  `HF_HUB_OFFLINE=1` and an empty HF cache, so a block that needs the network or a file it does not
  create itself fails.
* A block is opted out by an HTML comment on the line before its fence, `<!-- not run: <why> -->`; use it
  only where running offline is impossible, and say why. `<!-- requires: pkg ... -->` there skips the block
  when one of those packages is not installed (the optional extras); later blocks must not depend on it.
* Shell commands are ```bash blocks and output samples ```text: neither is run; every block names its language
  (an untagged block is an error, so a Python example cannot slip past the run).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^(`{3,})\s*([\w+-]*)")
MARKER = re.compile(r"^<!--\s*(not run|requires)\s*:\s*(.*?)\s*-->$")

RUNNER = """
import json, sys, traceback
namespace = {"__name__": "__main__"}
for block in json.load(sys.stdin):
    try:
        exec(compile(block["source"], block["where"], "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        print(f"FAILED: the block at {block['where']}", file=sys.stderr)
        sys.exit(1)
"""
"""Runs the blocks (JSON on stdin) in order in one namespace; a traceback names the page and line."""


@dataclasses.dataclass(frozen=True)
class Block:
    where: str  # "README.md:14": the page and the line of the opening fence
    language: str  # the fence's info string ('' when it has none)
    source: str
    marker: tuple[str, str] | None  # ("not run", why) or ("requires", "pkg ...") from the line before the fence


def blocks(page: pathlib.Path) -> list[Block]:
    """Every fenced code block of a Markdown page, with the marker comment on the line before each."""
    lines = page.read_text(encoding="utf-8").splitlines()
    name = page.relative_to(REPO) if page.is_relative_to(REPO) else page.name
    found, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == fence.group(1)), None)
        assert end is not None, f"{name}:{i + 1}: code fence never closed"
        before = MARKER.match(next((line.strip() for line in reversed(lines[:i]) if line.strip()), ""))
        source = "\n".join(lines[i + 1 : end]) + "\n"
        found.append(Block(f"{name}:{i + 1}", fence.group(2), source, before.groups() if before else None))
        i = end + 1
    return found


def runnable(page_blocks: list[Block]) -> tuple[list[Block], list[str]]:
    """The blocks to run, and why the others are left out."""
    run, left_out = [], []
    for block in (b for b in page_blocks if b.language == "python"):
        kind, detail = block.marker or ("", "")
        missing = [p for p in detail.split() if importlib.util.find_spec(p) is None] if kind == "requires" else []
        if kind == "not run":
            assert detail, f"{block.where}: a `not run` marker must say why"
            left_out.append(f"{block.where}: not run ({detail})")
        elif missing:
            left_out.append(f"{block.where}: needs {' '.join(missing)}")
        else:
            run.append(block)
    return run, left_out


def test_pages_have_python_blocks():
    """The extraction finds the README's examples (a broken fence parser would make the test below vacuous)."""
    assert len([b for b in blocks(REPO / "README.md") if b.language == "python"]) >= 3


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_fence_names_its_language(page):
    """An untagged block would escape the run below: Python is ```python, commands ```bash, output ```text."""
    untagged = [b.where for b in blocks(page) if not b.language]
    assert not untagged, f"code blocks without a language: {untagged}"


def test_markers_are_read(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- not run: needs a GPU -->\n```python\nraise SystemExit(1)\n```\n\n"
        "<!-- requires: no_such_package_xyz -->\n```python\nimport no_such_package_xyz\n```\n\n"
        "```bash\nexit 1\n```\n````python\nx = 1\n```\ny = 2\n````\n"
    )
    run, left_out = runnable(blocks(page))
    assert [b.source for b in run] == ["x = 1\n```\ny = 2\n"]
    assert left_out == ["page.md:2: not run (needs a GPU)", "page.md:7: needs no_such_package_xyz"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_blocks_run_offline(page, tmp_path):
    run, left_out = runnable(blocks(page))
    if not run:
        pytest.skip(f"no runnable python block in {page.name}" + (f" ({'; '.join(left_out)})" if left_out else ""))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),  # an empty cache: nothing a block has not made itself
        "MPLBACKEND": "Agg",
    }
    work = tmp_path / "cwd"
    work.mkdir()
    payload = json.dumps([{"where": b.where, "source": b.source} for b in run])
    done = subprocess.run(
        [sys.executable, "-c", RUNNER], input=payload, cwd=work, env=env, capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stderr[-6000:]
