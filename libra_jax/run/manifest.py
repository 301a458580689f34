"""The bookkeeping of a dataset run: run identity, per-process shard indexes, the merged manifest.

Layout of an output folder (schema in docs/run.md):

    manifest.json                  written last, by process 0: the run, every shard, skipped images
    shards/index-p{P}.json         process P's completed shards (rewritten atomically after each one)
    shards/shard-{S:05d}-p{P}.npz  process P's rows of shard S

A shard counts as complete only when its index entry exists and the file's size and sha256 match it;
anything else is recomputed. An index or manifest whose `run` differs from the current one means the
folder belongs to another run, which is an error (nothing is overwritten).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from collections.abc import Callable, Mapping

import flax
import jax
import jaxlib
import numpy as np

import libra_jax
from libra_jax.run import store
from libra_jax.weights.keymap import flatten

FORMAT, VERSION = "libra-jax-run", 2
READABLE = (1, VERSION)
"""Versions `load_results` reads: version 1 shards have no per-row `source` (added in version 2)."""
MANIFEST = "manifest.json"


class RunMismatchError(ValueError):
    """The output folder holds results of a different run (model, weights, methods, data or layout)."""


def versions() -> dict[str, str]:
    """Versions of the packages that determine the numbers."""
    return {
        "libra_jax": libra_jax.__version__,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "numpy": np.__version__,
    }


def params_sha256(params) -> str:
    """sha256 over the weights (sorted parameter paths, dtypes, shapes and bytes): the checkpoint's identity."""
    digest = hashlib.sha256()
    for path, value in sorted(flatten(params).items()):
        a = np.ascontiguousarray(jax.device_get(value))
        digest.update(f"{path}:{a.dtype.str}:{a.shape};".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def config_dict(config) -> dict:
    """A frozen config dataclass as a JSON-ready dict (tuples → lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def shard_file(shard: int, process: int) -> str:
    return f"shards/shard-{shard:05d}-p{process}.npz"


def index_file(process: int) -> str:
    return f"shards/index-p{process}.json"


def _dump(obj) -> bytes:
    return (json.dumps(obj, indent=1) + "\n").encode()


def _load_json(path: pathlib.Path, versions: tuple[int, ...] = (VERSION,)) -> dict | None:
    """The JSON object at `path`, None if there is no file; an unreadable file, or one of a format version
    not in `versions`, is an error naming it."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); it is not a libra-jax run file, or it was damaged") from e
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise RunMismatchError(f"{path} is not a {FORMAT} file; choose another output folder")
    if obj.get("version") not in versions:
        raise RunMismatchError(
            f"{path} is {FORMAT} format version {obj.get('version')}; here this libra-jax takes version"
            f" {' or '.join(map(str, versions))} (version 2 added per-row sources): run into a new output folder"
            " (or delete this one to start over), or read it with the libra-jax that wrote it"
        )
    return obj


def _differences(saved, run, prefix: str = "") -> list[str]:
    """'field: X there, Y now' for every differing field, descending into dicts that have the same keys."""
    if isinstance(saved, dict) and isinstance(run, dict):
        if saved.keys() != run.keys() and prefix:
            return [f"{prefix[:-1]}: {sorted(saved)} there, {sorted(run)} now"]
        keys = dict.fromkeys([*saved, *run])
        return [
            d
            for k in keys
            if saved.get(k) != run.get(k)
            for d in _differences(saved.get(k), run.get(k), f"{prefix}{k}.")
        ]
    return [f"{prefix[:-1]}: {json.dumps(saved)} there, {json.dumps(run)} now"]


def check_same_run(saved: Mapping, run: Mapping, where: os.PathLike) -> None:
    """RunMismatchError naming every field in which the saved run differs from `run`."""
    if saved != run:
        raise RunMismatchError(
            f"output folder {where} holds a different run ({'; '.join(_differences(dict(saved), dict(run)))});"
            " use another output folder, or delete this one to start over"
        )


def read_index(out_dir: os.PathLike, run: Mapping, process: int) -> dict[int, dict]:
    """Process `process`'s completed-shard entries {shard: entry}, after checking that the folder holds `run`."""
    out = pathlib.Path(out_dir)
    manifest, index = _load_json(out / MANIFEST), _load_json(out / index_file(process))
    for saved in (manifest, index):
        if saved is not None:
            check_same_run(saved.get("run", {}), run, out)
    return {} if index is None else {int(k): v for k, v in index["shards"].items()}


