"""Everything about weights: where they come from, how they map onto a model, how they are stored.

One module per job:

hub.py         Hugging Face Hub access (config.json, weight files) with errors that say what to do
registry.py    timm model names → model config + DataConfig (table: timm_registry.json)
embedded.py    the embedded models shipped in libra_jax/assets/ ('synthetic_vit', ...)
keymap.py      timm state dict ⇄ Flax params: table-driven key map with a readable diff
adapt.py       fitting a timm state dict to the model (pos / patch embed resampling, heads)
resize.py      PyTorch-exact bilinear / bicubic resizing (used by adapt, metrics and viz too)
formats.py     checkpoint files: timm state dicts in, the libra-jax safetensors format in and out
atomic.py      the one atomic file writer of the package
loading.py     `load`: any of the above sources → (model, params)
"""

from libra_jax.weights.formats import CheckpointFileError, save_checkpoint
from libra_jax.weights.hub import HubError
from libra_jax.weights.keymap import CheckpointMismatchError
from libra_jax.weights.loading import load
from libra_jax.weights.registry import UnknownModelError

__all__ = ["CheckpointFileError", "CheckpointMismatchError", "HubError", "UnknownModelError", "load", "save_checkpoint"]
