"""Result files of a dataset run: deterministic `.npz` shards, written atomically and checked by sha256.

`np.savez` stamps the current time into its zip entries, so two runs with equal arrays would write
different bytes; `encode_npz` fixes every zip field, making the bytes (and the sha256 recorded in the
manifest) a function of the arrays alone. Files are written through a temporary file + rename
(`libra_jax.weights.atomic`), so a killed run or a full disk never leaves a partial file under a
final name.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import pathlib
import zipfile
from collections.abc import Mapping

import numpy as np

from libra_jax.weights.atomic import WriteError, write_atomic

_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest zip timestamp: fixed, so the bytes depend on the arrays only


def encode_npz(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Arrays → the bytes of an uncompressed `.npz` that `np.load` reads; equal arrays give equal bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_file(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` atomically; a full disk raises OSError(ENOSPC) naming the file and what to do."""
    try:
        write_atomic(path, data)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        raise WriteError(
            errno.ENOSPC,
            f"no space left on device while writing {path} ({len(data)} bytes); nothing partial was kept:"
            " free some space (or pick another output folder) and rerun the same command to resume",
        ) from e


def problem(path: str | os.PathLike, size: int, digest: str) -> str | None:
    """Why the file at `path` is not the one recorded (missing / truncated / corrupt), or None if it is."""
    try:
        data = pathlib.Path(path).read_bytes()
    except FileNotFoundError:
        return "missing"
    if len(data) != size:
        return f"truncated or overwritten ({len(data)} bytes, expected {size})"
    if sha256(data) != digest:
        return "corrupt (sha256 mismatch)"
    return None


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All arrays of a `.npz` file, loaded into memory."""
    with np.load(path, allow_pickle=False) as f:
        return {name: f[name] for name in f.files}