def write_index(out_dir: os.PathLike, run: Mapping, process: int, entries: Mapping[int, dict]) -> None:
    """Atomically rewrite process `process`'s index with `entries`."""
    index = {
        "format": FORMAT,
        "version": VERSION,
        "run": run,
        "process": process,
        "shards": {str(k): entries[k] for k in sorted(entries)},
    }
    store.write_file(pathlib.Path(out_dir) / index_file(process), _dump(index))


def verified(out_dir: os.PathLike, entries: Mapping[int, dict], warn: Callable[[str], None]) -> dict[int, dict]:
    """The entries whose file is intact; each other one is reported through `warn` and dropped."""
    good = {}
    for shard, entry in entries.items():
        issue = store.problem(pathlib.Path(out_dir) / entry["file"], entry["bytes"], entry["sha256"])
        if issue is None:
            good[shard] = entry
        else:
            warn(f"shard file {entry['file']} is {issue}: recomputing it")
    return good


def merge(out_dir: os.PathLike, run: Mapping, num_shards: int, arrays: Mapping[str, dict]) -> dict:
    """The manifest of a finished run, from every process's index (which must all be complete).

    `arrays` describes the per-row arrays of the shards: {key: {"dtype", "shape" (per row)}}.
    """
    out = pathlib.Path(out_dir)
    entries = []
    for process in range(run["num_processes"]):
        index = _load_json(out / index_file(process))
        if index is None:
            raise FileNotFoundError(
                f"{out / index_file(process)} is missing: every process must write to the same (shared) folder"
            )
        check_same_run(index["run"], run, out)
        missing = sorted(set(range(num_shards)) - {int(k) for k in index["shards"]})
        if missing:
            raise ValueError(f"process {process} has not completed shards {missing[:10]} of {out}")
        entries += [index["shards"][str(s)] for s in range(num_shards)]
    entries.sort(key=lambda e: (e["shard"], e["process"]))
    skipped = sorted((s for e in entries for s in e["skipped"]), key=lambda s: s["index"])
    return {
        "format": FORMAT,
        "version": VERSION,
        "run": run,
        "arrays": arrays,
        "num_attributed": sum(e["rows"] for e in entries),
        "num_skipped": len(skipped),
        "skipped": skipped,
        "shards": entries,
    }


def write_manifest(out_dir: os.PathLike, manifest: Mapping) -> None:
    store.write_file(pathlib.Path(out_dir) / MANIFEST, _dump(manifest))


def read_manifest(out_dir: os.PathLike) -> dict:
    """The manifest of a finished run, of any `READABLE` version (FileNotFoundError when it has not finished)."""
    manifest = _load_json(pathlib.Path(out_dir) / MANIFEST, READABLE)
    if manifest is None:
        raise FileNotFoundError(f"{pathlib.Path(out_dir) / MANIFEST} not found: the run has not finished")
    return manifest


def load_results(out_dir: os.PathLike) -> dict:
    """Every row of a finished run, in dataset order, after checking each shard's sha256.

    Returns:
      {'index': int64 (N,), 'source': str (N,), 'label': int64 (N,) (-1: none), 'pred': int32 (N,),
       'target': int32 (N,), 'score': float (N,), 'maps': {name: (N, gh, gw)}} with N = manifest['num_attributed'];
      'source' names the file each row's maps belong to, relative to the data root (folder / list / ImageNet
      sources), or the dataset's own id ('benchmark:test#3'); results of format version 1 have no 'source'.
    Raises ValueError naming a missing, truncated or corrupt shard (rerun the run's command to recompute it).
    """
    out = pathlib.Path(out_dir)
    manifest = read_manifest(out)
    parts = []
    for entry in manifest["shards"]:
        issue = store.problem(out / entry["file"], entry["bytes"], entry["sha256"])
        if issue is not None:
            raise ValueError(f"shard file {out / entry['file']} is {issue}; rerun the same command to recompute it")
        parts.append(store.read_npz(out / entry["file"]))
    flat = {key: np.concatenate([p[key] for p in parts]) for key in manifest["arrays"]}
    order = np.argsort(flat["index"], kind="stable")
    flat = {key: value[order] for key, value in flat.items()}
    maps = {key.removeprefix("maps/"): flat.pop(key) for key in list(flat) if key.startswith("maps/")}
    return {**flat, "maps": maps}
