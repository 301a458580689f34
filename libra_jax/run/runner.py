"""`run_dataset`: attribute a whole dataset with a set of methods, in resumable shards, over every device.

Per global batch of `batch_size` examples, one jitted call computes the prediction and every map
(one forward + backward per rule preset, the prediction read from the first: `libra_jax.run.step`);
the batch is padded to a multiple of the device count with masked rows, so there is exactly one
compilation whatever the dataset size. The host never waits for the batch it has just dispatched: it
decodes the next batches on a background thread and blocks only on the previous batch's results,
which it has to write anyway.

Shard S holds examples [S·shard_size, (S+1)·shard_size); each process writes its own rows of it. A
restarted run skips the shards whose files match their recorded sha256 and recomputes the others,
with the same batches as before, so its files are byte-identical to an uninterrupted run's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import sys
import warnings
from collections.abc import Iterator, Mapping

import jax
import numpy as np

from libra_jax.data.imagenet import BadFileError, EvalDataset
from libra_jax.methods.names import MethodTable
from libra_jax.preprocess import normalise
from libra_jax.run import distributed, lock, manifest, store
from libra_jax.run.prefetch import prefetch
from libra_jax.run.progress import Progress
from libra_jax.run.sharding import data_mesh, fetch_local, local_rows, padded_size, replicate, shard_batch
from libra_jax.run.sharding import sharded_attribution as shard_fn
from libra_jax.run.step import check_target, make_step


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Settings of a run.

    Attributes:
      batch_size: examples per global batch (all devices together).
      shard_size: examples per shard, a multiple of batch_size; the unit of resumption.
      target: the class explained: 'top1' (the prediction), 'label' (the dataset's) or a class index.
      limit: attribute only the first `limit` examples (None: all).
      prefetch: batches decoded ahead on a background thread (0: decode in the loop).
      progress: print a progress bar with images/s and ETA on stderr (process 0).
    """

    batch_size: int = 64
    shard_size: int = 1024
    target: str | int = "top1"
    limit: int | None = None
    prefetch: int = 2
    progress: bool = True

    def __post_init__(self):
        if self.batch_size < 1 or self.shard_size < 1:
            raise ValueError(f"batch size and shard size must be positive; got {self.batch_size}, {self.shard_size}")
        if self.shard_size % self.batch_size:
            raise ValueError(f"shard size {self.shard_size} must be a multiple of the batch size {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be positive; got {self.limit}")


