"""The embedded models, trained on the synthetic benchmarks and shipped as libra-jax files.

Image: small ViTs on the shapes benchmark ('synthetic_vit', 'synthetic_swiglu'); text: a small BERT on
the evidence-word benchmark ('synthetic_bert') and a small Llama-style decoder on the recall / induction
tasks ('synthetic_decoder'), each with its tokenizer.json. `libra_jax.load(name)` accepts
every one like any timm name; the image command line lists the image ones with `names()`. How each one
was trained (and how to reproduce it) is in `libra_jax/assets/README.md`.
"""

from __future__ import annotations

from pathlib import Path

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets"
NAMES = ("synthetic_vit", "synthetic_swiglu")
TEXT_NAMES = ("synthetic_bert", "synthetic_decoder")


def names() -> tuple[str, ...]:
    """The embedded image model names, default first."""
    return NAMES


def text_names() -> tuple[str, ...]:
    """The embedded text model names (classifier, then decoder LM), default first."""
    return TEXT_NAMES


def _check(name: str, known: tuple[str, ...]) -> None:
    if name not in known:
        raise ValueError(f"{name!r} is not an embedded model; the embedded models are {', '.join(known)}")


def path(name: str) -> Path:
    """The shipped libra-jax file of embedded model `name` (image or text)."""
    _check(name, NAMES + TEXT_NAMES)
    return ASSET_DIR / f"{name}.safetensors"


def tokenizer_path(name: str) -> Path:
    """The tokenizer.json shipped with embedded text model `name`."""
    _check(name, TEXT_NAMES)
    return ASSET_DIR / f"{name}_tokenizer.json"
