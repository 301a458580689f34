"""The embedded models: small ViTs trained on the synthetic shapes benchmark, shipped as libra-jax files.

`libra_jax.load(name)` accepts these names like any timm name; the command line lists them with
`names()`. How each one was trained (and how to reproduce it) is in `libra_jax/assets/README.md`.
"""

from __future__ import annotations

from pathlib import Path

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets"
NAMES = ("synthetic_vit", "synthetic_swiglu")


def names() -> tuple[str, ...]:
    """The embedded model names, default first."""
    return NAMES


def path(name: str) -> Path:
    """The shipped libra-jax file of embedded model `name`."""
    if name not in NAMES:
        raise ValueError(f"{name!r} is not an embedded model; the embedded models are {', '.join(NAMES)}")
    return ASSET_DIR / f"{name}.safetensors"