@dataclasses.dataclass(frozen=True)
class Plan:
    """Where every example goes: n examples in shards of batches; this process's rows of each batch."""

    n: int
    batch_size: int
    shard_size: int
    padded: int  # rows of the compiled batch: batch_size rounded up to the device count
    rows: slice  # this process's rows of each padded batch

    @property
    def num_shards(self) -> int:
        return -(-self.n // self.shard_size)

    def span(self, shard: int) -> range:
        """The examples of `shard`."""
        return range(shard * self.shard_size, min((shard + 1) * self.shard_size, self.n))

    def batch_starts(self, shard: int) -> range:
        return range(self.span(shard).start, self.span(shard).stop, self.batch_size)


@dataclasses.dataclass(frozen=True)
class HostBatch:
    """This process's rows of one global batch, decoded and normalised (R = plan.rows length).

    x float32 (R, H, W, C); y int32 (R,) labels for the device (0 where unknown; read only for
    target='label'); label int64 (R,) (-1: none); index int64 (R,) dataset indices; source str (R,) where
    each example comes from (`EvalDataset.source_of`; '' past the end); valid bool (R,) rows that hold an
    example; skipped: the undecodable examples; count: examples in the global batch.
    """

    shard: int
    last: bool
    x: np.ndarray
    y: np.ndarray
    label: np.ndarray
    index: np.ndarray
    source: np.ndarray
    valid: np.ndarray
    skipped: list[dict]
    count: int


def array_spec(model, methods: MethodTable) -> dict[str, dict]:
    """Per-row dtype and shape of every array in a shard: {key: {'dtype', 'shape'}}."""
    scalars = {
        "index": "int64",
        "source": "str",  # numpy's unicode type, as wide as the longest source of each shard
        "label": "int64",
        "pred": "int32",
        "target": "int32",
        "score": "float32",
    }
    spec = {key: {"dtype": dtype, "shape": []} for key, dtype in scalars.items()}
    grid = list(model.config.grid_size)
    return spec | {f"maps/{name}": {"dtype": "float32", "shape": grid} for name in methods}


def load_batch(
    dataset: EvalDataset, plan: Plan, shard: int, start: int, target: str | int, num_classes: int
) -> HostBatch:
    """Decode this process's rows of the global batch at `start` into a HostBatch (undecodable images skipped)."""
    count = min(plan.batch_size, plan.n - start)
    rows = range(plan.rows.start, plan.rows.stop)
    h, w = dataset.data_config.input_size
    images = np.zeros((len(rows), h, w, 3), np.uint8)
    y, label = np.zeros(len(rows), np.int32), np.full(len(rows), -1, np.int64)
    valid, skipped = np.zeros(len(rows), bool), []
    source = [dataset.source_of(start + row) if row < count else "" for row in rows]
    for j, row in enumerate(rows):
        if row >= count:
            break
        try:
            item = dataset[start + row]
        except BadFileError as e:
            skipped.append({"index": start + row, "path": dataset.path_of(start + row), "reason": str(e)})
            continue
        images[j], valid[j] = item["image"], True
        if item["label"] is not None:
            label[j] = item["label"]
        if target == "label":
            if item["label"] is None:
                raise ValueError(f"{item['path']} has no label; target 'label' needs a labelled dataset")
            if not 0 <= label[j] < num_classes:
                raise ValueError(f"{item['path']}: label {label[j]} is no class of the model (0..{num_classes - 1})")
            y[j] = label[j]
    return HostBatch(
        shard=shard,
        last=start + plan.batch_size >= plan.span(shard).stop,
        x=normalise(images, dataset.data_config),
        y=y,
        label=label,
        index=np.arange(start + rows.start, start + rows.stop, dtype=np.int64),
        source=np.asarray(source, str),
        valid=valid,
        skipped=skipped,
        count=count,
    )


class _ShardWriter:
    """Collects the valid rows of consecutive batches and writes each shard when its last batch arrives."""

    def __init__(self, out: pathlib.Path, run: dict, plan: Plan, spec: dict, entries: dict[int, dict]):
        """spec: `array_spec`; entries: this process's complete shards (updated as shards are written)."""
        self.out, self.run, self.plan, self.spec, self.entries = out, run, plan, spec, entries
        self.parts: list[dict[str, np.ndarray]] = []
        self.skipped: list[dict] = []

    def add(self, batch: HostBatch, result: Mapping) -> None:
        rows = {"index": batch.index, "source": batch.source, "label": batch.label}
        rows |= {"pred": result["pred"], "target": result["target"]}
        rows |= {"score": result["score"]} | {f"maps/{k}": v for k, v in result["maps"].items()}
        # the dtypes of `array_spec` (a bf16 model's maps are stored as float32)
        self.parts.append({k: np.asarray(v, self.spec[k]["dtype"])[batch.valid] for k, v in rows.items()})
        self.skipped += batch.skipped
        if batch.last:
            self._write(batch.shard)

    def _write(self, shard: int) -> None:
        arrays = {key: np.concatenate([p[key] for p in self.parts]) for key in self.spec}
        data, process = store.encode_npz(arrays), jax.process_index()
        entry = {
            "shard": shard,
            "process": process,
            "file": manifest.shard_file(shard, process),
            "start": self.plan.span(shard).start,
            "stop": self.plan.span(shard).stop,
            "rows": len(arrays["index"]),
            "bytes": len(data),
            "sha256": store.sha256(data),
            "skipped": self.skipped,
        }
        store.write_file(self.out / entry["file"], data)
        self.entries[shard] = entry
        manifest.write_index(self.out, self.run, process, self.entries)
        self.parts, self.skipped = [], []


def run_identity(model, params, methods: MethodTable, options: RunOptions, plan: Plan, provenance, mesh) -> dict:
    """What makes two runs the same run: compared field by field when an output folder is reused."""
    return {
        "model": provenance.get("model"),
        "checkpoint": provenance.get("checkpoint"),
        "params_sha256": manifest.params_sha256(params),
        "model_config": manifest.config_dict(model.config),
        "data_config": manifest.config_dict(model.data_config),
        "methods": {name: {"method": method, "preset": preset} for name, (method, preset) in methods.items()},
        "presets": sorted({preset for _, preset in methods.values()}),
        "target": options.target,
        "data": provenance.get("data"),
        "num_images": plan.n,
        "batch_size": plan.batch_size,
        "shard_size": plan.shard_size,
        "num_shards": plan.num_shards,
        "num_processes": jax.process_count(),
        "num_devices": mesh.size,
        "versions": manifest.versions(),
    }


def _remove_stale_temp_files(out: pathlib.Path, process: int) -> None:
    """Temporary files a killed process of an earlier attempt left behind (never results: see store)."""
    stale = [*out.glob(f"shards/.*-p{process}.*.tmp")]
    if process == 0:
        stale += out.glob(f".{manifest.MANIFEST}.*.tmp")
    for path in stale:
        path.unlink(missing_ok=True)


def run_dataset(
    model,
    params,
    dataset: EvalDataset,
    methods: MethodTable,
    out_dir,
    options: RunOptions = RunOptions(),
    *,
    provenance: Mapping[str, str | None] | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> dict:
    """Attribute every example of `dataset` and write shards + manifest to `out_dir` (resuming a killed run).

    Args:
      model, params: a libra-jax model and its weights.
      dataset: an `EvalDataset` (see `libra_jax.data.sources.open_source`); undecodable examples are
        skipped and listed in the manifest.
      methods: {output name: (method, preset)} (`libra_jax.methods.names.resolve_methods`).
      out_dir: output folder; if it holds another run's files, RunMismatchError (a ValueError).
      options: batch / shard sizes, target, limit, prefetching, progress bar.
      provenance: {'model', 'checkpoint', 'data'}: names recorded in the manifest (part of the run identity).
      mesh: devices to shard each batch over (default: `data_mesh()`, every device of every process).
    Returns:
      The manifest (see docs/run.md); results via `libra_jax.run.load_results(out_dir)`.
    Raises:
      OSError(ENOSPC) on a full disk (rerun to resume); ValueError for labels the model cannot explain;
      `lock.FolderLockedError` (an OSError) while another run writes `out_dir`.
    """
    # one writer per folder: process 0 holds the lock for all processes of a multi-host run
    with lock.folder_lock(out_dir) if jax.process_index() == 0 else contextlib.nullcontext():
        return _run_dataset(model, params, dataset, methods, out_dir, options, provenance, mesh)


def _run_dataset(model, params, dataset, methods, out_dir, options, provenance, mesh) -> dict:
    """`run_dataset` with the folder locked."""
    if tuple(dataset.data_config.input_size) != tuple(model.config.img_size):
        raise ValueError(
            f"the dataset makes {dataset.data_config.input_size} images but the model takes {model.config.img_size}"
        )
    mesh = data_mesh() if mesh is None else mesh
    check_target(options.target, model.config.num_classes)
    n = len(dataset) if options.limit is None else min(options.limit, len(dataset))
    padded = padded_size(options.batch_size, mesh)
    plan = Plan(n, options.batch_size, options.shard_size, padded, local_rows(mesh, padded))
    run = run_identity(model, params, methods, options, plan, provenance or {}, mesh)
    out, process = pathlib.Path(out_dir), jax.process_index()
    entries = manifest.verified(out, manifest.read_index(out, run, process), lambda m: warnings.warn(m, stacklevel=3))
    (out / "shards").mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_files(out, process)
    done = distributed.all_processes(np.array([s in entries for s in range(plan.num_shards)]))
    todo = [s for s in range(plan.num_shards) if not done[s]]
    show = options.progress and process == 0
    if show and len(todo) < plan.num_shards:
        print(f"resuming: {plan.num_shards - len(todo)} of {plan.num_shards} shards already complete", file=sys.stderr)
    spec = array_spec(model, methods)
    if todo:
        writer = _ShardWriter(out, run, plan, spec, entries)
        step = shard_fn(make_step(model, methods, options.target), mesh)
        batches = (
            load_batch(dataset, plan, s, start, options.target, model.config.num_classes)
            for s in todo
            for start in plan.batch_starts(s)
        )
        bar = Progress(sum(len(plan.span(s)) for s in todo), "run") if show else None
        with contextlib.closing(prefetch(batches, options.prefetch)) as ahead:  # on errors too: stop the thread
            _pipeline(step, replicate(params, mesh), ahead, mesh, plan, writer, bar)
    distributed.barrier("libra-jax run: shards written")
    if process == 0:
        manifest.write_manifest(out, manifest.merge(out, run, plan.num_shards, spec))
    distributed.barrier("libra-jax run: manifest written")
    return manifest.read_manifest(out)


def _pipeline(step, params, batches: Iterator[HostBatch], mesh, plan: Plan, writer: _ShardWriter, bar) -> None:
    """Dispatch batch t, then wait for and write batch t−1: the device always has the next batch queued."""
    pending = None
    for batch in batches:
        result = step(params, shard_batch(batch.x, mesh, plan.padded), shard_batch(batch.y, mesh, plan.padded))
        jax.tree.map(lambda a: a.copy_to_host_async(), result)
        if pending is not None:
            _finish(*pending, writer, bar)
        pending = (batch, result)
    if pending is not None:
        _finish(*pending, writer, bar)


def _finish(batch: HostBatch, result, writer: _ShardWriter, bar) -> None:
    writer.add(batch, fetch_local(result))
    if bar is not None:
        bar.update(batch.count)
