"""Data-parallel sharding of attribution batches over every device (local, or all hosts' after
`jax.distributed.initialize`): a 1-D mesh with axis 'data', params replicated, batches split on axis 0.

    mesh = data_mesh()
    fn = sharded_attribution(attribution(model, ["ixg", "gradcam"]), mesh)
    padded = padded_size(batch_size, mesh)              # rows the compiled function sees
    rows = local_rows(mesh, padded)                     # this process's rows of each global batch
    maps = fn(replicate(params, mesh), shard_batch(x_local, mesh, padded), shard_batch(y_local, mesh, padded))
    maps_local = fetch_local(maps)                      # numpy, rows `rows` of the global batch

Attribution is per example, so the compiled program needs no collectives; a batch that does not
divide by the device count is padded (and the padding rows dropped by the caller), never recompiled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA = "data"
"""Name of the mesh axis the batch is split over."""


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh ('data',) over `devices` (default: every device of every process).

    Devices are ordered by (process, id) so each process owns one contiguous block of rows. The axis
    is `Auto`: the attribution code is written without sharding annotations and GSPMD partitions it.
    """
    devices = sorted(jax.devices() if devices is None else devices, key=lambda d: (d.process_index, d.id))
    return jax.make_mesh((len(devices),), (DATA,), axis_types=(AxisType.Auto,), devices=devices)


def padded_size(batch_size: int, mesh: Mesh) -> int:
    """Smallest multiple of the mesh's device count that holds `batch_size` rows."""
    n = mesh.size
    return -(-batch_size // n) * n


def local_rows(mesh: Mesh, padded: int) -> slice:
    """The rows of a (padded,)-row global batch held by this process's devices (one contiguous block)."""
    index_map = NamedSharding(mesh, P(DATA)).addressable_devices_indices_map((padded,))
    blocks = sorted({(s[0].start or 0, padded if s[0].stop is None else s[0].stop) for s in index_map.values()})
    for (_, stop), (start, _) in zip(blocks, blocks[1:], strict=False):
        if stop != start:
            raise ValueError(f"this process's devices hold rows {blocks} of the batch, not one block; use data_mesh()")
    return slice(blocks[0][0], blocks[-1][1])


def replicate(tree, mesh: Mesh):
    """A pytree of host / single-device arrays (equal on every process) → global arrays replicated on `mesh`."""
    sharding = NamedSharding(mesh, P())
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), tree)


def shard_batch(local: np.ndarray, mesh: Mesh, padded: int) -> jax.Array:
    """This process's rows (`local_rows(mesh, padded)`, shape (rows, ...)) → a global (padded, ...) array."""
    sharding = NamedSharding(mesh, P(DATA))
    return jax.make_array_from_process_local_data(sharding, local, (padded, *local.shape[1:]))


def fetch_local(tree):
    """A pytree of global arrays → the rows this process holds, as numpy (blocks until they are computed)."""

    def rows(a: jax.Array) -> np.ndarray:
        shards = sorted(a.addressable_shards, key=lambda s: s.index[0].start or 0)
        return np.concatenate([np.asarray(s.data) for s in shards])

    return jax.tree.map(rows, tree)


def sharded_attribution(fn: Callable, mesh: Mesh) -> Callable:
    """`fn(params, x, y)` jitted for `mesh`: params replicated, x (B, ...) and y (B, ...) and every output split on B.

    B must divide by `mesh.size` (pad with `padded_size`). Inputs are global arrays (`replicate`,
    `shard_batch`); in a single process, numpy arrays also work and are placed by the jit.
    """
    batch, replicated = NamedSharding(mesh, P(DATA)), NamedSharding(mesh, P())
    return jax.jit(fn, in_shardings=(replicated, batch, batch), out_shardings=batch)
