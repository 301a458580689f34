"""The one file writer of libra-jax: write through a temporary file in the same folder, then rename.

Checkpoints, run shards and manifests, result tables and PNGs all go through `write_atomic`, so a
reader (or a resumed run) never sees a half-written file under its final name.
"""

from __future__ import annotations

import os
import secrets


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and `os.replace`.

    Readers never see a half-written file, and a failed write leaves no temporary file behind.
    Missing parent folders are created.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 applies the umask, so the final file gets ordinary permissions
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
