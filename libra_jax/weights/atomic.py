"""The one file writer of libra-jax: write through a temporary file in the same folder, then rename.

Checkpoints, run shards and manifests, result tables and PNGs all go through `write_atomic`, so a
reader (or a resumed run) never sees a half-written file under its final name. A write that fails
(no permission, a read-only or full disk, a parent path that is a file) raises an `OSError` with the
same errno whose message names the path, the cause and what to do (`write_error`).
"""

from __future__ import annotations

import errno
import os
import pathlib
import secrets
import stat


class WriteError(OSError):
    """A file or folder that cannot be written; `str()` is the one-line message (errno kept in `.errno`)."""

    def __str__(self) -> str:
        return self.strerror


_FIX = "choose another output path"
_CAUSES = {
    errno.ENOSPC: ("no space left on device", "free some space or " + _FIX),
    errno.EDQUOT: ("disk quota exceeded", "free some space or " + _FIX),
    errno.EFBIG: ("file too large for the file system (or this process's file-size limit)", _FIX),
    errno.EACCES: ("permission denied", "choose a folder you can write to"),
    errno.EPERM: ("operation not permitted", "choose a folder you can write to"),
    errno.EROFS: ("the file system is read-only", "choose a folder on a writable disk"),
    errno.EISDIR: ("it is a folder", "give a file name"),
}


def _file_in_the_way(path: pathlib.Path) -> pathlib.Path | None:
    """The first existing one of `path` and its ancestors, from the root down, that is not a folder."""
    for part in reversed([path, *path.parents]):
        if part.exists() and not part.is_dir():
            return part
    return None


def _cause(folder: pathlib.Path, error: OSError) -> str:
    """'<cause>; <fix>' of an OSError met while writing into `folder`."""
    blocker = _file_in_the_way(folder) if error.errno in (errno.EEXIST, errno.ENOTDIR) else None
    if blocker is not None:
        return f"{blocker} is a file, not a folder; {_FIX}"
    cause, fix = _CAUSES.get(error.errno, (error.strerror or str(error), _FIX))
    return f"{cause}; {fix}"


def write_error(path: str | os.PathLike, error: OSError) -> WriteError:
    """An OSError with `error`'s errno whose message names `path`, the cause and the fix (one line)."""
    path = pathlib.Path(os.path.abspath(path))
    return WriteError(error.errno, f"cannot write {path}: {_cause(path.parent, error)}")


def make_folder(folder: str | os.PathLike) -> None:
    """Create `folder` and its parents if missing; an OSError naming the folder, the cause and the fix if not."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        folder = pathlib.Path(os.path.abspath(folder))
        raise WriteError(e.errno, f"cannot create the folder {folder}: {_cause(folder, e)}") from e


def check_destination(path: str | os.PathLike) -> None:
    """Refuse a path `write_atomic` cannot or must not write, before any work is done: a folder, or an existing
    file that is not a regular file (a device, pipe or socket would be replaced by the rename)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise write_error(path, e) from e
    if stat.S_ISDIR(mode):
        raise write_error(path, OSError(errno.EISDIR, os.strerror(errno.EISDIR)))
    if not stat.S_ISREG(mode):
        raise WriteError(
            errno.EEXIST,
            f"cannot write {os.path.abspath(path)}: it is not a regular file (a device, pipe or socket, which"
            f" writing through a temporary file and a rename would replace); {_FIX}",
        )


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and `os.replace`.

    Readers never see a half-written file, and a failed write leaves no temporary file behind.
    Missing parent folders are created. Raises OSError (`write_error`) when the file cannot be written.
    """
    path = os.fspath(path)
    check_destination(path)
    folder = os.path.dirname(os.path.abspath(path))
    make_folder(folder)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
    try:
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
    except OSError as e:
        raise write_error(path, e) from e
