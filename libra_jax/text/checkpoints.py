"""Which text model a name holds, loading it, and its tokenizer: what the command line needs beside
`libra_jax.load` (which reads libra-jax files and timm names, the embedded text models included).

    kind = checkpoint_kind("path/to/saved_model")     # "text_classifier", "decoder" or None (not a text checkpoint)
    model, params = load_text_model("path/to/saved_model")
    tokenizer = tokenizer_for("path/to/saved_model", model)

A Hugging Face checkpoint (a `save_pretrained` folder, or an 'org/name' repo) says what it is in its
config.json `model_type`: bert / roberta / distilbert (`text.loading`) or a decoder family
(`text.decoder_loading.FAMILIES`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from libra_jax.text import decoder_loading, loading
from libra_jax.text.tokenizer import TextTokenizer, from_files, load_text_tokenizer
from libra_jax.weights import embedded, hub

CLASSIFIER_TYPES = ("bert", "roberta", "distilbert")


def _config(name: str) -> dict | None:
    """config.json of a local folder, or of an 'org/name' hub repo that is not a timm one; None otherwise."""
    if Path(name).is_dir():
        path = Path(name) / loading.CONFIG_FILE
        return json.loads(path.read_text()) if path.is_file() else None
    if "/" not in name or name.startswith(("timm/", "hf-hub:timm/")) or os.path.exists(name):
        return None
    try:
        return hub.fetch_config(hub.repo_ref(name), required=False)
    except (hub.HubError, ValueError):
        return None  # not a hub repo, or not reachable: `libra_jax.load` reports on it


def checkpoint_kind(name: str | os.PathLike) -> str | None:
    """ "text_classifier" or "decoder" for a Hugging Face text checkpoint (`Capabilities.kind`), else None."""
    config = _config(os.fspath(name))
    model_type = (config or {}).get("model_type")
    if model_type in CLASSIFIER_TYPES:
        return "text_classifier"
    if model_type in decoder_loading.FAMILIES:
        return "decoder"
    return None


def load_text_model(name: str | os.PathLike):
    """(model, params) of a Hugging Face text checkpoint (`checkpoint_kind` not None); ValueError otherwise."""
    kind = checkpoint_kind(name)
    if kind == "text_classifier":
        return loading.load_text_classifier(name)
    if kind == "decoder":
        return decoder_loading.load_decoder(name)
    raise ValueError(f"{name} is not a Hugging Face text checkpoint (no config.json with a text model_type)")


def tokenizer_for(name: str, model, tokenizer: str | os.PathLike | None = None) -> TextTokenizer:
    """The tokenizer of text model `model` loaded from `name`: `tokenizer` (a tokenizer.json file, or a folder /
    repo holding one) when given, else the embedded model's shipped one, else the checkpoint's own."""
    decoder = model.capabilities.kind == "decoder"
    source = tokenizer if tokenizer is not None else name
    if tokenizer is None and name in embedded.text_names():
        source = embedded.tokenizer_path(name)
    if Path(source).is_file():
        return from_files(Path(source), None, {}, model.config.max_length, decoder)
    try:
        return load_text_tokenizer(source, max_length=model.config.max_length, decoder=decoder)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"no tokenizer for {name}: {e}; pass the model's tokenizer.json (--tokenizer FILE on the command line)"
        ) from None
