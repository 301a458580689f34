"""Several processes (hosts) in one run: start-up and the two collective steps the runner needs.

Each process runs the same command with its own process id; `initialize` joins them through
`jax.distributed` (CPU processes talk over gloo, jax's default CPU collectives). Afterwards
`jax.devices()` lists every process's devices and one jitted call spans them all.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils


def initialize(coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
    """Join a multi-process run (`jax.distributed.initialize`); a no-op when all three are None.

    Must run before anything touches a jax device. coordinator: 'host:port' of process 0.
    """
    given = (coordinator, num_processes, process_id)
    if given == (None, None, None):
        return
    if None in given:
        raise ValueError(
            "a multi-process run needs the coordinator address, the number of processes and the process id"
        )
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process id {process_id} is out of range for {num_processes} processes")
    jax.distributed.initialize(coordinator, num_processes, process_id)


def all_processes(flags: np.ndarray) -> np.ndarray:
    """Element-wise AND of a boolean vector over all processes (every process passes the same length)."""
    if jax.process_count() == 1:
        return flags
    return np.asarray(multihost_utils.process_allgather(flags.astype(np.int32))).min(0).astype(bool)


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier `name`."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
