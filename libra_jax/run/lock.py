"""One writer per output folder: a lock file naming the run that holds it.

`folder_lock(out)` creates `out/.libra-jax.lock` atomically (O_CREAT | O_EXCL) holding the pid, host,
process start time and command of the holder, and removes it on exit (also on exceptions). A second
run into the same folder is refused with `FolderLockedError` naming the first. A lock left by a run that
was killed (SIGKILL, SIGTERM, power loss) is taken over when it was made on this host and its process is
gone; a lock from another host cannot be checked and is never taken over: the error says how to remove it.
A run that already holds the lock (a command that calls a library function writing the same folder)
re-enters it.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pathlib
import secrets
import socket
import sys
import time
from collections.abc import Iterator

from libra_jax.weights.atomic import make_folder, write_error

LOCK_FILE = ".libra-jax.lock"
_STARTING_GRACE_S = 10.0  # an empty lock younger than this belongs to a run that is writing it right now


class FolderLockedError(OSError):
    """The output folder is being written by another run."""


def _process_start(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks since boot (Linux), None where unknown.

    Told apart from a pid reused by a later process: a killed run's pid may belong to another process now.
    """
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22; the command name before ')' may hold spaces


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        pass
    return start is None or _process_start(pid) in (None, start)


def _me() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid())}


def _read(path: pathlib.Path) -> dict | None:
    """The lock's record; {} for an empty or unreadable one; None when there is no lock."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _describe(record: dict) -> str:
    return (
        f"pid {record.get('pid')} on host {record.get('host')}, started {record.get('time')}:"
        f" {record.get('command') or 'unknown command'}"
    )


def _is_stale(path: pathlib.Path, record: dict) -> bool:
    """True when the holder is known to be gone: same host, process dead; or an empty lock nobody finished."""
    if not record:
        try:
            return time.time() - path.stat().st_mtime > _STARTING_GRACE_S
        except FileNotFoundError:
            return False
    if record.get("host") != socket.gethostname() or not isinstance(record.get("pid"), int):
        return False
    return not _alive(record["pid"], record.get("start"))


def _remove_if_unchanged(path: pathlib.Path, record: dict) -> None:
    """Remove a stale lock, unless another run replaced it meanwhile (only one breaker at a time)."""
    guard = path.with_name(path.name + ".break")
    try:
        fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return  # another run is breaking it; the caller looks again
    try:
        if _read(path) == record:
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)
        guard.unlink(missing_ok=True)


def _create(path: pathlib.Path, record: dict) -> bool:
    """Create the lock holding `record`; False when it exists. A folder that cannot be written (read-only, full,
    no permission) is an OSError naming it (`write_error`), and leaves no lock behind."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    except OSError as e:
        raise write_error(path, e) from e
    try:
        os.write(fd, json.dumps(record).encode())
    except OSError as e:
        path.unlink(missing_ok=True)
        raise write_error(path, e) from e
    finally:
        os.close(fd)
    return True


def _refusal(folder: pathlib.Path, path: pathlib.Path, record: dict) -> FolderLockedError:
    if not record:
        return FolderLockedError(f"output folder {folder} is being locked by another run right now; choose another")
    if record.get("host") == socket.gethostname():
        advice = "wait for it to finish or choose another output folder"
    else:
        advice = f"this host cannot tell whether it still runs; if it does not, delete {path} and rerun"
    return FolderLockedError(f"output folder {folder} is in use by another run ({_describe(record)}); {advice}")


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, command: str | None = None, attempts: int = 50) -> Iterator[pathlib.Path]:
    """Hold the lock of `folder` (created if missing) for the body of the `with` block.

    Args:
      folder: the output folder.
      command: what to tell a refused run about this one (default: this process's command line).
      attempts: tries (0.1 s apart) while another process is taking over the same stale lock.
    Yields:
      The lock file's path.
    Raises:
      FolderLockedError (an OSError) when another live run holds the folder; OSError naming the folder when it
      cannot be created or written (`libra_jax.weights.atomic.write_error`).
    """
    folder = pathlib.Path(folder)
    make_folder(folder)
    path = folder / LOCK_FILE
    me = _me()
    record = {
        **me,
        "command": command if command is not None else " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]),
        "time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "token": secrets.token_hex(8),
    }
    for _ in range(attempts):
        if _create(path, record):
            break
        held = _read(path)
        if held is None:
            continue  # released between our two looks
        if all(held.get(k) == v for k, v in me.items()):
            yield path  # this process holds it already: the outer holder releases it
            return
        if not _is_stale(path, held):
            raise _refusal(folder, path, held)
        _remove_if_unchanged(path, held)
        time.sleep(0.1 * (_read(path) == held))  # wait only while another run is removing the same stale lock
    else:
        raise FolderLockedError(f"could not take over the stale lock {path}; delete it and rerun")
    try:
        yield path
    finally:
        if _read(path) == record:  # never remove a lock that is not ours
            path.unlink(missing_ok=True)
